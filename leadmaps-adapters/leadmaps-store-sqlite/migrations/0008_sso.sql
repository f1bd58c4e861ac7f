-- leadmaps SQLite schema: plans, single sign-on and SCIM (issue 8).
--
-- The conventions of the earlier versions hold.

-- The workspace's plan (Plan::as_str) and whether it enforces SSO: customer data of the
-- workspace, read and changed by its key.
ALTER TABLE workspaces
    ADD COLUMN plan TEXT NOT NULL DEFAULT 'free'
        CHECK (plan IN ('free', 'pro', 'business', 'enterprise'));
ALTER TABLE workspaces
    ADD COLUMN enforce_sso INTEGER NOT NULL DEFAULT 0 CHECK (enforce_sso IN (0, 1));

-- Who created an API key (a member; NULL for directory tokens and keys made by tasks), so
-- deprovisioning a member revokes the keys they made in the workspace.
ALTER TABLE api_keys
    ADD COLUMN created_by BLOB CHECK (created_by IS NULL OR length(created_by) = 16);
CREATE INDEX api_keys_by_creator ON api_keys (workspace_id, created_by);

-- The workspace a session was opened for by that workspace's identity provider (NULL: a magic
-- link). Part of the session row, so it goes with the session.
ALTER TABLE sessions
    ADD COLUMN sso_workspace BLOB CHECK (sso_workspace IS NULL OR length(sso_workspace) = 16);

-- A workspace's OIDC identity provider. The client secret is a v1 envelope (context
-- `oidc_connections.client_secret`, row `oidc`); `domains` is a JSON array of lower-case domains.
CREATE TABLE oidc_connections (
    workspace_id  BLOB    NOT NULL PRIMARY KEY REFERENCES workspaces (workspace_id),
    issuer        TEXT    NOT NULL,
    client_id     TEXT    NOT NULL,
    sealed_secret BLOB    NOT NULL,
    domains       TEXT    NOT NULL,
    updated_at    INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- SCIM users and groups. `name_key` is the lower-cased userName or displayName, unique per
-- workspace and kind; `document` is the canonical JSON of every other attribute; `user_id` is
-- the linked leadmaps user of an active user.
CREATE TABLE scim_resources (
    workspace_id BLOB    NOT NULL CHECK (length(workspace_id) = 16),
    resource_id  BLOB    NOT NULL CHECK (length(resource_id) = 16),
    kind         TEXT    NOT NULL CHECK (kind IN ('user', 'group')),
    name         TEXT    NOT NULL,
    name_key     TEXT    NOT NULL,
    external_id  TEXT,
    active       INTEGER NOT NULL CHECK (active IN (0, 1)),
    user_id      BLOB    CHECK (user_id IS NULL OR length(user_id) = 16),
    document     TEXT    NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    version      INTEGER NOT NULL CHECK (version >= 1),
    PRIMARY KEY (workspace_id, resource_id)
) STRICT, WITHOUT ROWID;

CREATE UNIQUE INDEX scim_resources_by_name ON scim_resources (workspace_id, kind, name_key);
CREATE INDEX scim_resources_by_time ON scim_resources (workspace_id, kind, created_at, resource_id);
