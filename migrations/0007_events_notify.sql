-- Wakes the relay when events commit, instead of leaving it to find them at its next poll: one
-- notification per inserting statement, delivered at commit (and merged within a transaction).
-- The relay still polls at AURORA_RELAY_IDLE_WAIT_MS, so a lost notification costs only latency.
CREATE FUNCTION aurora_events_committed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('aurora_events', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER events_notify_relay AFTER INSERT ON events FOR EACH STATEMENT EXECUTE FUNCTION aurora_events_committed();
