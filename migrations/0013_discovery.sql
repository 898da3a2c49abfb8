-- Service discovery's read models, projections of the `discovery` events: the graph of an
-- organisation's resources (`graph_nodes`) and the dependencies between them (`graph_edges`),
-- queried with recursive SQL, and its scans (`discovery_scans`). A gone resource or dependency
-- keeps its row with `gone_at`, so the graph can be read as it was.
CREATE TABLE graph_nodes (
    node_id       uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL,
    resource_id   text        NOT NULL,
    provider      text        NOT NULL,
    kind          text        NOT NULL,
    provider_type text        NOT NULL,
    name          text        NOT NULL,
    region        text,
    account       text,
    tags          jsonb       NOT NULL,
    endpoint      text,
    first_seen    timestamptz NOT NULL,
    last_changed  timestamptz NOT NULL,
    gone_at       timestamptz,
    stream_version bigint     NOT NULL
);
CREATE INDEX graph_nodes_org ON graph_nodes (org_id, kind) WHERE gone_at IS NULL;
SELECT aurora_expose_to_tenants('graph_nodes');

CREATE TABLE graph_edges (
    org_id        uuid        NOT NULL,
    from_node     uuid        NOT NULL,
    to_node       uuid        NOT NULL,
    kind          text        NOT NULL,
    evidence      text        NOT NULL,
    confidence    float8      NOT NULL,
    first_seen    timestamptz NOT NULL,
    last_changed  timestamptz NOT NULL,
    gone_at       timestamptz,
    stream_version bigint     NOT NULL,
    PRIMARY KEY (from_node, to_node, kind)
);
CREATE INDEX graph_edges_to ON graph_edges (to_node) WHERE gone_at IS NULL;
SELECT aurora_expose_to_tenants('graph_edges');

CREATE TABLE discovery_scans (
    scan_id       uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL,
    -- requested, running, completed, failed
    status        text        NOT NULL,
    requested_by  text        NOT NULL,
    providers     text[]      NOT NULL DEFAULT '{}',
    counts        jsonb,
    failures      jsonb       NOT NULL DEFAULT '[]',
    requested_at  timestamptz NOT NULL,
    started_at    timestamptz,
    finished_at   timestamptz,
    stream_version bigint     NOT NULL
);
CREATE INDEX discovery_scans_org ON discovery_scans (org_id, requested_at DESC);
SELECT aurora_expose_to_tenants('discovery_scans');
