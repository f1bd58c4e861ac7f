-- V12: plans, single sign-on and SCIM (issue 8).
--
-- Runs as {{owner_role}}, like the migrations before it. The new customer-data tables
-- (oidc_connections, scim_resources) carry workspace_id, lead their keys with it, and have row-level
-- security enabled and forced with the PERMISSIVE and RESTRICTIVE policies of V1/V5/V9, for
-- {{app_role}} only; PUBLIC gets nothing, nobody but the owner TRUNCATE. The new columns of the
-- identity tables follow V4: no workspace_id column, so no row-level security.

-- The workspace's plan (Plan::as_str) and SSO enforcement, read with the workspace and changed by
-- set_plan and set_sso_enforced alone.
ALTER TABLE leadmaps.workspaces ADD COLUMN plan text NOT NULL DEFAULT 'free'
    CONSTRAINT workspaces_plan_check CHECK (plan IN ('free', 'pro', 'business', 'enterprise'));
ALTER TABLE leadmaps.workspaces ADD COLUMN enforce_sso boolean NOT NULL DEFAULT false;
GRANT UPDATE (plan, enforce_sso) ON leadmaps.workspaces TO {{app_role}};

-- Who created an API key (a member; NULL for directory tokens and keys made by tasks): a
-- deprovisioned member's keys are revoked. Inserted with the key (V5's INSERT grant).
ALTER TABLE leadmaps.api_keys ADD COLUMN created_by uuid;
CREATE INDEX api_keys_creator ON leadmaps.api_keys (workspace_id, created_by);

-- The workspace whose identity provider opened a session (NULL: a magic link). Part of the
-- session row, so it goes with the session; inserted with it (V4's INSERT grant).
ALTER TABLE leadmaps.sessions ADD COLUMN sso_workspace uuid;

-- Deprovisioning removes a member from the workspace (row-level security keeps the delete in it).
GRANT DELETE ON leadmaps.memberships TO {{app_role}};

-- A workspace's OIDC identity provider; the client secret is a v1 envelope.
CREATE TABLE leadmaps.oidc_connections (
    workspace_id uuid PRIMARY KEY,
    issuer text NOT NULL CHECK (octet_length(issuer) BETWEEN 1 AND 1024),
    client_id text NOT NULL CHECK (octet_length(client_id) BETWEEN 1 AND 1024),
    sealed_secret bytea NOT NULL CHECK (octet_length(sealed_secret) <= 65536),
    domains text[] NOT NULL
        CHECK (cardinality(domains) BETWEEN 1 AND 50 AND array_position(domains, NULL) IS NULL),
    updated_at timestamptz NOT NULL
);

-- SCIM users and groups; name_key is the lower-cased userName or displayName, unique per
-- workspace and kind; document is the canonical JSON (as text, byte for byte) of the other
-- attributes; user_id is the linked leadmaps user of an active user.
CREATE TABLE leadmaps.scim_resources (
    workspace_id uuid NOT NULL,
    resource_id uuid NOT NULL,
    kind text NOT NULL CHECK (kind IN ('user', 'group')),
    name text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 1024),
    name_key text NOT NULL,
    external_id text CHECK (octet_length(external_id) BETWEEN 1 AND 1024),
    active boolean NOT NULL,
    user_id uuid,
    document text NOT NULL CHECK (octet_length(document) <= 65536),
    created_at timestamptz NOT NULL,
    updated_at timestamptz NOT NULL,
    version bigint NOT NULL CHECK (version >= 1),
    PRIMARY KEY (workspace_id, resource_id),
    CONSTRAINT scim_resources_name_key UNIQUE (workspace_id, kind, name_key)
);
CREATE INDEX scim_resources_by_time
    ON leadmaps.scim_resources (workspace_id, kind, created_at, resource_id);

ALTER TABLE leadmaps.oidc_connections ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.oidc_connections FORCE ROW LEVEL SECURITY;
CREATE POLICY oidc_connections_tenant ON leadmaps.oidc_connections AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY oidc_connections_tenant_guard ON leadmaps.oidc_connections AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.scim_resources ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.scim_resources FORCE ROW LEVEL SECURITY;
CREATE POLICY scim_resources_tenant ON leadmaps.scim_resources AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY scim_resources_tenant_guard ON leadmaps.scim_resources AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.oidc_connections, leadmaps.scim_resources FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.oidc_connections, leadmaps.scim_resources
    FROM PUBLIC, {{app_role}}, {{lookup_role}};
-- Rows are inserted, read, deleted, and updated only in the columns a change touches (never
-- workspace_id, never a resource's id, kind or creation time).
GRANT SELECT, INSERT, DELETE ON leadmaps.oidc_connections, leadmaps.scim_resources
    TO {{app_role}};
GRANT UPDATE (issuer, client_id, sealed_secret, domains, updated_at)
    ON leadmaps.oidc_connections TO {{app_role}};
GRANT UPDATE (name, name_key, external_id, active, user_id, document, updated_at, version)
    ON leadmaps.scim_resources TO {{app_role}};
