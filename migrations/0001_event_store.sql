-- The event store: one append-only table of every event, in commit order per stream.
--
-- `transaction_id` lets the relay publish in an order that never skips an event whose
-- transaction began before, but committed after, a later position (see commands/src/relay.rs).
CREATE TABLE events (
    position        bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    transaction_id  xid8        NOT NULL DEFAULT pg_current_xact_id(),
    event_id        uuid        NOT NULL UNIQUE,
    stream          text        NOT NULL,
    stream_version  bigint      NOT NULL CHECK (stream_version > 0),
    event_type      text        NOT NULL,
    schema_version  integer     NOT NULL,
    org_id          uuid        NOT NULL,
    actor           text        NOT NULL,
    occurred_at     timestamptz NOT NULL,
    correlation_id  uuid        NOT NULL,
    causation_id    uuid,
    traceparent     text,
    payload         jsonb       NOT NULL,
    CONSTRAINT events_stream_version_unique UNIQUE (stream, stream_version)
);

CREATE INDEX events_relay_order ON events (transaction_id, position);

-- Commands already handled, so that a repeated command id returns the first call's result.
CREATE TABLE processed_commands (
    command_id    uuid        PRIMARY KEY,
    stream        text        NOT NULL,
    first_version bigint      NOT NULL,
    last_version  bigint      NOT NULL,
    event_ids     uuid[]      NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now()
);

-- How far each relay has published.
CREATE TABLE relay_checkpoints (
    relay          text   PRIMARY KEY,
    transaction_id xid8   NOT NULL,
    position       bigint NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- Appends events to a stream in one round trip.
--   p_expected: -1 any version, 0 the stream must not exist, n the stream must be at version n.
-- A version mismatch raises SQLSTATE AU409 with the actual version in DETAIL; two concurrent
-- appends at the same version collide on events_stream_version_unique (SQLSTATE 23505).
-- A command id seen before returns the first call's result with duplicate = true.
CREATE FUNCTION aurora_append(
    p_stream          text,
    p_expected        bigint,
    p_command_id      uuid,
    p_event_ids       uuid[],
    p_types           text[],
    p_schema_versions integer[],
    p_payloads        jsonb[],
    p_org             uuid,
    p_actor           text,
    p_occurred_at     timestamptz,
    p_correlation     uuid,
    p_causation       uuid,
    p_traceparent     text
) RETURNS TABLE (first_version bigint, last_version bigint, event_ids uuid[], duplicate boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_current bigint;
    v_count   integer := cardinality(p_event_ids);
BEGIN
    IF p_command_id IS NOT NULL THEN
        -- Waits for a concurrent call with the same id to finish, then sees its result.
        INSERT INTO processed_commands (command_id, stream, first_version, last_version, event_ids)
        VALUES (p_command_id, p_stream, 0, 0, '{}')
        ON CONFLICT (command_id) DO NOTHING;
        IF NOT FOUND THEN
            RETURN QUERY
                SELECT c.first_version, c.last_version, c.event_ids, true
                FROM processed_commands c WHERE c.command_id = p_command_id;
            RETURN;
        END IF;
    END IF;

    SELECT coalesce(max(e.stream_version), 0) INTO v_current FROM events e WHERE e.stream = p_stream;
    IF p_expected >= 0 AND v_current <> p_expected THEN
        RAISE EXCEPTION 'stream % is at version %, expected %', p_stream, v_current, p_expected
            USING ERRCODE = 'AU409', DETAIL = v_current::text;
    END IF;

    INSERT INTO events (event_id, stream, stream_version, event_type, schema_version, org_id, actor,
                        occurred_at, correlation_id, causation_id, traceparent, payload)
    SELECT u.event_id, p_stream, v_current + u.ordinality, u.event_type, u.schema_version, p_org,
           p_actor, p_occurred_at, p_correlation, p_causation, p_traceparent, u.payload
    FROM unnest(p_event_ids, p_types, p_schema_versions, p_payloads)
         WITH ORDINALITY AS u(event_id, event_type, schema_version, payload, ordinality);

    IF p_command_id IS NOT NULL THEN
        UPDATE processed_commands c
        SET first_version = v_current + 1, last_version = v_current + v_count, event_ids = p_event_ids
        WHERE c.command_id = p_command_id;
    END IF;

    RETURN QUERY SELECT v_current + 1, v_current + v_count, p_event_ids, false;
END
$$;
