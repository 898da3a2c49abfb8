-- Read models built by projections. Each projection stores how far it has consumed each
-- partition in projection_offsets, in the same transaction as the rows it wrote.
CREATE TABLE projection_offsets (
    projection  text    NOT NULL,
    topic       text    NOT NULL,
    partition   integer NOT NULL,
    next_offset bigint  NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, topic, partition)
);

-- Who did what, when, to which stream, in which correlation: one row per event.
CREATE TABLE audit_log (
    event_id       uuid        PRIMARY KEY,
    org_id         uuid        NOT NULL,
    stream         text        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    schema_version integer     NOT NULL,
    actor          text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    correlation_id uuid        NOT NULL,
    causation_id   uuid
);
CREATE INDEX audit_log_by_time ON audit_log (org_id, occurred_at, event_id);
CREATE INDEX audit_log_by_stream ON audit_log (org_id, stream, stream_version);

-- Chat sessions as the gateway lists them.
CREATE TABLE chat_sessions (
    session_id uuid        PRIMARY KEY,
    org_id     uuid        NOT NULL,
    title      text        NOT NULL,
    owner      text        NOT NULL,
    archived   boolean     NOT NULL DEFAULT false,
    version    bigint      NOT NULL,
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE INDEX chat_sessions_by_org ON chat_sessions (org_id, updated_at DESC);
