-- How often each organisation is scanned, when an admin set it (`discovery.schedule_changed`):
-- minutes from one scan's end to the next. No row, or a NULL interval: the deployment's default.
CREATE TABLE discovery_schedules (
    org_id           uuid        PRIMARY KEY,
    interval_minutes integer,
    changed_by       text        NOT NULL,
    changed_at       timestamptz NOT NULL,
    stream_version   bigint      NOT NULL
);
SELECT aurora_expose_to_tenants('discovery_schedules');
