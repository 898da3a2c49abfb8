-- Deploys. `deployments` is a read model (the projection of the `deploy` events).
-- `deploy_state_locks` is the write side's lock of a workspace's Terraform state: the state
-- server Aurora runs for each CLI run takes it on the CLI's LOCK and drops it on UNLOCK, so
-- two runs of one workspace never run at once, whichever processor runs them. A lock whose
-- run was lost stays until that run is recorded as `deploy.outcome_unknown`.
CREATE TABLE deployments (
    deployment_id  uuid        PRIMARY KEY,
    org_id         uuid        NOT NULL,
    session_id     uuid        NOT NULL,
    -- planned, applying, applied, failed, outcome_unknown
    status         text        NOT NULL,
    destroy        boolean     NOT NULL,
    requested_by   text        NOT NULL,
    approved_by    text,
    files          jsonb       NOT NULL,
    changes        jsonb       NOT NULL,
    -- Resources the plan touches, all kinds together.
    resources      integer     NOT NULL,
    plan_prefix    text        NOT NULL,
    output_key     text,
    state_version  integer,
    outputs        jsonb,
    failure_stage  text,
    failure_reason text,
    lost_lock      jsonb,
    planned_at     timestamptz NOT NULL,
    started_at     timestamptz,
    finished_at    timestamptz,
    duration_ms    bigint,
    stream_version bigint      NOT NULL
);
CREATE INDEX deployments_org ON deployments (org_id, planned_at DESC, deployment_id DESC);
CREATE INDEX deployments_session ON deployments (org_id, session_id, planned_at DESC);
SELECT aurora_expose_to_tenants('deployments');

CREATE TABLE deploy_state_locks (
    org_id       uuid        NOT NULL,
    -- The workspace: its chat session.
    workspace_id uuid        PRIMARY KEY,
    lock_id      text        NOT NULL,
    -- The lock as the CLI described it (operation, who, when).
    info         jsonb       NOT NULL,
    locked_at    timestamptz NOT NULL DEFAULT now()
);
