-- Step 5 of reconciliation, after the new contacts are inserted (`writes.rs`): one
-- statement re-links and re-versions stored contacts, journals merges and bridges,
-- queues refused links for review and writes the outbox. Every parameter is an array
-- with one element per row, grouped here by the table the rows go to.
--
-- contact, one element per stored contact re-linked or re-versioned:
--   $1  int8[]  id
--   $2  int8[]  linked_id (NULL: the contact is, or becomes, a primary)
--   $3  int8[]  version
-- merge_journal, one element per merge or bridge:
--   $4  int8[]  primary_id, the survivor
--   $5  int8[]  absorbed_id (NULL: a bridge, two contacts of one identity)
--   $6  int8[]  watermark_id (NULL: a bridge)
--   $7  text[]  event_key (NULL: not from an event)
--   $8  text[]  source
--   $9  int4[]  how many contact_ids the row has
--   $10 int8[]  every row's contact_ids, row after row
--   $11 int4[]  how many via_ids the row has (NULL: a bridge, none recorded)
--   $12 int8[]  every row's via_ids, row after row
-- link_review, one element per refused link (one pending entry per link: a link
-- refused again while its entry is pending adds none):
--   $13 text[]  reason
--   $14 int8[]  primary_id
--   $15 int8[]  other_primary_id (NULL: a refused new secondary)
--   $16 text[]  event_key (NULL: not from an event)
--   $17 text[]  source
-- outbox, one element per record:
--   $18 text[]  key
--   $19 text[]  payload
WITH u AS (UPDATE contact c SET
    linked_id = u.linked_id,
    link_precedence = CASE WHEN u.linked_id IS NULL THEN 'primary' ELSE 'secondary' END,
    version = u.version,
    updated_at = CASE WHEN c.linked_id IS DISTINCT FROM u.linked_id THEN clock_timestamp() ELSE c.updated_at END
    FROM unnest($1::int8[], $2::int8[], $3::int8[]) AS u(id, linked_id, version)
    WHERE c.id = u.id),
    -- A journal row's contact_ids are the last `contacts` elements of $10 up to the
    -- running total of `contacts` (its via_ids likewise in $12).
    journal AS (SELECT *,
        (sum(contacts) OVER running)::int4 AS contacts_end,
        (sum(via) OVER running)::int4 AS via_end
    FROM unnest($4::int8[], $5::int8[], $6::int8[], $7::text[], $8::text[], $9::int4[], $11::int4[])
    WITH ORDINALITY AS j(primary_id, absorbed, watermark, event_key, source, contacts, via, n)
    WINDOW running AS (ORDER BY n)),
    j AS (INSERT INTO merge_journal (kind, primary_id, absorbed_id, contact_ids, watermark_id, event_key, source, via_ids)
    SELECT CASE WHEN absorbed IS NULL THEN 'bridge' ELSE 'merge' END,
    primary_id, absorbed, ($10::int8[])[contacts_end - contacts + 1 : contacts_end],
    watermark, event_key, source,
    CASE WHEN via IS NOT NULL THEN ($12::int8[])[via_end - via + 1 : via_end] END
    FROM journal ORDER BY n),
    r AS (INSERT INTO link_review (reason, primary_id, other_primary_id, event_key, source)
    SELECT DISTINCT ON (r.reason, r.primary_id, r.other_primary_id) r.*
    FROM unnest($13::text[], $14::int8[], $15::int8[], $16::text[], $17::text[])
    AS r(reason, primary_id, other_primary_id, event_key, source)
    WHERE NOT EXISTS (SELECT 1 FROM link_review l WHERE l.status = 'pending'
    AND l.reason = r.reason AND l.primary_id = r.primary_id
    AND l.other_primary_id IS NOT DISTINCT FROM r.other_primary_id))
    INSERT INTO outbox (key, payload) SELECT * FROM unnest($18::text[], $19::text[])
