-- Chat turns with the agent.

-- Sessions can be deleted; the row stays so that a redelivered older event cannot bring it back.
ALTER TABLE chat_sessions ADD COLUMN deleted boolean NOT NULL DEFAULT false;

-- A session's conversation as the web UI shows it: one row per event worth showing (the question,
-- each tool call and its outcome, each confirmation and its answer, the answer, how a turn ended),
-- in stream order.
CREATE TABLE chat_messages (
    event_id   uuid        PRIMARY KEY,
    org_id     uuid        NOT NULL,
    session_id uuid        NOT NULL,
    turn_id    uuid        NOT NULL,
    position   bigint      NOT NULL,
    kind       text        NOT NULL,
    text       text        NOT NULL DEFAULT '',
    data       jsonb       NOT NULL DEFAULT '{}',
    created_at timestamptz NOT NULL
);
CREATE INDEX chat_messages_by_session ON chat_messages (org_id, session_id, position);
SELECT aurora_expose_to_tenants('chat_messages');

-- Whole tool results. Events carry a result cut to its tool's cap; the agent processor keeps the
-- whole one here, written before the event that announces it.
CREATE TABLE tool_results (
    org_id       uuid        NOT NULL,
    session_id   uuid        NOT NULL,
    tool_call_id text        NOT NULL,
    turn_id      uuid        NOT NULL,
    result       jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (session_id, tool_call_id)
);
SELECT aurora_expose_to_tenants('tool_results');

-- Durable timers: due work that must happen once across every instance even if the process that
-- set it is gone (confirmation expiry first). The processor that owns timers fires each due one
-- by issuing its command, idempotent by timer id, and marks it fired in the same transaction.
CREATE TABLE timers (
    timer_id uuid        PRIMARY KEY,
    kind     text        NOT NULL,
    org_id   uuid        NOT NULL,
    stream   text        NOT NULL,
    payload  jsonb       NOT NULL,
    due_at   timestamptz NOT NULL,
    fired_at timestamptz
);
CREATE INDEX timers_due ON timers (due_at) WHERE fired_at IS NULL;
