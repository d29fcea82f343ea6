-- One round of the relay in one round trip: deletes the rows of the rounds the broker
-- has taken ($1) and reads the next at most $2 rows from the head of the outbox, in
-- id order. The whole statement sees one snapshot, taken before its DELETE, so the
-- SELECT still sees the rows being deleted and leaves them out itself.
WITH gone AS (DELETE FROM outbox WHERE id = ANY($1))
SELECT id, key, payload, created_at FROM outbox WHERE id <> ALL($1) ORDER BY id LIMIT $2
