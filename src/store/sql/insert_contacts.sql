INSERT INTO contact
    (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version)
    SELECT u.id, u.email, u.phone, u.link,
    CASE WHEN u.link IS NULL THEN 'primary' ELSE 'secondary' END, t.ts, t.ts, u.version
    FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
    AS u(id, email, phone, link, version),
    (SELECT greatest(clock_timestamp(), $6::timestamptz) AS ts) t
