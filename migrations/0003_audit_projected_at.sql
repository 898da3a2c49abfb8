-- When each audit row reached the read model: operators see projection delay per event, and
-- `aurora bench backbone` measures append-to-read-model latency from it.
ALTER TABLE audit_log ADD COLUMN projected_at timestamptz NOT NULL DEFAULT clock_timestamp();
