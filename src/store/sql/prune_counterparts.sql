-- Deletes at most $2 counterpart pairs last seen more than $1 seconds ago (the
-- quarantine window: they no longer count), oldest first; returns how many it deleted.
WITH old AS (
  SELECT identifier, other FROM counterpart
  WHERE seen_at < now() - $1::float8 * interval '1 second'
  ORDER BY seen_at LIMIT $2
), gone AS (
  DELETE FROM counterpart c USING old
  WHERE c.identifier = old.identifier AND c.other = old.other RETURNING 1
)
SELECT count(*) FROM gone
