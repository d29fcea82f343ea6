-- Identity quality: the merge journal (with undo), links refused by a per-identity
-- cap, and the suppression list of erased identifiers. None of these tables holds an
-- email or a phone number.

-- The merge journal, written in the transaction that made each change:
-- - `merge`: `absorbed_id` (and its secondaries, `contact_ids`) joined `primary_id`;
--   `watermark_id` is the highest contact id of the merged identity at that moment
--   (contacts with higher ids joined later); `undone_at` is set when it is undone.
-- - `bridge`: an input whose email and phone were already known to the identity of
--   `primary_id`, held by the two different `contact_ids`. It changes nothing, but
--   an undo must know that those contacts were used together.
CREATE TABLE merge_journal (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    kind         TEXT NOT NULL CHECK (kind IN ('merge', 'bridge')),
    primary_id   BIGINT NOT NULL REFERENCES contact (id),
    absorbed_id  BIGINT REFERENCES contact (id),
    contact_ids  BIGINT[] NOT NULL,
    watermark_id BIGINT,
    -- The event's idempotency key (its eventId, else topic/partition/offset); NULL
    -- for an HTTP request.
    event_key    TEXT,
    source       TEXT NOT NULL CHECK (source IN ('event', 'http')),
    created_at   TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    undone_at    TIMESTAMPTZ,
    CONSTRAINT merge_journal_merge_columns
        CHECK ((kind = 'merge') = (absorbed_id IS NOT NULL AND watermark_id IS NOT NULL))
);
CREATE INDEX merge_journal_absorbed_id_idx ON merge_journal (absorbed_id);
CREATE INDEX merge_journal_primary_id_idx ON merge_journal (primary_id);

-- Links a cap refused, for people to review: a merge of `other_primary_id` into
-- `primary_id`, or (other_primary_id NULL) a new secondary of `primary_id`.
CREATE TABLE link_review (
    id               BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    reason           TEXT NOT NULL CHECK (reason IN ('max_emails', 'max_phones', 'max_contacts')),
    primary_id       BIGINT NOT NULL REFERENCES contact (id),
    other_primary_id BIGINT REFERENCES contact (id),
    event_key        TEXT,
    source           TEXT NOT NULL CHECK (source IN ('event', 'http')),
    created_at       TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX link_review_primary_id_idx ON link_review (primary_id);

-- Erased identifiers, as salted SHA-256 hashes of "salt:kind:value" (kind `e` for an
-- email, `p` for a phone, values as stored): later inputs carrying one are dropped.
CREATE TABLE suppression (
    hash       BYTEA PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- The salt of those hashes, drawn once per database.
CREATE TABLE suppression_salt (
    only_row BOOLEAN PRIMARY KEY DEFAULT true CHECK (only_row),
    salt     TEXT NOT NULL
);
INSERT INTO suppression_salt (salt)
    VALUES (replace(gen_random_uuid()::text || gen_random_uuid()::text, '-', ''));
