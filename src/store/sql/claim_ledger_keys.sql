INSERT INTO processed_event (kind, key, digest)
    SELECT * FROM unnest($1::text[], $2::text[], $3::bytea[])
    ON CONFLICT DO NOTHING RETURNING kind, key
