-- Table upkeep of the hot path by PostgreSQL's autovacuum, with per-table settings,
-- instead of the service's own ANALYZE/VACUUM task (removed in this release; it was
-- written for a server that ran with autovacuum off). The defaults (act once 20% of a
-- table is dead, analyze once 10% changed, plus 50 rows) suit tables that grow
-- slowly; these grow by a batch's worth every few milliseconds.

-- Every event bumps its identity's version: an UPDATE that leaves a dead row. Vacuum
-- and analyze after 1% of the table (plus 1,000 rows) so that lookups do not wade
-- through dead rows and the planner knows the table's size; inserts count towards
-- vacuum too (visibility map, index-only scans). Pages are filled to 85% so that a
-- version bump (no indexed column changes) finds room on its own page: a heap-only
-- update, which writes no index entry and is pruned without a vacuum.
ALTER TABLE contact SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.01,
    autovacuum_analyze_threshold = 1000,
    fillfactor = 85
);

-- The ledger: insert-only, then pruned in steps by the retention task.
ALTER TABLE processed_event SET (
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000,
    autovacuum_vacuum_insert_scale_factor = 0.05,
    autovacuum_analyze_scale_factor = 0.02,
    autovacuum_analyze_threshold = 1000
);

-- A queue: every row is inserted by a batch and deleted by the relay soon after, so
-- the table is nearly empty and its size says nothing. Vacuum after a fixed number of
-- dead rows (scale factor 0), which keeps the relay's reads of the head from wading
-- through them.
ALTER TABLE outbox SET (
    autovacuum_vacuum_scale_factor = 0,
    autovacuum_vacuum_threshold = 10000,
    autovacuum_vacuum_insert_scale_factor = 0,
    autovacuum_vacuum_insert_threshold = 10000
);
