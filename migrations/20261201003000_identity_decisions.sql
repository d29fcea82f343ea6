-- Identity decisions (CONTRACT §8): keep-apart decisions, the review queue's state,
-- and quarantined identifiers. Only new tables, new columns and wider checks, so the
-- previous release keeps working on this schema.

-- Two contacts that must never be in one cluster. Written by an undone merge (the
-- absorbed primary and the survivor) and by a rejected review. A decision is about
-- the clusters the two contacts are in *now*: an input that would join the cluster of
-- `contact_a` with the cluster of `contact_b` is refused, however the clusters grew
-- or merged since. `final` is set by a rejected review: refusals of a final decision
-- are not queued for review again.
CREATE TABLE keep_apart (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    contact_a  BIGINT NOT NULL,
    contact_b  BIGINT NOT NULL,
    final      BOOLEAN NOT NULL DEFAULT false,
    source     TEXT NOT NULL CHECK (source IN ('unmerge', 'review')),
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    CONSTRAINT keep_apart_two_contacts CHECK (contact_a <> contact_b)
);
CREATE INDEX keep_apart_contact_a_idx ON keep_apart (contact_a);
CREATE INDEX keep_apart_contact_b_idx ON keep_apart (contact_b);

-- Identifiers that stopped being used for linking because they were seen with too
-- many distinct counterparts (`reconcile.quarantine`). `value` is the identifier as
-- stored (kind `e` email, `p` phone): inputs carrying it are matched by their other
-- identifier only, and an operator must see which value it is to review it.
-- `released_at` is set when a review releases it.
CREATE TABLE quarantine (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind        CHAR(1) NOT NULL CHECK (kind IN ('e', 'p')),
    value       TEXT NOT NULL,
    counterparts INT NOT NULL,
    created_at  TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    released_at TIMESTAMPTZ
);
-- At most one active quarantine per identifier.
CREATE UNIQUE INDEX quarantine_active_idx ON quarantine (kind, value) WHERE released_at IS NULL;

-- Which identifiers were seen together, and when last: the distinct counterparts of
-- an identifier within the window are counted from here. Salted hashes (as in
-- `suppression`), never the values.
CREATE TABLE counterpart (
    identifier BYTEA NOT NULL,
    other      BYTEA NOT NULL,
    seen_at    TIMESTAMPTZ NOT NULL,
    PRIMARY KEY (identifier, other)
);

-- The review queue: every refused link is an entry, pending until approved or
-- rejected. New reasons: `keep_apart` (a merge an operator's decision refused) and
-- `quarantine` (an identifier was quarantined; `quarantine_id`, no primary).
ALTER TABLE link_review DROP CONSTRAINT link_review_reason_check;
ALTER TABLE link_review ADD CONSTRAINT link_review_reason_check
    CHECK (reason IN ('max_emails', 'max_phones', 'max_contacts', 'keep_apart', 'quarantine'));
ALTER TABLE link_review ALTER COLUMN primary_id DROP NOT NULL;
ALTER TABLE link_review
    ADD COLUMN status TEXT NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'approved', 'rejected')),
    ADD COLUMN decided_at TIMESTAMPTZ,
    ADD COLUMN quarantine_id BIGINT REFERENCES quarantine (id);
CREATE INDEX link_review_pending_idx ON link_review (id) WHERE status = 'pending';

-- A merge made by approving a review is journalled with source `admin`, so that it
-- can be undone like any other.
ALTER TABLE merge_journal DROP CONSTRAINT merge_journal_source_check;
ALTER TABLE merge_journal ADD CONSTRAINT merge_journal_source_check
    CHECK (source IN ('event', 'http', 'admin'));
