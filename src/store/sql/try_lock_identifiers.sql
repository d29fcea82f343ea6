SELECT coalesce(bool_and(pg_try_advisory_xact_lock(k)), true) AS "granted!" FROM unnest($1::bigint[]) AS k
