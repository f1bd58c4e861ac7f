-- leadmaps SQLite schema, version 3: authentication and identity.
--
-- The conventions of versions 1 and 2 hold, and:
-- * a TOTP or session subject is two columns: `subject_kind` ('user' or 'staff') and its 16-byte
--   `subject_id`;
-- * a token digest is two columns: the KEK id its HMAC key was derived from, and the 32-byte MAC
--   (never the token itself);
-- * the identity realm (factors, links, sessions, step-up grants, users) is instance-wide, not
--   customer data of one workspace; memberships and API keys belong to a workspace and are led
--   by `workspace_id`, but have no foreign key to `workspaces`: a membership or key may name a
--   workspace this database does not hold.

-- One TOTP factor per subject. `last_step` only grows; a claim is one conditional UPDATE.
CREATE TABLE totp_factors (
    subject_kind TEXT    NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id   BLOB    NOT NULL CHECK (length(subject_id) = 16),
    sealed_seed  BLOB    NOT NULL,
    last_step    INTEGER CHECK (last_step >= 0),
    failures     INTEGER NOT NULL CHECK (failures BETWEEN 0 AND 4294967295),
    locked_until INTEGER,
    PRIMARY KEY (subject_kind, subject_id)
) STRICT, WITHOUT ROWID;

-- Magic sign-in links by selector; taking one deletes it (a single DELETE ... RETURNING).
CREATE TABLE magic_links (
    selector   TEXT    NOT NULL PRIMARY KEY COLLATE BINARY,
    digest_kek INTEGER NOT NULL CHECK (digest_kek BETWEEN 0 AND 4294967295),
    digest_mac BLOB    NOT NULL CHECK (length(digest_mac) = 32),
    realm      TEXT    NOT NULL CHECK (realm IN ('customer', 'staff')),
    email      TEXT    NOT NULL COLLATE BINARY,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Send limits count an address's recent links.
CREATE INDEX magic_links_by_email ON magic_links (email, created_at);

-- Sessions by selector; `last_seen_at` only moves forward.
CREATE TABLE sessions (
    selector      TEXT    NOT NULL PRIMARY KEY COLLATE BINARY,
    digest_kek    INTEGER NOT NULL CHECK (digest_kek BETWEEN 0 AND 4294967295),
    digest_mac    BLOB    NOT NULL CHECK (length(digest_mac) = 32),
    subject_kind  TEXT    NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id    BLOB    NOT NULL CHECK (length(subject_id) = 16),
    second_factor INTEGER NOT NULL CHECK (second_factor IN (0, 1)),
    created_at    INTEGER NOT NULL,
    last_seen_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Revoking every session of a subject.
CREATE INDEX sessions_by_subject ON sessions (subject_kind, subject_id);

-- Single-use staff step-up grants. A rowid table: the same grant may be given twice, and each
-- is used once.
CREATE TABLE step_up_grants (
    grant_id   INTEGER PRIMARY KEY,
    staff_id   BLOB    NOT NULL CHECK (length(staff_id) = 16),
    action     TEXT    NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;

CREATE INDEX step_up_grants_by_staff ON step_up_grants (staff_id, action, expires_at);

-- Customer users; an address belongs to one user.
CREATE TABLE users (
    user_id    BLOB    NOT NULL PRIMARY KEY CHECK (length(user_id) = 16),
    email      TEXT    NOT NULL UNIQUE COLLATE BINARY,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- A user's role in a workspace. No foreign key to workspaces (see above); the user must exist.
CREATE TABLE memberships (
    workspace_id BLOB NOT NULL CHECK (length(workspace_id) = 16),
    user_id      BLOB NOT NULL REFERENCES users (user_id),
    role         TEXT NOT NULL CHECK (role IN ('viewer', 'editor', 'admin')),
    PRIMARY KEY (workspace_id, user_id)
) STRICT, WITHOUT ROWID;

-- A user's memberships across workspaces, at sign-in.
CREATE INDEX memberships_by_user ON memberships (user_id, workspace_id);

-- Workspace API keys, keyed by their id (authentication finds a key by id before any scope
-- exists); every scoped query goes through the index led by `workspace_id`. `actions` holds the
-- granted actions' stable names (`Action::as_str`), separated by single spaces, in order.
CREATE TABLE api_keys (
    key_id       BLOB    NOT NULL PRIMARY KEY CHECK (length(key_id) = 16),
    workspace_id BLOB    NOT NULL CHECK (length(workspace_id) = 16),
    name         TEXT    NOT NULL,
    actions      TEXT    NOT NULL,
    digest_kek   INTEGER NOT NULL CHECK (digest_kek BETWEEN 0 AND 4294967295),
    digest_mac   BLOB    NOT NULL CHECK (length(digest_mac) = 32),
    sealed       BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    last_used_at INTEGER,
    revoked_at   INTEGER
) STRICT, WITHOUT ROWID;

CREATE INDEX api_keys_by_workspace ON api_keys (workspace_id, created_at, key_id);
