-- Dead letters the DLQ topic could not take whole (too large for it, not authorised,
-- topic missing): kept here in full, so the source partition can move on. The DLQ
-- gets a truncated copy (header dlq.truncated=true) where that fits. One row per
-- source message: a redelivery of the same message after a crash adds nothing.
CREATE TABLE dead_letter (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_topic     TEXT NOT NULL,
    source_partition INT NOT NULL,
    source_offset    BIGINT NOT NULL,
    key              BYTEA,
    value            BYTEA,
    -- The original headers, in order; a NULL value is a header without a value.
    header_keys      TEXT[] NOT NULL,
    header_values    BYTEA[] NOT NULL,
    -- Why the message is a dead letter (dlq.reason, dlq.error).
    reason           TEXT NOT NULL,
    error            TEXT NOT NULL,
    -- Why the DLQ topic refused the whole letter.
    publish_error    TEXT NOT NULL,
    -- Whether a truncated copy reached the DLQ topic.
    truncated_copy   BOOLEAN NOT NULL DEFAULT false,
    created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
    UNIQUE (source_topic, source_partition, source_offset)
);

-- The ledger gets two namespaces: `event` for eventId keys and `offset` for the
-- topic/partition/offset keys of events without one, so an eventId that looks like
-- `t/0/5` is not the offset key of t/0/5. `digest` is the SHA-256 of an eventId
-- event's content (normalised identifiers and orderId): a reused eventId with other
-- content is told apart from a replay. Rows written before have no digest: any
-- content matches them.
ALTER TABLE processed_event
    ADD COLUMN kind TEXT NOT NULL DEFAULT 'event' CHECK (kind IN ('event', 'offset')),
    ADD COLUMN digest BYTEA;
ALTER TABLE processed_event DROP CONSTRAINT processed_event_pkey;
-- Old keys that have the shape of an offset key may have been either kind: they
-- stay in both namespaces, so nothing already applied is applied again. Only rows
-- written from now on are unambiguous.
UPDATE processed_event SET kind = 'offset' WHERE key ~ '/[0-9]+/[0-9]+$';
INSERT INTO processed_event (key, processed_at, kind)
    SELECT key, processed_at, 'event' FROM processed_event WHERE kind = 'offset';
ALTER TABLE processed_event ADD PRIMARY KEY (kind, key);

-- Retention pruning deletes the oldest rows in small batches.
CREATE INDEX processed_event_processed_at ON processed_event (processed_at);
