-- leadmaps SQLite schema, version 1.
--
-- Conventions, held by every later migration too:
-- * ids are UUIDs as 16-byte BLOBs, so BLOB order (memcmp) is Uuid's Ord;
-- * instants are unix nanoseconds (INTEGER, UTC);
-- * u32 values are INTEGERs checked to stay within 0..=4294967295;
-- * every customer-data table has `workspace_id` leading its primary key, and every query of one
--   filters on it: SQLite has no row-level security, so those filters are the only tenancy
--   enforcement below the application gate;
-- * STRICT tables, so a wrong type is an error instead of a silent conversion.

CREATE TABLE workspaces (
    workspace_id BLOB    NOT NULL PRIMARY KEY CHECK (length(workspace_id) = 16),
    name         TEXT    NOT NULL,
    region       TEXT    NOT NULL CHECK (region IN ('eu', 'us')),
    created_at   INTEGER NOT NULL
) STRICT;

-- Sealed secrets. Only v1 envelopes live here, never plaintext.
CREATE TABLE secrets (
    workspace_id BLOB NOT NULL REFERENCES workspaces (workspace_id),
    name         TEXT NOT NULL COLLATE BINARY,
    purpose      TEXT NOT NULL,
    blob         BLOB NOT NULL,
    PRIMARY KEY (workspace_id, name)
) STRICT;

-- Tenant keys, sealed under a KEK. Deleting a workspace's rows is crypto-shredding; the
-- connection runs with secure_delete so the freed pages are overwritten.
CREATE TABLE tenant_keys (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    version      INTEGER NOT NULL CHECK (version BETWEEN 0 AND 4294967295),
    kek_id       INTEGER NOT NULL CHECK (kek_id BETWEEN 0 AND 4294967295),
    blob         BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, version)
) STRICT;

-- KEK rotation asks which KEK ids are in use and how many keys each still wraps.
CREATE INDEX tenant_keys_by_kek ON tenant_keys (kek_id);

-- Instance-wide, not customer data: one key-check canary per KEK id, written once.
CREATE TABLE key_checks (
    kek_id INTEGER NOT NULL PRIMARY KEY CHECK (kek_id BETWEEN 0 AND 4294967295),
    blob   BLOB    NOT NULL
) STRICT;
