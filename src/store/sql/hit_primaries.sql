SELECT coalesce(linked_id, id) AS "primary!" FROM contact WHERE deleted_at IS NULL AND (email = ANY($1) OR phone_number = ANY($2))
