-- leadmaps SQLite schema, version 4: workspace TOTP policy, confirmed TOTP factors, second-factor
-- tries per session, recovery codes, staff identities.
--
-- The conventions of versions 1 to 3 hold. Recovery codes and staff belong to the identity realm:
-- instance-wide, keyed by a subject or a staff member, not customer data of one workspace.

-- A workspace's "require TOTP" policy. A user's memberships carry it (read with a join on the
-- workspace's key), so the gate can refuse a session without a second factor.
ALTER TABLE workspaces
    ADD COLUMN require_totp INTEGER NOT NULL DEFAULT 0 CHECK (require_totp IN (0, 1));

-- Whether an enrolment was confirmed with a first code; only a confirmed factor is a second
-- factor. A factor that already accepted a code (it has a last step) was in use before
-- confirmation existed, and stays in use; one that never did is pending, as a new one would be.
ALTER TABLE totp_factors
    ADD COLUMN confirmed INTEGER NOT NULL DEFAULT 0 CHECK (confirmed IN (0, 1));

UPDATE totp_factors SET confirmed = 1 WHERE last_step IS NOT NULL;

-- Wrong second-factor codes tried in a session's sign-in challenge. Counted by one UPDATE ...
-- RETURNING; a new session starts at 0, and the count goes with its session.
ALTER TABLE sessions
    ADD COLUMN challenge_failures INTEGER NOT NULL DEFAULT 0
        CHECK (challenge_failures BETWEEN 0 AND 4294967295);

-- A subject's unused recovery codes, one row per slot: a 16-byte salt and the 32-byte Argon2id
-- hash, never the code. A new set replaces every row of the subject; using a code deletes its
-- row (one DELETE of one key), so it is used at most once and its hash does not outlive it.
CREATE TABLE recovery_codes (
    subject_kind TEXT    NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id   BLOB    NOT NULL CHECK (length(subject_id) = 16),
    slot         INTEGER NOT NULL CHECK (slot BETWEEN 0 AND 4294967295),
    salt         BLOB    NOT NULL CHECK (length(salt) = 16),
    hash         BLOB    NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (subject_kind, subject_id, slot)
) STRICT, WITHOUT ROWID;

-- leadmaps staff: identities apart from customer users (the same address may be both, as two
-- identities); an address belongs to one staff member.
CREATE TABLE staff (
    staff_id   BLOB    NOT NULL PRIMARY KEY CHECK (length(staff_id) = 16),
    email      TEXT    NOT NULL UNIQUE COLLATE BINARY,
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- The instance tenant (the nil id, `WorkspaceId::INSTANCE`): people's own secrets, such as TOTP
-- seeds, are sealed under its tenant keys, whose rows refer to a workspace row. Only the
-- identity system task reaches it through the gate; it has no members, sites or events.
INSERT INTO workspaces (workspace_id, name, region, created_at)
VALUES (zeroblob(16), 'leadmaps instance', 'eu', 0)
ON CONFLICT (workspace_id) DO NOTHING;
