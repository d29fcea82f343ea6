-- Upper bound of the outbox backlog from two index probes: max(id) - min(id) + 1,
-- where count(*) would scan every row and dead tuple.
SELECT coalesce(max(id) - min(id) + 1, 0) AS "backlog!" FROM outbox
