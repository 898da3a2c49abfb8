-- aurora_append records the command after its events, in one insert, instead of reserving the
-- command row first and updating it afterwards: one write less on every append. A concurrent call
-- with the same command id now loses on the primary key of processed_commands (SQLSTATE AU208,
-- its whole statement rolled back) and the client asks again, finding the winner's result.
CREATE OR REPLACE FUNCTION aurora_append(
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
        RETURN QUERY
            SELECT c.first_version, c.last_version, c.event_ids, true
            FROM processed_commands c WHERE c.command_id = p_command_id;
        IF FOUND THEN
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
        INSERT INTO processed_commands (command_id, stream, first_version, last_version, event_ids)
        VALUES (p_command_id, p_stream, v_current + 1, v_current + v_count, p_event_ids)
        ON CONFLICT (command_id) DO NOTHING;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'command % was appended concurrently', p_command_id USING ERRCODE = 'AU208';
        END IF;
    END IF;

    RETURN QUERY SELECT v_current + 1, v_current + v_count, p_event_ids, false;
END
$$;

