-- A resource its provider no longer lists stays in the graph, `missing` and then `stale`, with
-- when a scan last listed it, until it is gone (30 days unlisted by default) or listed again.
ALTER TABLE graph_nodes
    ADD COLUMN status    text NOT NULL DEFAULT 'present' CHECK (status IN ('present', 'missing', 'stale')),
    ADD COLUMN last_seen timestamptz;
