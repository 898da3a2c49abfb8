-- Idempotency keys belong to an organisation and a route, and are bound to the request they were
-- first used with: another organisation's key is another key, and the same key with another
-- request is refused rather than answered with the first request's result.
CREATE TABLE idempotency_keys (
    org_id       uuid        NOT NULL,
    route        text        NOT NULL,
    key          uuid        NOT NULL,
    request_hash bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (org_id, route, key)
);

-- The audit log is paged by the order rows reached it, a position that only grows: rows arrive
-- in projection order, not in `occurred_at` order, and a cursor on time would skip a late row.
-- The sequence belongs to no table: a replay builds a fresh table LIKE this one (sharing the
-- default), swaps it in and drops the old one, which must not take the sequence with it.
CREATE SEQUENCE audit_log_position;
ALTER TABLE audit_log ADD COLUMN position bigint NOT NULL DEFAULT nextval('audit_log_position');
CREATE INDEX audit_log_by_position ON audit_log (org_id, position);
