-- What an explain of an identity needs that was not kept before (CONTRACT §8).

-- The input that created each contact, written in the transaction that inserted it.
-- Contacts created before this migration have no row: their origin is unknown.
-- No email or phone here.
CREATE TABLE contact_origin (
    contact_id BIGINT PRIMARY KEY,
    source     TEXT NOT NULL CHECK (source IN ('event', 'http')),
    -- The event's idempotency key (its eventId, else topic/partition/offset) and its
    -- eventId; NULL for an HTTP request.
    event_key  TEXT,
    event_id   TEXT
);

-- For a merge: the contacts that held the merging input's email and its phone, the
-- evidence that bridged the two sides. NULL for merges journalled before, and for
-- bridges (whose `contact_ids` already are that pair).
ALTER TABLE merge_journal ADD COLUMN via_ids BIGINT[];
