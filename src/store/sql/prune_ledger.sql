-- Deletes at most $2 ledger rows processed more than $1 seconds ago, oldest first;
-- returns how many it deleted.
WITH old AS (
  SELECT kind, key FROM processed_event
  WHERE processed_at < now() - $1::float8 * interval '1 second'
  ORDER BY processed_at LIMIT $2
), gone AS (
  DELETE FROM processed_event p USING old WHERE p.kind = old.kind AND p.key = old.key RETURNING 1
)
SELECT count(*) FROM gone
