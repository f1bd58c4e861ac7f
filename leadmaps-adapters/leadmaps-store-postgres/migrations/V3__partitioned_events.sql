-- V3: events partitioned by month on received_at, idempotency in leadmaps.event_ids.
--
-- Same rules as V1 and V2: runs as {{owner_role}}, every customer table carries workspace_id, leads
-- an index with it, and has RLS enabled and forced with a PERMISSIVE and a RESTRICTIVE policy for
-- {{app_role}} only.
--
-- A unique constraint on a partitioned table must include the partition key, so "one event per
-- (workspace_id, id)" can no longer live on leadmaps.events: it lives on leadmaps.event_ids, which
-- the store fills in the same transaction as the events and which decides Accepted vs Duplicate.
--
-- Row-level security and partitions: a query through leadmaps.events is checked against the
-- parent's privileges and the parent's policies only; the partitions' own settings do not apply.
-- A query naming a partition directly is checked against that partition's privileges and policies
-- only, and a partition does not inherit the parent's RLS flags or policies. So every partition is
-- made here (by leadmaps.ensure_event_partitions) with RLS enabled and forced and a copy of every
-- policy of the parent, and with no privilege for anyone but its owner: the app role reaches events
-- through the parent only, and naming a partition is refused outright (42501).

ALTER TABLE leadmaps.events RENAME TO events_v2;
ALTER TABLE leadmaps.events_v2 RENAME CONSTRAINT events_pkey TO events_v2_pkey;
ALTER INDEX leadmaps.events_workspace_received RENAME TO events_v2_workspace_received;

-- Events hold no IP and no user agent: the visitor is a 16-byte keyed hash under a daily salt.
-- Immutable for the app role (no UPDATE); deleted only by retention. The primary key leads with
-- workspace_id and serves the reads (by time, then id) and retention; each partition gets it.
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
    visitor bytea NOT NULL CONSTRAINT events_visitor_check CHECK (octet_length(visitor) = 16),
    CONSTRAINT events_pkey PRIMARY KEY (workspace_id, received_at, id),
    CONSTRAINT events_revenue_check CHECK ((revenue_amount IS NULL) = (revenue_currency IS NULL))
) PARTITION BY RANGE (received_at);

-- Every event id a workspace has stored (the events themselves may be in any partition).
CREATE TABLE leadmaps.event_ids (
    workspace_id uuid NOT NULL,
    id uuid NOT NULL,
    PRIMARY KEY (workspace_id, id)
);

-- The policies of the two write-heavy tables read the setting in a scalar subquery: PostgreSQL
-- evaluates it once per statement (an InitPlan) instead of calling current_setting() for every row
-- of every event batch, for the same result.
ALTER TABLE leadmaps.events ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.events FORCE ROW LEVEL SECURITY;
CREATE POLICY events_tenant ON leadmaps.events AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid))
    WITH CHECK (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid));
CREATE POLICY events_tenant_guard ON leadmaps.events AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid))
    WITH CHECK (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid));

ALTER TABLE leadmaps.event_ids ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.event_ids FORCE ROW LEVEL SECURITY;
CREATE POLICY event_ids_tenant ON leadmaps.event_ids AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid))
    WITH CHECK (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid));
CREATE POLICY event_ids_tenant_guard ON leadmaps.event_ids AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid))
    WITH CHECK (workspace_id = (SELECT nullif(current_setting('leadmaps.workspace_id', true), '')::uuid));

