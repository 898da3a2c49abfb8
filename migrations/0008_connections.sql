-- Connections as the gateway lists them and the agent reads them: provider, who the credentials
-- act as, where they are kept (a `vault:` reference, never a value), status and inventory.
CREATE TABLE connections (
    connection_id     uuid        PRIMARY KEY,
    org_id            uuid        NOT NULL,
    provider          text        NOT NULL,
    method            text        NOT NULL,
    name              text        NOT NULL,
    account           text        NOT NULL,
    secret_ref        text        NOT NULL,
    secret_version    bigint      NOT NULL,
    scopes            text[]      NOT NULL DEFAULT '{}',
    status            text        NOT NULL,
    needs_reconnect   boolean     NOT NULL DEFAULT false,
    last_error        text,
    last_error_stage  text,
    last_error_at     timestamptz,
    expires_at        timestamptz,
    refreshed_at      timestamptz,
    inventory         jsonb       NOT NULL DEFAULT '[]',
    inventory_omitted bigint      NOT NULL DEFAULT 0,
    inventory_at      timestamptz,
    established_by    text        NOT NULL,
    created_at        timestamptz NOT NULL,
    updated_at        timestamptz NOT NULL,
    version           bigint      NOT NULL
);
CREATE INDEX connections_org ON connections (org_id, provider) WHERE status <> 'removed';
SELECT aurora_expose_to_tenants('connections');
