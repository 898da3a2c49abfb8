-- The graph as it was: every version of a resource and of a dependency, valid from the event
-- that made it until the event that changed or removed it (`valid_to` NULL: still so). The
-- discovery projection writes them beside `graph_nodes` and `graph_edges`; `?at=` reads them.
-- `from_version` is the stream version of the event that made the version, so a redelivered
-- event finds its version written and writes nothing.
CREATE TABLE graph_node_versions (
    node_id       uuid        NOT NULL,
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
    valid_from    timestamptz NOT NULL,
    valid_to      timestamptz,
    from_version  bigint      NOT NULL,
    PRIMARY KEY (node_id, from_version)
);
CREATE INDEX graph_node_versions_org ON graph_node_versions (org_id, valid_from);
SELECT aurora_expose_to_tenants('graph_node_versions');

CREATE TABLE graph_edge_versions (
    org_id       uuid        NOT NULL,
    from_node    uuid        NOT NULL,
    to_node      uuid        NOT NULL,
    kind         text        NOT NULL,
    evidence     text        NOT NULL,
    confidence   float8      NOT NULL,
    valid_from   timestamptz NOT NULL,
    valid_to     timestamptz,
    from_version bigint      NOT NULL,
    PRIMARY KEY (from_node, to_node, kind, from_version)
);
CREATE INDEX graph_edge_versions_from ON graph_edge_versions (from_node, valid_from);
CREATE INDEX graph_edge_versions_to ON graph_edge_versions (to_node, valid_from);
SELECT aurora_expose_to_tenants('graph_edge_versions');

-- What the graph already holds: one version each, from its last change.
INSERT INTO graph_node_versions
SELECT node_id, org_id, resource_id, provider, kind, provider_type, name, region, account, tags, endpoint, first_seen,
       last_changed, gone_at, stream_version
FROM graph_nodes;
INSERT INTO graph_edge_versions
SELECT org_id, from_node, to_node, kind, evidence, confidence, last_changed, gone_at, stream_version
FROM graph_edges;
