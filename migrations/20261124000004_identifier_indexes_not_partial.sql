-- Plain indexes on the identifiers instead of partial ones (`WHERE deleted_at IS NULL`).
--
-- The service plans its statements generically (`plan_cache_mode`, see
-- `DatabaseSettings::connect_options`). A partial index offers the planner one more
-- way to find the live contacts: read the whole index and test every row against the
-- batch's 500 emails and 500 phones. Planned while `contact` was small, that plan was
-- chosen, kept, and cost 15-40 ms per batch once the table had grown. A plain index
-- can only be probed with the identifiers. Erased contacts keep no email or phone
-- (`forget` clears them), so the partial predicate saved nothing.
DROP INDEX contact_email_idx;
DROP INDEX contact_phone_number_idx;
CREATE INDEX contact_email_idx ON contact (email);
CREATE INDEX contact_phone_number_idx ON contact (phone_number);
