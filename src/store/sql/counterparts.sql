-- Found by identifier alone: the subquery (OFFSET 0 keeps the planner from pulling
-- the window's condition into it) leaves the primary key as the only index to use.
-- With `seen_at` in the same WHERE, a planner short of statistics scanned
-- counterpart_seen_at_idx, every pair of the window, for each batch.
SELECT identifier, other,
    seen_at > now() - make_interval(secs => $3) AS "fresh!"
    FROM (SELECT identifier, other, seen_at FROM counterpart
          WHERE identifier = ANY($1) OFFSET 0) c
    WHERE seen_at > now() - make_interval(secs => $2)
