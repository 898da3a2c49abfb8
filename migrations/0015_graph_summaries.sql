-- What the agent's prompt and `GET /v1/discovery/summary` say of an organisation's estate,
-- folded once per completed scan from `graph_nodes` and `graph_edges`: how many services of
-- each provider and kind, in which regions, how many the latest scans missed, and the services
-- most depended on.
CREATE TABLE graph_summaries (
    org_id         uuid   PRIMARY KEY,
    summary        jsonb  NOT NULL,
    stream_version bigint NOT NULL
);
SELECT aurora_expose_to_tenants('graph_summaries');
