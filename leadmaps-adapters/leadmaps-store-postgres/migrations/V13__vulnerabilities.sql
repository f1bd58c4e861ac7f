-- V13: vulnerability reports, DPA acceptances and sub-processor notices.
--
-- Runs as {{owner_role}}, like the migrations before it (V12 is a gap: the number is taken by
-- another line of development).
--
-- * vulnerability_reports are instance data like V11's incidents: staff handle them behind
--   BreachScope, so no workspace_id and no row-level security; the app role may read, insert and
--   UPDATE only the columns that change (version, status, body); a trigger (ENABLE ALWAYS)
--   refuses a moved receipt, a skipped version or a change of a closed report, and DELETE and
--   TRUNCATE for every role.
-- * dpa_acceptances and subprocessor_notices are customer data: led by workspace_id, ENABLE and
--   FORCE row-level security with V1's permissive and restrictive policies, each row inserted in
--   the transaction that appends its audit record (dpa.accepted, subprocessors.changed). The app
--   role may SELECT and INSERT only: append-only, and triggers refuse UPDATE, DELETE and
--   TRUNCATE for every role.

CREATE TABLE leadmaps.vulnerability_reports (
    report_id uuid PRIMARY KEY,
    version bigint NOT NULL CHECK (version >= 1),
    received_at timestamptz NOT NULL,
    recorded_at timestamptz NOT NULL,
    status text COLLATE "C" NOT NULL CHECK (status IN ('open', 'closed')),
    body text NOT NULL CHECK (octet_length(body) <= 4194304)
);
CREATE INDEX vulnerability_reports_by_receipt
    ON leadmaps.vulnerability_reports (received_at, report_id);

REVOKE ALL ON leadmaps.vulnerability_reports FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.vulnerability_reports FROM PUBLIC, {{app_role}}, {{lookup_role}};
GRANT SELECT, INSERT ON leadmaps.vulnerability_reports TO {{app_role}};
GRANT UPDATE (version, status, body) ON leadmaps.vulnerability_reports TO {{app_role}};

CREATE TRIGGER vulnerability_reports_never_deleted
    BEFORE DELETE OR TRUNCATE ON leadmaps.vulnerability_reports
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.vulnerability_reports ENABLE ALWAYS TRIGGER vulnerability_reports_never_deleted;

CREATE FUNCTION leadmaps.vulnerability_report_guard()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    IF NEW.report_id IS DISTINCT FROM OLD.report_id
        OR NEW.received_at IS DISTINCT FROM OLD.received_at
        OR NEW.recorded_at IS DISTINCT FROM OLD.recorded_at THEN
        RAISE EXCEPTION 'a report''s receipt is recorded once'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF OLD.status = 'closed' OR NEW.version IS DISTINCT FROM OLD.version + 1 THEN
        RAISE EXCEPTION 'a report changes one version at a time, and not once closed'
            USING ERRCODE = 'serialization_failure';
    END IF;
    RETURN NEW;
END
$fn$;
REVOKE ALL ON FUNCTION leadmaps.vulnerability_report_guard() FROM PUBLIC;

CREATE TRIGGER vulnerability_reports_guard
    BEFORE UPDATE ON leadmaps.vulnerability_reports
    FOR EACH ROW EXECUTE FUNCTION leadmaps.vulnerability_report_guard();
ALTER TABLE leadmaps.vulnerability_reports ENABLE ALWAYS TRIGGER vulnerability_reports_guard;

CREATE TABLE leadmaps.dpa_acceptances (
    workspace_id uuid NOT NULL,
    version text COLLATE "C" NOT NULL CHECK (octet_length(version) BETWEEN 1 AND 64),
    actor_kind text COLLATE "C" NOT NULL CHECK (octet_length(actor_kind) BETWEEN 1 AND 32),
    actor_subject text COLLATE "C" NOT NULL CHECK (octet_length(actor_subject) <= 64),
    accepted_at timestamptz NOT NULL,
    PRIMARY KEY (workspace_id, version)
);

CREATE TABLE leadmaps.subprocessor_notices (
    workspace_id uuid NOT NULL,
    version text COLLATE "C" NOT NULL CHECK (octet_length(version) BETWEEN 1 AND 200),
    notified_at timestamptz NOT NULL,
    recipients integer NOT NULL CHECK (recipients >= 0),
    PRIMARY KEY (workspace_id, version)
);

ALTER TABLE leadmaps.dpa_acceptances ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.dpa_acceptances FORCE ROW LEVEL SECURITY;
CREATE POLICY dpa_acceptances_tenant ON leadmaps.dpa_acceptances
    AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY dpa_acceptances_tenant_guard ON leadmaps.dpa_acceptances
    AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.subprocessor_notices ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.subprocessor_notices FORCE ROW LEVEL SECURITY;
CREATE POLICY subprocessor_notices_tenant ON leadmaps.subprocessor_notices
    AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY subprocessor_notices_tenant_guard ON leadmaps.subprocessor_notices
    AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.dpa_acceptances, leadmaps.subprocessor_notices FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.dpa_acceptances, leadmaps.subprocessor_notices
    FROM PUBLIC, {{app_role}}, {{lookup_role}};
GRANT SELECT, INSERT ON leadmaps.dpa_acceptances, leadmaps.subprocessor_notices TO {{app_role}};

CREATE TRIGGER dpa_acceptances_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON leadmaps.dpa_acceptances
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.dpa_acceptances ENABLE ALWAYS TRIGGER dpa_acceptances_append_only;

CREATE TRIGGER subprocessor_notices_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON leadmaps.subprocessor_notices
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.subprocessor_notices ENABLE ALWAYS TRIGGER subprocessor_notices_append_only;
