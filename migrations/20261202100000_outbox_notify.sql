-- Wakes the relay at commit. Every writer of the outbox (the worker, the sidecar, the
-- admin endpoints, other instances) runs this trigger, so every relay listening on
-- `ir_outbox` learns of new rows when their transaction commits, wherever they were
-- written; before, rows written by another process waited for the relay's next poll.
-- PostgreSQL delivers a NOTIFY only at commit (never for a rolled-back transaction)
-- and folds identical ones of a transaction into one, so a batch's transaction sends
-- one notification however many statements wrote to the outbox. The payload is empty
-- on purpose: the relay reads the head of the table anyway, and a constant payload is
-- what lets the notifications of one transaction coalesce. FOR EACH STATEMENT, not
-- per row: one call per INSERT, whatever its number of rows.
CREATE FUNCTION outbox_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ir_outbox', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify AFTER INSERT ON outbox
    FOR EACH STATEMENT EXECUTE FUNCTION outbox_notify();
