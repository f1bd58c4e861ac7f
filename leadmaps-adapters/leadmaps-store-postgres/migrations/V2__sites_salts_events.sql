-- V2: sites and blocked ranges, daily salts and their destruction records, events and filter
-- counts. Same rules as V1: runs as {{owner_role}}, every customer table carries workspace_id,
-- leads an index with it, and has RLS enabled and forced with a PERMISSIVE and a RESTRICTIVE
-- policy for {{app_role}} only.

-- The workspace's blocked client ranges, as canonical text (`198.51.100.0/24`), read back exactly.
ALTER TABLE leadmaps.workspaces ADD COLUMN blocked_ips text[] NOT NULL DEFAULT '{}';

-- A domain belongs to one site in the whole instance: the unique index on domain alone says so.
-- (So adding a domain another workspace has is a conflict: the contract, and the one fact about
-- other workspaces the app role can learn.)
CREATE TABLE leadmaps.sites (
    workspace_id uuid NOT NULL,
    domain text COLLATE "C" NOT NULL CHECK (octet_length(domain) BETWEEN 1 AND 253),
    created_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, domain)
);
CREATE UNIQUE INDEX sites_domain_key ON leadmaps.sites (domain);

CREATE TABLE leadmaps.salts (
    workspace_id uuid NOT NULL,
    day date NOT NULL,
    blob bytea NOT NULL,
    PRIMARY KEY (workspace_id, day)
);

-- Append-only for the app role: the record that a salt is gone.
CREATE TABLE leadmaps.salt_destructions (
    workspace_id uuid NOT NULL,
    day date NOT NULL,
    destroyed_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, destroyed_at, day)
);

-- Events hold no IP and no user agent: the visitor is a 16-byte keyed hash under a daily salt.
-- Immutable for the app role (no UPDATE); deleted only by retention.
CREATE TABLE leadmaps.events (
    workspace_id uuid NOT NULL,
    id uuid NOT NULL,
    received_at timestamptz NOT NULL,
    domain text NOT NULL,
    name text NOT NULL,
    hostname text NOT NULL,
    pathname text NOT NULL,
    referrer text,
    props jsonb NOT NULL DEFAULT '{}',
    revenue_amount text,
    revenue_currency text,
    interactive boolean NOT NULL,
    visitor bytea NOT NULL CHECK (octet_length(visitor) = 16),
    PRIMARY KEY (workspace_id, id),
    CHECK ((revenue_amount IS NULL) = (revenue_currency IS NULL))
);
CREATE INDEX events_workspace_received ON leadmaps.events (workspace_id, received_at, id);

CREATE TABLE leadmaps.event_drops (
    workspace_id uuid NOT NULL,
    day date NOT NULL,
    reason text NOT NULL,
    count bigint NOT NULL CHECK (count >= 0),
    PRIMARY KEY (workspace_id, day, reason)
);

ALTER TABLE leadmaps.sites ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.sites FORCE ROW LEVEL SECURITY;
CREATE POLICY sites_tenant ON leadmaps.sites AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY sites_tenant_guard ON leadmaps.sites AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.salts ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.salts FORCE ROW LEVEL SECURITY;
CREATE POLICY salts_tenant ON leadmaps.salts AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY salts_tenant_guard ON leadmaps.salts AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.salt_destructions ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.salt_destructions FORCE ROW LEVEL SECURITY;
CREATE POLICY salt_destructions_tenant ON leadmaps.salt_destructions AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY salt_destructions_tenant_guard ON leadmaps.salt_destructions AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_tenant ON leadmaps.events AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY events_tenant_guard ON leadmaps.events AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.event_drops ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.event_drops FORCE ROW LEVEL SECURITY;
CREATE POLICY event_drops_tenant ON leadmaps.event_drops AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY event_drops_tenant_guard ON leadmaps.event_drops AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.sites, leadmaps.salts, leadmaps.salt_destructions, leadmaps.events,
    leadmaps.event_drops FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.sites, leadmaps.salts, leadmaps.salt_destructions, leadmaps.events,
    leadmaps.event_drops FROM PUBLIC, {{app_role}}, {{lookup_role}};

GRANT UPDATE (blocked_ips) ON leadmaps.workspaces TO {{app_role}};
GRANT SELECT, INSERT ON leadmaps.sites TO {{app_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.salts TO {{app_role}};
GRANT SELECT, INSERT ON leadmaps.salt_destructions TO {{app_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.events TO {{app_role}};
GRANT SELECT, INSERT ON leadmaps.event_drops TO {{app_role}};
GRANT UPDATE (count) ON leadmaps.event_drops TO {{app_role}};

-- Two more cross-workspace lookups: the collector routes a domain before any scope exists, and
-- salt expiry lists workspaces holding old salts. Ids, regions, ranges and days only.
GRANT SELECT (workspace_id, domain) ON leadmaps.sites TO {{lookup_role}};
GRANT SELECT (workspace_id, region, blocked_ips) ON leadmaps.workspaces TO {{lookup_role}};
GRANT SELECT (workspace_id, day) ON leadmaps.salts TO {{lookup_role}};

CREATE FUNCTION leadmaps.site_route(route_domain text)
RETURNS TABLE (route_workspace uuid, route_region text, route_blocked_ips text[])
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT s.workspace_id, w.region, w.blocked_ips
    FROM leadmaps.sites AS s JOIN leadmaps.workspaces AS w ON w.workspace_id = s.workspace_id
    WHERE s.domain = route_domain
$fn$;

CREATE FUNCTION leadmaps.workspaces_with_salts_before(before_day date, after_workspace uuid, max_rows bigint)
RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT DISTINCT s.workspace_id
    FROM leadmaps.salts AS s
    WHERE s.day < before_day
      AND (after_workspace IS NULL OR s.workspace_id > after_workspace)
    ORDER BY s.workspace_id
    LIMIT max_rows
$fn$;

REVOKE ALL ON FUNCTION leadmaps.site_route(text),
    leadmaps.workspaces_with_salts_before(date, uuid, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.site_route(text),
    leadmaps.workspaces_with_salts_before(date, uuid, bigint) TO {{app_role}};

RESET ROLE;
ALTER FUNCTION leadmaps.site_route(text) OWNER TO {{lookup_role}};
ALTER FUNCTION leadmaps.workspaces_with_salts_before(date, uuid, bigint) OWNER TO {{lookup_role}};
SET LOCAL ROLE {{owner_role}};
