-- V10: the dashboard IP allowlist, the retention period, staff impersonation grants, and the
-- id list system jobs walk.
--
-- Runs as {{owner_role}}, like the migrations before it.

-- The client ranges a workspace's dashboard and API admit (normalised CIDR text, sorted; empty
-- admits every address), and the days of events it keeps (NULL: indefinitely). Customer data
-- under the forced policies of V1; changed only by set_workspace_policy, in the transaction that
-- appends the change's audit record.
ALTER TABLE leadmaps.workspaces
    ADD COLUMN ip_allowlist text[] NOT NULL DEFAULT '{}'
        CONSTRAINT workspaces_ip_allowlist_check CHECK (cardinality(ip_allowlist) <= 100),
    ADD COLUMN retention_days integer
        CONSTRAINT workspaces_retention_days_check CHECK (retention_days BETWEEN 1 AND 3650);
GRANT UPDATE (ip_allowlist, retention_days) ON leadmaps.workspaces TO {{app_role}};

-- A staff member's time-boxed access to one workspace: customer data of that workspace, stored
-- only in the transaction that appends its `operator.impersonation.started` record. Never
-- deleted; closing sets closed_at once (the app role may update that column alone, and the
-- trigger refuses a second close).
CREATE TABLE leadmaps.impersonation_grants (
    workspace_id uuid NOT NULL,
    grant_id uuid NOT NULL,
    staff_id uuid NOT NULL,
    reason text NOT NULL CHECK (octet_length(reason) BETWEEN 1 AND 500),
    can_write boolean NOT NULL,
    opened_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL CHECK (expires_at > opened_at),
    closed_at timestamptz,
    PRIMARY KEY (workspace_id, grant_id),
    CONSTRAINT impersonation_grants_grant_id_key UNIQUE (grant_id)
);

ALTER TABLE leadmaps.impersonation_grants ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.impersonation_grants FORCE ROW LEVEL SECURITY;
CREATE POLICY impersonation_grants_tenant ON leadmaps.impersonation_grants
    AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY impersonation_grants_tenant_guard ON leadmaps.impersonation_grants
    AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.impersonation_grants FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.impersonation_grants FROM PUBLIC, {{app_role}}, {{lookup_role}};
GRANT SELECT, INSERT ON leadmaps.impersonation_grants TO {{app_role}};
GRANT UPDATE (closed_at) ON leadmaps.impersonation_grants TO {{app_role}};

CREATE FUNCTION leadmaps.impersonation_grant_closes_once()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF OLD.closed_at IS NOT NULL OR NEW.closed_at IS NULL THEN
        RAISE EXCEPTION 'an impersonation grant is closed once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION leadmaps.impersonation_grant_closes_once() FROM PUBLIC;
CREATE TRIGGER impersonation_grants_close_once
    BEFORE UPDATE ON leadmaps.impersonation_grants
    FOR EACH ROW EXECUTE FUNCTION leadmaps.impersonation_grant_closes_once();
ALTER TABLE leadmaps.impersonation_grants ENABLE ALWAYS TRIGGER impersonation_grants_close_once;

-- The staff realm reads a grant by its (random) id before any workspace is chosen, to build the
-- principal the gate then checks; and system jobs (retention, audit checkpoints) walk workspace
-- ids to get a scope for each. Both through lookup functions, as in V2: the lookup role may read
-- those columns and nothing else.
GRANT SELECT (workspace_id, grant_id, staff_id, reason, can_write, opened_at, expires_at, closed_at)
    ON leadmaps.impersonation_grants TO {{lookup_role}};

CREATE FUNCTION leadmaps.impersonation_grant(wanted uuid)
RETURNS TABLE (workspace_id uuid, grant_id uuid, staff_id uuid, reason text, can_write boolean,
               opened_at timestamptz, expires_at timestamptz, closed_at timestamptz)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT g.workspace_id, g.grant_id, g.staff_id, g.reason, g.can_write, g.opened_at,
           g.expires_at, g.closed_at
    FROM leadmaps.impersonation_grants AS g
    WHERE g.grant_id = wanted
$fn$;

CREATE FUNCTION leadmaps.workspace_ids(after_workspace uuid, max_rows bigint)
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT w.workspace_id
    FROM leadmaps.workspaces AS w
    WHERE after_workspace IS NULL OR w.workspace_id > after_workspace
    ORDER BY w.workspace_id
    LIMIT max_rows
$fn$;

REVOKE ALL ON FUNCTION leadmaps.impersonation_grant(uuid),
    leadmaps.workspace_ids(uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.impersonation_grant(uuid),
    leadmaps.workspace_ids(uuid, bigint) TO {{app_role}};

RESET ROLE;
ALTER FUNCTION leadmaps.impersonation_grant(uuid) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.workspace_ids(uuid, bigint) OWNER TO {{lookup_role}};
SET LOCAL ROLE {{owner_role}};
