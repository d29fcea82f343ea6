WITH u AS (UPDATE contact c SET
    linked_id = u.linked_id,
    link_precedence = CASE WHEN u.linked_id IS NULL THEN 'primary' ELSE 'secondary' END,
    version = u.version,
    updated_at = CASE WHEN c.linked_id IS DISTINCT FROM u.linked_id THEN clock_timestamp() ELSE c.updated_at END
    FROM unnest($1::bigint[], $2::bigint[], $3::bigint[]) AS u(id, linked_id, version)
    WHERE c.id = u.id),
    j AS (INSERT INTO merge_journal (kind, primary_id, absorbed_id, contact_ids, watermark_id, event_key, source, via_ids)
    SELECT CASE WHEN absorbed IS NULL THEN 'bridge' ELSE 'merge' END,
    primary_id, absorbed, contact_ids::bigint[], watermark, event_key, source, via::bigint[]
    FROM unnest($6::bigint[], $7::bigint[], $8::text[], $9::bigint[], $10::text[], $11::text[], $17::text[])
    AS j(primary_id, absorbed, contact_ids, watermark, event_key, source, via)),
    r AS (INSERT INTO link_review (reason, primary_id, other_primary_id, event_key, source)
    SELECT DISTINCT ON (r.reason, r.primary_id, r.other_primary_id) r.*
    FROM unnest($12::text[], $13::bigint[], $14::bigint[], $15::text[], $16::text[])
    AS r(reason, primary_id, other_primary_id, event_key, source)
    WHERE NOT EXISTS (SELECT 1 FROM link_review l WHERE l.status = 'pending'
    AND l.reason = r.reason AND l.primary_id = r.primary_id
    AND l.other_primary_id IS NOT DISTINCT FROM r.other_primary_id))
    INSERT INTO outbox (key, payload) SELECT * FROM unnest($4::text[], $5::text[])
