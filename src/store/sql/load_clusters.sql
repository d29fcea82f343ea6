SELECT id, email, phone_number, linked_id, created_at, version FROM contact WHERE deleted_at IS NULL AND (id = ANY($1) OR linked_id = ANY($1))
