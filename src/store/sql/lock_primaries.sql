SELECT p AS "p!", pg_advisory_xact_lock((p >> 31)::int, (p & 2147483647)::int) FROM unnest($1::bigint[]) AS p
