-- V5: customer users, their workspace memberships, and workspace API keys.
--
-- Runs as {{owner_role}}, like V1 to V4. `users` is identity data like the V4 tables: no
-- workspace_id (a user may belong to several workspaces), so no row-level security; the gate is
-- privileges. `memberships` and `api_keys` are customer data: they carry workspace_id, lead an
-- index with it, and have RLS enabled and forced with a PERMISSIVE and a RESTRICTIVE policy for
-- {{app_role}} only. As for the other customer tables there is no foreign key to workspaces.
--
-- Three questions are asked before any scope exists, so they are SECURITY DEFINER functions owned
-- by {{lookup_role}} with a fixed search_path: a user's memberships (to build the principal), an
-- API key by id (to authenticate it), and recording a key's use (moves last_used_at forward only).

CREATE TABLE leadmaps.users (
    id uuid PRIMARY KEY,
    -- "C" collation: an address matches byte for byte (the domain is lower-cased by the caller).
    email text COLLATE "C" NOT NULL CHECK (octet_length(email) BETWEEN 3 AND 254),
    created_at timestamptz NOT NULL,
    CONSTRAINT users_email_key UNIQUE (email)
);

-- One role per user and workspace. The foreign key to users holds whatever deletes users later;
-- set_membership also checks the user in its own statement.
CREATE TABLE leadmaps.memberships (
    workspace_id uuid NOT NULL,
    user_id uuid NOT NULL REFERENCES leadmaps.users (id),
    role text NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    PRIMARY KEY (workspace_id, user_id)
);
-- A user's memberships, for leadmaps.memberships_of_user (and the foreign key).
CREATE INDEX memberships_user ON leadmaps.memberships (user_id, workspace_id);

-- Keys are found by their public id alone (authentication), so the id is the primary key; the
-- workspace's keys are listed oldest first through the index led by workspace_id. The token is
-- kept only as an HMAC (digest) and sealed under the workspace's tenant key.
CREATE TABLE leadmaps.api_keys (
    id uuid PRIMARY KEY,
    workspace_id uuid NOT NULL,
    name text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 200),
    -- Action::as_str names.
    actions text[] NOT NULL
        CHECK (cardinality(actions) <= 64 AND array_position(actions, NULL) IS NULL),
    digest_key_id bigint NOT NULL CHECK (digest_key_id BETWEEN 0 AND 4294967295),
    digest_mac bytea NOT NULL CHECK (octet_length(digest_mac) = 32),
    sealed bytea NOT NULL CHECK (octet_length(sealed) <= 65536),
    created_at timestamptz NOT NULL,
    last_used_at timestamptz,
    revoked_at timestamptz
);
CREATE INDEX api_keys_workspace ON leadmaps.api_keys (workspace_id, created_at, id);

ALTER TABLE leadmaps.memberships ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.memberships FORCE ROW LEVEL SECURITY;
CREATE POLICY memberships_tenant ON leadmaps.memberships AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY memberships_tenant_guard ON leadmaps.memberships AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.api_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.api_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY api_keys_tenant ON leadmaps.api_keys AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY api_keys_tenant_guard ON leadmaps.api_keys AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.users, leadmaps.memberships, leadmaps.api_keys FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.users, leadmaps.memberships, leadmaps.api_keys
    FROM PUBLIC, {{app_role}}, {{lookup_role}};

-- Users are created and found by address; never updated or deleted by the app role.
GRANT SELECT, INSERT ON leadmaps.users TO {{app_role}};
-- Memberships are upserted (the role changes); never deleted by the app role.
GRANT SELECT, INSERT ON leadmaps.memberships TO {{app_role}};
GRANT UPDATE (role) ON leadmaps.memberships TO {{app_role}};
-- Keys are inserted, listed and revoked; their use is recorded by leadmaps.touch_api_key.
GRANT SELECT, INSERT ON leadmaps.api_keys TO {{app_role}};
GRANT UPDATE (revoked_at) ON leadmaps.api_keys TO {{app_role}};

-- The lookup role reads only what its functions return (and the key they look up by): a
-- membership's workspace and role by user; the one API key row asked for (its record is the
-- authentication answer); and it may move last_used_at.
GRANT SELECT (workspace_id, user_id, role) ON leadmaps.memberships TO {{lookup_role}};
GRANT SELECT (id, workspace_id, name, actions, digest_key_id, digest_mac, sealed, created_at,
    last_used_at, revoked_at) ON leadmaps.api_keys TO {{lookup_role}};
GRANT UPDATE (last_used_at) ON leadmaps.api_keys TO {{lookup_role}};

CREATE FUNCTION leadmaps.memberships_of_user(member_user uuid)
RETURNS TABLE (member_workspace uuid, member_role text)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT m.workspace_id, m.role
    FROM leadmaps.memberships AS m
    WHERE m.user_id = member_user
    ORDER BY m.workspace_id
$fn$;

CREATE FUNCTION leadmaps.api_key_for_auth(auth_key uuid)
RETURNS TABLE (key_id uuid, key_workspace uuid, key_name text, key_actions text[],
    key_digest_key_id bigint, key_digest_mac bytea, key_sealed bytea, key_created_at timestamptz,
    key_last_used_at timestamptz, key_revoked_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT k.id, k.workspace_id, k.name, k.actions, k.digest_key_id, k.digest_mac, k.sealed,
           k.created_at, k.last_used_at, k.revoked_at
    FROM leadmaps.api_keys AS k
    WHERE k.id = auth_key
$fn$;

-- Forward only, and no write (no dead row) when the time would not move it.
CREATE FUNCTION leadmaps.touch_api_key(touched_key uuid, used_at timestamptz)
RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    UPDATE leadmaps.api_keys AS k
    SET last_used_at = GREATEST(k.last_used_at, used_at)
    WHERE k.id = touched_key AND (k.last_used_at IS NULL OR k.last_used_at < used_at)
$fn$;

REVOKE ALL ON FUNCTION leadmaps.memberships_of_user(uuid), leadmaps.api_key_for_auth(uuid),
    leadmaps.touch_api_key(uuid, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.memberships_of_user(uuid), leadmaps.api_key_for_auth(uuid),
    leadmaps.touch_api_key(uuid, timestamptz) TO {{app_role}};

RESET ROLE;
ALTER FUNCTION leadmaps.memberships_of_user(uuid) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.api_key_for_auth(uuid) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.touch_api_key(uuid, timestamptz) OWNER TO {{lookup_role}};
SET LOCAL ROLE {{owner_role}};
