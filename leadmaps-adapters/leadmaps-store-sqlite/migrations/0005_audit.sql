-- leadmaps SQLite schema, version 5: the tamper-evident audit log and its signed checkpoints.
--
-- The conventions of versions 1 to 4 hold, except that audit times are unix MICROseconds: sealing
-- truncates a record's time to whole microseconds (so every store, Postgres's timestamptz too,
-- keeps it exactly and the hash survives the round trip), and microseconds cover any year.
-- And:
-- * both tables are customer data of one workspace: led by `workspace_id`, with a foreign key to
--   `workspaces`;
-- * a record's actor is three columns, `AuditActor::kind`, `subject` and `grant`; its action is
--   the stable dotted name (`AuditAction::as_str`). Neither is checked against a list here, so an
--   action or actor kind added to core needs no migration; reading is strict;
-- * before, after and patch are the canonical JSON text of the sealed values (`canonical_json`),
--   so they read back as the same values and the same hash; SQL NULL is an absent before or
--   after, the text `null` is JSON null;
-- * hashes and MACs are 32-byte blobs;
-- * append-only: the triggers below refuse every UPDATE and DELETE, and an insert that is not the
--   next seq of its workspace, chained to the last record's hash (which also stops `INSERT OR
--   REPLACE`, whose deletes fire no trigger). Only someone who drops the triggers can rewrite
--   the log, and the hash chain and the checkpoints show what they did.

-- The log: one chain per workspace, seq from 1 without gaps. A rowid table (rows carry up to
-- three JSON values of up to 256 KiB); the primary key's index is the (workspace_id, seq) order
-- every read and the head lookup use, and the backstop against two records with one seq.
CREATE TABLE audit_records (
    workspace_id  BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    seq           INTEGER NOT NULL CHECK (seq >= 1),
    id            BLOB    NOT NULL CHECK (length(id) = 16),
    at            INTEGER NOT NULL,
    actor_kind    TEXT    NOT NULL,
    actor_subject TEXT    NOT NULL,
    actor_grant   BLOB    CHECK (length(actor_grant) = 16),
    action        TEXT    NOT NULL,
    target_kind   TEXT    NOT NULL,
    target_id     TEXT    NOT NULL,
    before        TEXT,
    after         TEXT,
    patch         TEXT    NOT NULL,
    request_id    TEXT,
    prev_hash     BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash          BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (workspace_id, seq),
    CHECK (actor_grant IS NULL OR actor_kind = 'staff')
) STRICT;

-- Signed heads of a workspace's log. The whole row is the key: storing an identical checkpoint
-- twice keeps one, and two that differ in anything (a forged MAC beside a real one) are both
-- kept for the verifier to judge. Led by (workspace_id, at, seq): the order they are read in.
CREATE TABLE audit_checkpoints (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    at           INTEGER NOT NULL,
    seq          INTEGER NOT NULL CHECK (seq >= 0),
    head_hash    BLOB    NOT NULL CHECK (length(head_hash) = 32),
    key_id       INTEGER NOT NULL CHECK (key_id BETWEEN 0 AND 4294967295),
    mac          BLOB    NOT NULL CHECK (length(mac) = 32),
    PRIMARY KEY (workspace_id, at, seq, key_id, head_hash, mac)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER audit_records_append_in_order BEFORE INSERT ON audit_records
WHEN NEW.seq IS NOT 1 + coalesce(
        (SELECT max(seq) FROM audit_records WHERE workspace_id = NEW.workspace_id), 0)
    OR NEW.prev_hash IS NOT coalesce(
        (SELECT hash FROM audit_records
         WHERE workspace_id = NEW.workspace_id AND seq = NEW.seq - 1), zeroblob(32))
BEGIN
    SELECT RAISE(ABORT, 'audit records are appended in order, each chained to the last');
END;

CREATE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
BEGIN
    SELECT RAISE(ABORT, 'audit records are append-only');
END;

CREATE TRIGGER audit_checkpoints_no_update BEFORE UPDATE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;

CREATE TRIGGER audit_checkpoints_no_delete BEFORE DELETE ON audit_checkpoints
BEGIN
    SELECT RAISE(ABORT, 'audit checkpoints are append-only');
END;
