-- Incidents. `incidents`, `incident_alerts`, `incident_investigations`, `incident_timeline`,
-- `incident_postmortems` and `webhook_deliveries` are read models (projections of the `incident`
-- and `webhook` events). `incident_intake_*` and `investigation_runs` belong to the incident
-- processors: which incident each open alert is on, which incidents may still take alerts, and
-- the per-organisation queue of investigations.

CREATE TABLE incidents (
    incident_id          uuid        PRIMARY KEY,
    org_id               uuid        NOT NULL,
    title                text        NOT NULL,
    -- open, acknowledged, resolved, merged
    status               text        NOT NULL,
    severity             text        NOT NULL,
    source               text        NOT NULL,
    service              text,
    environment          text,
    labels               jsonb       NOT NULL DEFAULT '{}',
    alert_count          integer     NOT NULL DEFAULT 0,
    firing_count         integer     NOT NULL DEFAULT 0,
    opened_at            timestamptz NOT NULL,
    acknowledged_at      timestamptz,
    acknowledged_by      text,
    first_rca_at         timestamptz,
    resolved_at          timestamptz,
    resolution           text,
    duration_secs        bigint,
    merged_into          uuid,
    split_from           uuid,
    -- The latest investigation: queued, running, completed, failed
    investigation_id     uuid,
    investigation_status text,
    confidence           text,
    rca_summary          text,
    postmortem_version   integer,
    updated_at           timestamptz NOT NULL,
    stream_version       bigint      NOT NULL
);
CREATE INDEX incidents_org_opened ON incidents (org_id, opened_at DESC, incident_id DESC);
SELECT aurora_expose_to_tenants('incidents');

CREATE TABLE incident_alerts (
    org_id          uuid        NOT NULL,
    incident_id     uuid        NOT NULL,
    source          text        NOT NULL,
    fingerprint     text        NOT NULL,
    -- firing, resolved
    status          text        NOT NULL,
    title           text        NOT NULL,
    severity        text,
    service         text,
    environment     text,
    labels          jsonb       NOT NULL,
    annotations     jsonb       NOT NULL,
    links           jsonb       NOT NULL,
    starts_at       timestamptz,
    firings         integer     NOT NULL DEFAULT 1,
    grouping_rule   text        NOT NULL,
    grouping_score  double precision NOT NULL,
    grouping_reason text        NOT NULL,
    delivery_id     uuid,
    attached_at     timestamptz NOT NULL,
    last_fired_at   timestamptz NOT NULL,
    resolved_at     timestamptz,
    PRIMARY KEY (incident_id, source, fingerprint)
);
SELECT aurora_expose_to_tenants('incident_alerts');

CREATE TABLE incident_investigations (
    investigation_id uuid        PRIMARY KEY,
    org_id           uuid        NOT NULL,
    incident_id      uuid        NOT NULL,
    -- queued, running, completed, failed
    status           text        NOT NULL,
    trigger          text        NOT NULL,
    session_id       uuid,
    requested_at     timestamptz NOT NULL,
    started_at       timestamptz,
    ended_at         timestamptz,
    limits           jsonb,
    thoughts         integer     NOT NULL DEFAULT 0,
    rca              jsonb,
    confidence       text,
    failure_reason   text,
    failure_message  text,
    tool_calls       integer,
    tokens           integer
);
CREATE INDEX incident_investigations_incident ON incident_investigations (incident_id, requested_at);
SELECT aurora_expose_to_tenants('incident_investigations');

-- Every event of every incident, in the order the projection applied them: the detail's
-- timeline and thoughts, and the positions the change stream resumes from.
CREATE TABLE incident_timeline (
    position       bigserial   PRIMARY KEY,
    org_id         uuid        NOT NULL,
    incident_id    uuid        NOT NULL,
    stream_version bigint      NOT NULL,
    event_type     text        NOT NULL,
    actor          text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    data           jsonb       NOT NULL,
    UNIQUE (incident_id, stream_version)
);
CREATE INDEX incident_timeline_org ON incident_timeline (org_id, position);
SELECT aurora_expose_to_tenants('incident_timeline');

CREATE TABLE incident_postmortems (
    org_id        uuid        NOT NULL,
    incident_id   uuid        NOT NULL,
    version       integer     NOT NULL,
    markdown      text        NOT NULL,
    origin        text        NOT NULL,
    restored_from integer,
    saved_by      text        NOT NULL,
    saved_at      timestamptz NOT NULL,
    PRIMARY KEY (incident_id, version)
);
SELECT aurora_expose_to_tenants('incident_postmortems');

-- Each accepted delivery, as its vendor sent it.
CREATE TABLE webhook_deliveries (
    delivery_id uuid        PRIMARY KEY,
    org_id      uuid        NOT NULL,
    source      text        NOT NULL,
    received_at timestamptz NOT NULL,
    body_sha256 text        NOT NULL,
    payload     jsonb       NOT NULL
);
SELECT aurora_expose_to_tenants('webhook_deliveries');

-- The intake's own state, written under a per-organisation lock before the commands it decided,
-- so that a redelivered `webhook.received` decides the same again.
CREATE TABLE incident_intake_alerts (
    org_id      uuid        NOT NULL,
    source      text        NOT NULL,
    fingerprint text        NOT NULL,
    incident_id uuid        NOT NULL,
    -- The delivery that decided the incident, and how (open or attach, with the grouping).
    delivery_id uuid        NOT NULL,
    decision    jsonb       NOT NULL,
    firing      boolean     NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, source, fingerprint)
);

CREATE TABLE incident_intake_incidents (
    incident_id   uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL,
    service       text,
    labels        jsonb       NOT NULL,
    alerts        integer     NOT NULL,
    last_alert_at timestamptz NOT NULL,
    open          boolean     NOT NULL
);
CREATE INDEX incident_intake_incidents_open ON incident_intake_incidents (org_id, last_alert_at) WHERE open;

CREATE TABLE investigation_runs (
    investigation_id uuid        PRIMARY KEY,
    org_id           uuid        NOT NULL,
    incident_id      uuid        NOT NULL,
    session_id       uuid        NOT NULL,
    -- queued, running, done
    status           text        NOT NULL,
    requested_at     timestamptz NOT NULL,
    -- Whether the chat turn and `investigation.started` are recorded.
    started          boolean     NOT NULL DEFAULT false,
    -- Turns submitted: 1, then 2 when the first RCA was refused.
    attempts         integer     NOT NULL DEFAULT 0
);
CREATE INDEX investigation_runs_queue ON investigation_runs (org_id, status, requested_at);
CREATE UNIQUE INDEX investigation_runs_session ON investigation_runs (session_id);
