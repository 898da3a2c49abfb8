-- Identity: organisations, accounts and their credentials, invitations, sessions and API tokens.
-- These tables are written by the gateway in the same transaction that appends the user.* and
-- org.* events, because a login must see a role change on the very next request and because
-- password hashes and token hashes may never be events. Secrets are stored only as hashes.
CREATE TABLE organisations (
    org_id     uuid        PRIMARY KEY,
    name       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE accounts (
    user_id             uuid        PRIMARY KEY,
    org_id              uuid        NOT NULL REFERENCES organisations,
    email               text        NOT NULL,
    display_name        text        NOT NULL,
    role                text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    -- Argon2id, in the PHC string format.
    password_hash       text        NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    password_changed_at timestamptz NOT NULL DEFAULT now(),
    removed_at          timestamptz
);
-- An address has one live account; a removed member's address can be invited again.
CREATE UNIQUE INDEX accounts_email_live ON accounts (email) WHERE removed_at IS NULL;
CREATE INDEX accounts_by_org ON accounts (org_id, role) WHERE removed_at IS NULL;

CREATE TABLE invitations (
    invitation_id uuid        PRIMARY KEY,
    org_id        uuid        NOT NULL REFERENCES organisations,
    email         text        NOT NULL,
    role          text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    -- SHA-256 of the single-use token the invitee presents.
    token_hash    bytea       NOT NULL UNIQUE,
    invited_by    uuid        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz,
    accepted_by   uuid,
    revoked_at    timestamptz
);
CREATE INDEX invitations_by_org ON invitations (org_id, created_at);

CREATE TABLE auth_sessions (
    -- SHA-256 of the session cookie's value; the value itself is known only to the browser.
    session_hash bytea       PRIMARY KEY,
    user_id      uuid        NOT NULL REFERENCES accounts,
    org_id       uuid        NOT NULL,
    -- SHA-256 of the session's CSRF token.
    csrf_hash    bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL
);
CREATE INDEX auth_sessions_by_user ON auth_sessions (user_id);

CREATE TABLE api_tokens (
    token_id     uuid        PRIMARY KEY,
    org_id       uuid        NOT NULL,
    user_id      uuid        NOT NULL REFERENCES accounts,
    name         text        NOT NULL,
    role         text        NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    -- SHA-256 of the token, which is shown once when it is created.
    token_hash   bytea       NOT NULL UNIQUE,
    created_at   timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz,
    revoked_at   timestamptz,
    last_used_at timestamptz
);
CREATE INDEX api_tokens_by_user ON api_tokens (user_id, created_at);

-- Tenancy. The gateway reads the read models as `aurora_tenant` with `aurora.org_id` set to the
-- caller's organisation for the transaction; row-level security then shows only that
-- organisation's rows, whatever the query says. The role can read nothing else: not the event
-- store, not sessions, not a hash. Roles are cluster-wide, so creating it tolerates a concurrent
-- migration of another database having done so.
DO $$
BEGIN
    CREATE ROLE aurora_tenant NOLOGIN NOSUPERUSER NOBYPASSRLS;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
DO $$
BEGIN
    EXECUTE format('GRANT aurora_tenant TO %I', current_user);
EXCEPTION WHEN OTHERS THEN
    -- Superusers may take any role without membership; others need it granted by an admin.
    RAISE NOTICE 'could not grant aurora_tenant to %: %', current_user, SQLERRM;
END
$$;

-- Shows `table_name` to tenants, one organisation at a time. Replay calls it again for the tables
-- it swaps in, since a table made `LIKE` another has neither its policies nor its grants. A table
-- without an `org_id` column fails here: every read model carries the organisation.
CREATE FUNCTION aurora_expose_to_tenants(table_name regclass, columns text DEFAULT NULL) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', table_name);
    EXECUTE format('DROP POLICY IF EXISTS org_isolation ON %s', table_name);
    EXECUTE format(
        'CREATE POLICY org_isolation ON %s FOR SELECT TO aurora_tenant '
        'USING (org_id = current_setting(''aurora.org_id'')::uuid)', table_name);
    IF columns IS NULL THEN
        EXECUTE format('GRANT SELECT ON %s TO aurora_tenant', table_name);
    ELSE
        EXECUTE format('GRANT SELECT (%s) ON %s TO aurora_tenant', columns, table_name);
    END IF;
END
$$;

SELECT aurora_expose_to_tenants('audit_log');
SELECT aurora_expose_to_tenants('chat_sessions');
SELECT aurora_expose_to_tenants('organisations');
SELECT aurora_expose_to_tenants('accounts', 'user_id, org_id, email, display_name, role, created_at, removed_at');
SELECT aurora_expose_to_tenants('invitations',
    'invitation_id, org_id, email, role, invited_by, created_at, expires_at, accepted_at, accepted_by, revoked_at');
SELECT aurora_expose_to_tenants('api_tokens',
    'token_id, org_id, user_id, name, role, created_at, expires_at, revoked_at, last_used_at');
