-- Deletes published outbox rows ($1): what the last round took, when the relay stops.
DELETE FROM outbox WHERE id = ANY($1)
