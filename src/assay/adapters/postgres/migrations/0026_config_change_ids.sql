-- Configuration notifications name the transaction that made the change.
--
-- The payload was empty, so a process could not tell a notification of a change it had
-- already loaded (its own write, which it reloads at once to read its writes) from one it
-- had not: every notification cost a reload. Now the payload is the id of the notifying
-- transaction (pg_current_xact_id(), 64 bits, never wraps); a process that loaded its
-- configuration in a snapshot (pg_current_snapshot()) in which that transaction is visible
-- already holds the change and skips the reload. Notifications of one transaction still
-- carry one payload, so they are still collapsed into one. A payload that is not a number
-- (a server still running the old function) is taken as "something changed".
CREATE OR REPLACE FUNCTION assay_notify_config() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('assay_config', pg_current_xact_id()::text);
    RETURN NULL;
END
$$;
