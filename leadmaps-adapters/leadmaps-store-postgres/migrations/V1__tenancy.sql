-- V1: workspaces, secrets, tenant keys and key checks, with forced row-level security.
--
-- The migrator runs this file as {{owner_role}} (SET LOCAL ROLE), so the NOLOGIN owner role, not
-- the superuser, owns every object here. {{app_role}} is the role the store's pool logs in as: not
-- the owner, not a member of it, NOBYPASSRLS, and granted only what the store's methods need.
-- Placeholders in double braces are replaced by the migrator with quoted role names; the checksum
-- in leadmaps.schema_migrations covers this text as written.

-- Nothing the owner creates is anyone else's by default (functions would otherwise be executable
-- by PUBLIC). Default privileges are per database, so this is repeated in every database.
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner_role}} REVOKE ALL ON TABLES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner_role}} REVOKE ALL ON SEQUENCES FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner_role}} REVOKE EXECUTE ON FUNCTIONS FROM PUBLIC;
ALTER DEFAULT PRIVILEGES FOR ROLE {{owner_role}} REVOKE USAGE ON TYPES FROM PUBLIC;

REVOKE ALL ON SCHEMA leadmaps FROM PUBLIC;
GRANT USAGE ON SCHEMA leadmaps TO {{app_role}};

-- Customer data. Every table carries workspace_id as its tenant key and leads an index with it
-- (the primary keys), so RLS and the explicit WHERE workspace_id = $1 both use the index, and the
-- schema can be distributed by workspace_id later.

CREATE TABLE leadmaps.workspaces (
    workspace_id uuid PRIMARY KEY,
    name text NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 200),
    region text NOT NULL CHECK (region IN ('eu', 'us')),
    created_at timestamptz NOT NULL
);

CREATE TABLE leadmaps.secrets (
    workspace_id uuid NOT NULL,
    -- "C" collation: names sort by bytes, as every other store sorts them.
    name text COLLATE "C" NOT NULL CHECK (octet_length(name) BETWEEN 1 AND 200),
    purpose text NOT NULL,
    blob bytea NOT NULL CHECK (octet_length(blob) <= 65536),
    PRIMARY KEY (workspace_id, name)
);

-- Versions and KEK ids are u32 in the API; bigint holds all of them.
CREATE TABLE leadmaps.tenant_keys (
    workspace_id uuid NOT NULL,
    version bigint NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    kek_id bigint NOT NULL CHECK (kek_id BETWEEN 0 AND 4294967295),
    blob bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, version)
);

-- Not customer data: one key-check canary per KEK id, sealed under that KEK.
CREATE TABLE leadmaps.key_checks (
    kek_id bigint PRIMARY KEY CHECK (kek_id BETWEEN 0 AND 4294967295),
    blob bytea NOT NULL
);

-- The second gate. ENABLE turns RLS on, FORCE makes it bind the owner role too. Policies exist for
-- the app role only: every other role (including the owner) sees and changes nothing. The
-- PERMISSIVE policy admits the scoped workspace's rows; the RESTRICTIVE one is ANDed with every
-- permissive policy, so a permissive policy added carelessly later still cannot widen access.
-- Outside a scoped transaction the setting is unset or '', nullif makes it NULL, and no row matches.

ALTER TABLE leadmaps.workspaces ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.workspaces FORCE ROW LEVEL SECURITY;
CREATE POLICY workspaces_tenant ON leadmaps.workspaces AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY workspaces_tenant_guard ON leadmaps.workspaces AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.secrets ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.secrets FORCE ROW LEVEL SECURITY;
CREATE POLICY secrets_tenant ON leadmaps.secrets AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY secrets_tenant_guard ON leadmaps.secrets AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.tenant_keys ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.tenant_keys FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_keys_tenant ON leadmaps.tenant_keys AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY tenant_keys_tenant_guard ON leadmaps.tenant_keys AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

-- Privileges: exactly what the store's methods use. No TRUNCATE (it ignores RLS), no DELETE of
-- workspaces, UPDATE only of the columns that change, key checks insert-only.
REVOKE ALL ON leadmaps.workspaces, leadmaps.secrets, leadmaps.tenant_keys, leadmaps.key_checks,
    leadmaps.schema_migrations FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.workspaces, leadmaps.secrets, leadmaps.tenant_keys, leadmaps.key_checks,
    leadmaps.schema_migrations FROM PUBLIC, {{app_role}}, {{lookup_role}};

GRANT SELECT, INSERT ON leadmaps.workspaces TO {{app_role}};
GRANT UPDATE (name) ON leadmaps.workspaces TO {{app_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.secrets TO {{app_role}};
GRANT UPDATE (purpose, blob) ON leadmaps.secrets TO {{app_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.tenant_keys TO {{app_role}};
GRANT UPDATE (kek_id, blob) ON leadmaps.tenant_keys TO {{app_role}};
GRANT SELECT, INSERT ON leadmaps.key_checks TO {{app_role}};
-- So the store can refuse to serve a database that is behind this build.
GRANT SELECT ON leadmaps.schema_migrations TO {{app_role}};

-- Key rotation needs three cross-workspace answers that RLS (rightly) hides from the app role.
-- They are SECURITY DEFINER functions with a fixed search_path that return ids and counts only.
-- Their owner, {{lookup_role}}, is NOLOGIN and BYPASSRLS (FORCE binds the owner role, so the owner
-- could not answer), and may read only the id columns it needs: never a blob.
GRANT USAGE ON SCHEMA leadmaps TO {{lookup_role}};
GRANT SELECT (workspace_id, kek_id) ON leadmaps.tenant_keys TO {{lookup_role}};

CREATE FUNCTION leadmaps.workspaces_needing_rewrap(primary_kek bigint, after_workspace uuid, max_rows bigint)
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT DISTINCT k.workspace_id
    FROM leadmaps.tenant_keys AS k
    WHERE k.kek_id <> primary_kek
      AND (after_workspace IS NULL OR k.workspace_id > after_workspace)
    ORDER BY k.workspace_id
    LIMIT max_rows
$fn$;

CREATE FUNCTION leadmaps.count_needing_rewrap(primary_kek bigint)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT count(*) FROM leadmaps.tenant_keys AS k WHERE k.kek_id <> primary_kek
$fn$;

CREATE FUNCTION leadmaps.kek_ids_in_use()
RETURNS SETOF bigint
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT DISTINCT k.kek_id FROM leadmaps.tenant_keys AS k ORDER BY k.kek_id
$fn$;

REVOKE ALL ON FUNCTION leadmaps.workspaces_needing_rewrap(bigint, uuid, bigint),
    leadmaps.count_needing_rewrap(bigint), leadmaps.kek_ids_in_use() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.workspaces_needing_rewrap(bigint, uuid, bigint),
    leadmaps.count_needing_rewrap(bigint), leadmaps.kek_ids_in_use() TO {{app_role}};

-- Handing the functions to the lookup role needs the migrating superuser: the owner role is
-- deliberately not a member of a BYPASSRLS role.
RESET ROLE;
ALTER FUNCTION leadmaps.workspaces_needing_rewrap(bigint, uuid, bigint) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.count_needing_rewrap(bigint) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.kek_ids_in_use() OWNER TO {{lookup_role}};
SET LOCAL ROLE {{owner_role}};
