-- One organisation's webhook deliveries sit on several partitions (a record's key is its stream,
-- and every delivery is a stream of its own), so the intake may read a notification after a later
-- one. `changed_at` is when the delivery last applied to an alert was received: an older one read
-- later changes nothing. A resolution read before the firing it ends waits in
-- `incident_intake_early_resolutions` until that firing is read.
ALTER TABLE incident_intake_alerts ADD COLUMN changed_at timestamptz;

CREATE TABLE incident_intake_early_resolutions (
    org_id      uuid        NOT NULL,
    source      text        NOT NULL,
    fingerprint text        NOT NULL,
    delivery_id uuid        NOT NULL,
    received_at timestamptz NOT NULL,
    -- When the alert ended, as its source says (or when the resolution was received).
    resolved_at timestamptz NOT NULL,
    PRIMARY KEY (org_id, source, fingerprint)
);
