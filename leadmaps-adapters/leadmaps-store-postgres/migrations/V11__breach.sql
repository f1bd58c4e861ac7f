-- V11: the breach clock. Incidents, the GDPR Art. 33(5) register of every change to them, and
-- the notifier's delivery records.
--
-- Runs as {{owner_role}}, like the migrations before it (V10 is a gap: the number is taken by
-- another line of development). These are instance data, like the V4 and V5 identity tables: an
-- incident may affect several workspaces and is handled by staff, so the tables carry no
-- workspace_id and no row-level security; the application's gate is BreachScope, the database's
-- is privileges:
-- 1. the app role may read and insert; it may UPDATE only the columns that change (an incident's
--    version, status and body; a delivery's claim and sent time), never an incident's awareness
--    time or opening, never the register; it may DELETE and TRUNCATE nothing;
-- 2. triggers, ENABLE ALWAYS (they fire under session_replication_role = replica too), refuse
--    for every role, the owner and superusers included: any UPDATE, DELETE or TRUNCATE of the
--    register (the audit log's leadmaps.audit_append_only(), so the doctor checks it too);
--    an incident update that moves the awareness time or the opening, skips a version or touches
--    a closed incident; any change of a sent delivery; any DELETE or TRUNCATE of either;
-- 3. what gets past both shows in the register's hash chain (leadmaps_core::breach::
--    verify_register), which also checks that no incident's awareness time ever moved.
--
-- JSON (an incident's body, a register snapshot) is text holding canonical JSON, as in V9.

CREATE TABLE leadmaps.breach_incidents (
    incident_id uuid PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 1),
    aware_at timestamptz NOT NULL,
    opened_at timestamptz NOT NULL,
    status text COLLATE "C" NOT NULL CHECK (status IN ('open', 'contained', 'resolved', 'closed')),
    body text NOT NULL CHECK (octet_length(body) <= 4194304)
);
-- Listing, by opening time.
CREATE INDEX breach_incidents_by_opening ON leadmaps.breach_incidents (opened_at, incident_id);

CREATE TABLE leadmaps.breach_register (
    -- One chain for the instance, from 1 without gaps.
    seq bigint PRIMARY KEY CHECK (seq >= 1),
    recorded_at timestamptz NOT NULL,
    incident_id uuid NOT NULL REFERENCES leadmaps.breach_incidents (incident_id),
    actor text COLLATE "C" NOT NULL CHECK (octet_length(actor) BETWEEN 1 AND 64),
    change text COLLATE "C" NOT NULL CHECK (octet_length(change) BETWEEN 1 AND 64),
    snapshot text NOT NULL CHECK (octet_length(snapshot) <= 4194304),
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    -- Never two entries chained to one predecessor.
    CONSTRAINT breach_register_prev_hash_key UNIQUE (prev_hash)
);
CREATE INDEX breach_register_by_incident ON leadmaps.breach_register (incident_id, seq);

CREATE TABLE leadmaps.breach_deliveries (
    incident_id uuid NOT NULL REFERENCES leadmaps.breach_incidents (incident_id),
    obligation_id uuid NOT NULL,
    step text COLLATE "C" NOT NULL CHECK (octet_length(step) BETWEEN 1 AND 64),
    token uuid NOT NULL,
    lease_until timestamptz NOT NULL,
    attempts integer NOT NULL CHECK (attempts >= 1),
    claimed_at timestamptz NOT NULL,
    sent_at timestamptz,
    PRIMARY KEY (incident_id, obligation_id, step)
);

REVOKE ALL ON leadmaps.breach_incidents, leadmaps.breach_register, leadmaps.breach_deliveries
    FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.breach_incidents, leadmaps.breach_register, leadmaps.breach_deliveries
    FROM PUBLIC, {{app_role}}, {{lookup_role}};

GRANT SELECT, INSERT ON leadmaps.breach_incidents, leadmaps.breach_register,
    leadmaps.breach_deliveries TO {{app_role}};
GRANT UPDATE (version, status, body) ON leadmaps.breach_incidents TO {{app_role}};
GRANT UPDATE (token, lease_until, attempts, sent_at) ON leadmaps.breach_deliveries TO {{app_role}};

CREATE TRIGGER breach_register_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON leadmaps.breach_register
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.breach_register ENABLE ALWAYS TRIGGER breach_register_append_only;

CREATE TRIGGER breach_incidents_never_deleted
    BEFORE DELETE OR TRUNCATE ON leadmaps.breach_incidents
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.breach_incidents ENABLE ALWAYS TRIGGER breach_incidents_never_deleted;

CREATE TRIGGER breach_deliveries_never_deleted
    BEFORE DELETE OR TRUNCATE ON leadmaps.breach_deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.breach_deliveries ENABLE ALWAYS TRIGGER breach_deliveries_never_deleted;

-- Like leadmaps.audit_append_only: runs with the rights of whoever fires it and only raises.
CREATE FUNCTION leadmaps.breach_incident_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NEW.incident_id IS DISTINCT FROM OLD.incident_id
        OR NEW.aware_at IS DISTINCT FROM OLD.aware_at
        OR NEW.opened_at IS DISTINCT FROM OLD.opened_at THEN
        RAISE EXCEPTION 'an incident''s awareness time and opening are recorded once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status = 'closed' OR NEW.version IS DISTINCT FROM OLD.version + 1 THEN
        RAISE EXCEPTION 'an incident changes one version at a time, and not once closed'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION leadmaps.breach_incident_guard() FROM PUBLIC;

CREATE TRIGGER breach_incidents_guard
    BEFORE UPDATE ON leadmaps.breach_incidents
    FOR EACH ROW EXECUTE FUNCTION leadmaps.breach_incident_guard();
ALTER TABLE leadmaps.breach_incidents ENABLE ALWAYS TRIGGER breach_incidents_guard;

CREATE FUNCTION leadmaps.breach_delivery_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF OLD.sent_at IS NOT NULL
        OR NEW.incident_id IS DISTINCT FROM OLD.incident_id
        OR NEW.obligation_id IS DISTINCT FROM OLD.obligation_id
        OR NEW.step IS DISTINCT FROM OLD.step
        OR NEW.claimed_at IS DISTINCT FROM OLD.claimed_at THEN
        RAISE EXCEPTION 'a sent delivery never changes, nor does what a delivery is'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION leadmaps.breach_delivery_guard() FROM PUBLIC;

CREATE TRIGGER breach_deliveries_guard
    BEFORE UPDATE ON leadmaps.breach_deliveries
    FOR EACH ROW EXECUTE FUNCTION leadmaps.breach_delivery_guard();
ALTER TABLE leadmaps.breach_deliveries ENABLE ALWAYS TRIGGER breach_deliveries_guard;
