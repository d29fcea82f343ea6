-- The transaction that applied each event, so that the order of application can be
-- read back: events applied together share a value, and for two batches of one input
-- partition the later batch has the higher value (a transaction id is assigned at
-- its first write, and a partition's next batch starts after the previous commits).
-- The scale-out and crash tests check with it that every partition was applied in
-- offset order; operators can group events by the transaction that applied them.
-- Added without a default and then given one, so existing rows keep NULL and the
-- table is not rewritten.
ALTER TABLE processed_event ADD COLUMN applied_by xid8;
ALTER TABLE processed_event ALTER COLUMN applied_by SET DEFAULT pg_current_xact_id();