REVOKE ALL ON leadmaps.events, leadmaps.event_ids FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.events, leadmaps.event_ids FROM PUBLIC, {{app_role}}, {{lookup_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.events TO {{app_role}};
GRANT SELECT, INSERT, DELETE ON leadmaps.event_ids TO {{app_role}};

-- Makes the monthly partitions (UTC months) that cover `months` unless they exist, and returns how
-- many it made. SECURITY DEFINER as {{owner_role}}, which owns leadmaps.events: the app role calls
-- it before writing a batch whose months it has not seen, in its own short transaction (creating a
-- partition locks the parent). Each partition gets RLS enabled and forced, a copy of each of the
-- parent's policies (read from pg_policy, so partitions follow the parent by construction), the
-- parent's indexes (PostgreSQL clones partitioned indexes), and no privilege for anyone but the
-- owner. Creators are serialised by an advisory lock; at most 64 months per call, years 1970-9999.
CREATE FUNCTION leadmaps.ensure_event_partitions(months date[])
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    first_day date;
    part text;
    made integer := 0;
    pol record;
BEGIN
    IF months IS NULL OR cardinality(months) = 0 THEN
        RETURN 0;
    END IF;
    IF cardinality(months) > 64 THEN
        RAISE EXCEPTION 'at most 64 months per call' USING ERRCODE = '22023';
    END IF;
    -- A fixed key ("leadevnt" in ASCII), distinct from the migrator's ("leadmaps").
    PERFORM pg_advisory_xact_lock(7810756212570877556);
    FOR first_day IN
        SELECT DISTINCT date_trunc('month', m::timestamp)::date FROM unnest(months) AS m WHERE m IS NOT NULL ORDER BY 1
    LOOP
        IF first_day < DATE '1970-01-01' OR first_day >= DATE '10000-01-01' THEN
            RAISE EXCEPTION 'event month out of range' USING ERRCODE = '22023';
        END IF;
        part := 'events_y' || to_char(first_day::timestamp, 'YYYY') || 'm' || to_char(first_day::timestamp, 'MM');
        CONTINUE WHEN to_regclass(format('leadmaps.%I', part)) IS NOT NULL;
        EXECUTE format(
            'CREATE TABLE leadmaps.%I PARTITION OF leadmaps.events FOR VALUES FROM (%L) TO (%L)',
            part,
            to_char(first_day::timestamp, 'YYYY-MM-DD') || ' 00:00:00+00',
            to_char(first_day::timestamp + interval '1 month', 'YYYY-MM-DD') || ' 00:00:00+00');
        EXECUTE format('ALTER TABLE leadmaps.%I ENABLE ROW LEVEL SECURITY', part);
        EXECUTE format('ALTER TABLE leadmaps.%I FORCE ROW LEVEL SECURITY', part);
        EXECUTE format('REVOKE ALL ON leadmaps.%I FROM PUBLIC', part);
        FOR pol IN
            SELECT p.polname, p.polpermissive,
                   CASE p.polcmd WHEN 'r' THEN 'SELECT' WHEN 'a' THEN 'INSERT' WHEN 'w' THEN 'UPDATE'
                                 WHEN 'd' THEN 'DELETE' ELSE 'ALL' END AS command,
                   (SELECT string_agg(CASE WHEN r.oid = 0 THEN 'PUBLIC'
                                           ELSE quote_ident(pg_get_userbyid(r.oid)::text) END, ', ')
                    FROM unnest(p.polroles) AS r(oid)) AS roles,
                   pg_get_expr(p.polqual, p.polrelid) AS qual,
                   pg_get_expr(p.polwithcheck, p.polrelid) AS with_check
            FROM pg_policy AS p
            WHERE p.polrelid = 'leadmaps.events'::regclass
            ORDER BY p.polname
        LOOP
            EXECUTE format('CREATE POLICY %I ON leadmaps.%I AS %s FOR %s TO %s%s%s',
                pol.polname, part,
                CASE WHEN pol.polpermissive THEN 'PERMISSIVE' ELSE 'RESTRICTIVE' END,
                pol.command, pol.roles,
                CASE WHEN pol.qual IS NULL THEN '' ELSE ' USING (' || pol.qual || ')' END,
                CASE WHEN pol.with_check IS NULL THEN '' ELSE ' WITH CHECK (' || pol.with_check || ')' END);
        END LOOP;
        made := made + 1;
    END LOOP;
    RETURN made;
END
$fn$;

REVOKE ALL ON FUNCTION leadmaps.ensure_event_partitions(date[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.ensure_event_partitions(date[]) TO {{app_role}};

-- The rows of the unpartitioned table move over as the migrating superuser (who is not bound by
-- row-level security; the owner role sees no customer row), after the partitions they need and
-- the current and next month's exist.
RESET ROLE;
DO $move$
DECLARE
    first_day date;
BEGIN
    FOR first_day IN
        SELECT DISTINCT date_trunc('month', e.received_at AT TIME ZONE 'UTC')::date FROM leadmaps.events_v2 AS e
        UNION
        SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date
        UNION
        SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date
    LOOP
        PERFORM leadmaps.ensure_event_partitions(ARRAY[first_day]);
    END LOOP;
END
$move$;
INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name, hostname, pathname,
        referrer, props, revenue_amount, revenue_currency, interactive, visitor)
    SELECT workspace_id, id, received_at, domain, name, hostname, pathname, referrer, props,
        revenue_amount, revenue_currency, interactive, visitor
    FROM leadmaps.events_v2;
INSERT INTO leadmaps.event_ids (workspace_id, id) SELECT workspace_id, id FROM leadmaps.events_v2;
DROP TABLE leadmaps.events_v2;
SET LOCAL ROLE {{owner_role}};
