-- V9: the tamper-evident audit log: hash-chained records and signed checkpoints, per workspace.
--
-- Runs as {{owner_role}}, like the migrations before it (V7 is a gap: the number is taken by
-- another line of development). Both tables are customer data: they carry workspace_id, lead an
-- index with it, and have RLS enabled and forced with a PERMISSIVE and a RESTRICTIVE policy for
-- {{app_role}} only. As for the other customer tables there is no foreign key to workspaces.
--
-- Append-only, three ways:
-- 1. privileges: the app role may SELECT and INSERT, nothing else (no UPDATE, DELETE or
--    TRUNCATE); the lookup role and PUBLIC get nothing;
-- 2. a statement trigger BEFORE UPDATE OR DELETE OR TRUNCATE on each table that raises, for every
--    role: the owner and superusers too. It is ENABLE ALWAYS, so it fires under
--    session_replication_role = replica as well; getting past it takes a deliberate
--    ALTER TABLE ... DISABLE TRIGGER by the owner or a superuser (and the doctor reports a
--    disabled one);
-- 3. what gets past both shows when the log is verified: every field of a record is under its
--    hash, each hash under the next record's, and the checkpoints are MACed under a key the
--    database never sees.
--
-- JSON is kept as text holding leadmaps_core::audit::canonical_json output, not jsonb: jsonb
-- refuses \u0000 in strings and renormalises numbers, and the record hash covers the exact value.
-- SQL NULL is an absent before/after; the JSON text 'null' is a present null.

CREATE TABLE leadmaps.audit_records (
    workspace_id uuid NOT NULL,
    -- From 1, without gaps; u64 in the API, bigint here (a store refuses a seq beyond it).
    seq bigint NOT NULL CHECK (seq >= 1),
    id uuid NOT NULL,
    -- Whole microseconds, as sealed.
    recorded_at timestamptz NOT NULL,
    -- AuditActor::kind, ::subject and ::grant.
    actor_kind text COLLATE "C" NOT NULL
        CHECK (actor_kind IN ('member', 'staff', 'api_key', 'collector', 'system')),
    actor_subject text COLLATE "C" NOT NULL CHECK (octet_length(actor_subject) <= 64),
    actor_grant uuid CHECK (actor_grant IS NULL OR actor_kind = 'staff'),
    -- AuditAction::as_str.
    action text COLLATE "C" NOT NULL CHECK (octet_length(action) BETWEEN 1 AND 64),
    target_kind text COLLATE "C" NOT NULL CHECK (octet_length(target_kind) BETWEEN 1 AND 64),
    target_id text COLLATE "C" NOT NULL CHECK (octet_length(target_id) BETWEEN 1 AND 256),
    -- Canonical JSON, at most 256 KiB each (MAX_AUDIT_JSON); NULL when absent.
    before_json text CHECK (octet_length(before_json) <= 262144),
    after_json text CHECK (octet_length(after_json) <= 262144),
    patch_json text NOT NULL CHECK (octet_length(patch_json) <= 262144),
    request_id text COLLATE "C" CHECK (octet_length(request_id) BETWEEN 1 AND 128),
    prev_hash bytea NOT NULL CHECK (octet_length(prev_hash) = 32),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    -- One record per seq (the backstop of the append lock), read in seq order through this index.
    PRIMARY KEY (workspace_id, seq),
    -- And never two records chained to one predecessor.
    CONSTRAINT audit_records_prev_hash_key UNIQUE (workspace_id, prev_hash)
);

-- A checkpoint is stored exactly as given; storing an identical one again keeps one, so every
-- field is in the key. Read in time order through it.
CREATE TABLE leadmaps.audit_checkpoints (
    workspace_id uuid NOT NULL,
    made_at timestamptz NOT NULL,
    seq bigint NOT NULL CHECK (seq >= 0),
    head_hash bytea NOT NULL CHECK (octet_length(head_hash) = 32),
    key_id bigint NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    mac bytea NOT NULL CHECK (octet_length(mac) = 32),
    PRIMARY KEY (workspace_id, made_at, seq, head_hash, key_id, mac)
);

ALTER TABLE leadmaps.audit_records ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.audit_records FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_records_tenant ON leadmaps.audit_records AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY audit_records_tenant_guard ON leadmaps.audit_records AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

ALTER TABLE leadmaps.audit_checkpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE leadmaps.audit_checkpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_checkpoints_tenant ON leadmaps.audit_checkpoints AS PERMISSIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);
CREATE POLICY audit_checkpoints_tenant_guard ON leadmaps.audit_checkpoints AS RESTRICTIVE FOR ALL TO {{app_role}}
    USING (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid)
    WITH CHECK (workspace_id = nullif(current_setting('leadmaps.workspace_id', true), '')::uuid);

REVOKE ALL ON leadmaps.audit_records, leadmaps.audit_checkpoints FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.audit_records, leadmaps.audit_checkpoints
    FROM PUBLIC, {{app_role}}, {{lookup_role}};

-- Appended and read; never updated or deleted.
GRANT SELECT, INSERT ON leadmaps.audit_records, leadmaps.audit_checkpoints TO {{app_role}};

-- The trigger function runs with the rights of whoever fires it (not SECURITY DEFINER) and only
-- raises. Nobody needs EXECUTE on it: a trigger's function is not checked against the role that
-- fires the trigger.
CREATE FUNCTION leadmaps.audit_append_only()
RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
AS $fn$
BEGIN
    RAISE EXCEPTION 'the audit log is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$fn$;
REVOKE ALL ON FUNCTION leadmaps.audit_append_only() FROM PUBLIC;

CREATE TRIGGER audit_records_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON leadmaps.audit_records
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.audit_records ENABLE ALWAYS TRIGGER audit_records_append_only;

CREATE TRIGGER audit_checkpoints_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON leadmaps.audit_checkpoints
    FOR EACH STATEMENT EXECUTE FUNCTION leadmaps.audit_append_only();
ALTER TABLE leadmaps.audit_checkpoints ENABLE ALWAYS TRIGGER audit_checkpoints_append_only;
