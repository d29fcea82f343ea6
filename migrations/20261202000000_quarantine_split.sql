-- A quarantine splits what its identifier had linked (README "Quarantine"). Only a new
-- column, an index and wider checks, so the previous release keeps working on this
-- schema (it neither reads nor writes what is added).

-- When the identities the identifier had linked were split. NULL while the split is
-- pending: the transaction that quarantines an identifier commits the row, and the
-- split runs in its own transaction right after; one that did not happen (a crash,
-- a database blip in between) is found here and done by the retention task, which
-- also runs at start. A released quarantine is never split: `released_at` wins.
-- Quarantines of before this migration are split by the first start after it.
ALTER TABLE quarantine ADD COLUMN split_at TIMESTAMPTZ;
CREATE INDEX quarantine_split_pending_idx ON quarantine (id)
    WHERE split_at IS NULL AND released_at IS NULL;

-- The journal records each identity a split made: `kind = 'split'`, `primary_id` the
-- identity it was split from, `absorbed_id` the new identity's primary (the contact
-- that left, as an undo restores the absorbed primary), `contact_ids` the secondaries
-- that left with it, `source = 'quarantine'`, and `quarantine_id` the quarantine
-- that caused it (no foreign key: an erasure deletes quarantines of erased values,
-- and the journal keeps its ids). Merges that the split undid (their bridging input
-- carried the identifier) get `undone_at`.
ALTER TABLE merge_journal ADD COLUMN quarantine_id BIGINT;
ALTER TABLE merge_journal DROP CONSTRAINT merge_journal_kind_check;
ALTER TABLE merge_journal ADD CONSTRAINT merge_journal_kind_check
    CHECK (kind IN ('merge', 'bridge', 'split'));
ALTER TABLE merge_journal DROP CONSTRAINT merge_journal_source_check;
ALTER TABLE merge_journal ADD CONSTRAINT merge_journal_source_check
    CHECK (source IN ('event', 'http', 'admin', 'quarantine'));
