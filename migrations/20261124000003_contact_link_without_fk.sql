-- contact.linked_id loses its foreign key. Every secondary inserted (and every
-- re-link) made PostgreSQL check it by locking the referenced primary row FOR KEY
-- SHARE, which writes that row: about 150 row writes per batch of 500 events. The
-- property the key guarded (a secondary links to an existing contact, and contacts
-- are never deleted) is kept by the store, which links only to primaries it holds
-- locked and loaded, and is checked by the invariant tests.
ALTER TABLE contact DROP CONSTRAINT contact_linked_id_fkey;
