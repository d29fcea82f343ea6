SELECT pg_advisory_xact_lock(k) FROM unnest($1::bigint[]) AS k
