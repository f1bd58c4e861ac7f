-- V8: the workspace TOTP policy, confirmed TOTP factors, per-session challenge tries, recovery
-- codes and staff identities.
--
-- Runs as {{owner_role}}, like the migrations before it. `workspaces` stays customer data under the
-- forced policies of V1; the new columns and tables of identity data follow V4: no workspace_id,
-- so no row-level security, and the gate is privileges (the app role gets exactly what the store's
-- methods need, the lookup role nothing, PUBLIC nothing, nobody but the owner TRUNCATE).

-- What a workspace's admins require of its members. Read with the workspace (the table-level
-- SELECT of V1 covers it), changed by set_workspace_policy alone.
ALTER TABLE leadmaps.workspaces ADD COLUMN require_totp boolean NOT NULL DEFAULT false;
GRANT UPDATE (require_totp) ON leadmaps.workspaces TO {{app_role}};

-- A factor is pending until its first code confirms it. Every factor stored before this version
-- was an active second factor (there was no pending state), so it stays confirmed: the column is
-- added with true for the existing rows (no rewrite), and new rows default to pending.
ALTER TABLE leadmaps.totp_factors ADD COLUMN confirmed boolean NOT NULL DEFAULT true;
ALTER TABLE leadmaps.totp_factors ALTER COLUMN confirmed SET DEFAULT false;
-- put_totp replaces it with the rest of the factor.
GRANT UPDATE (confirmed) ON leadmaps.totp_factors TO {{app_role}};

-- Wrong second-factor codes tried in the sign-in challenge of this session. A session starts at
-- 0 and takes its count with it when it is deleted. record_challenge_failure only adds one, in
-- one UPDATE ... RETURNING.
ALTER TABLE leadmaps.sessions ADD COLUMN challenge_failures integer NOT NULL DEFAULT 0
    CONSTRAINT sessions_challenge_failures_check CHECK (challenge_failures >= 0);
GRANT UPDATE (challenge_failures) ON leadmaps.sessions TO {{app_role}};

-- Recovery codes, one set per subject, as Argon2id hashes with their salts (a dump yields no code).
-- A row is an unused code: using one deletes its row, so of concurrent users of one code exactly
-- one deletes it, and a used code cannot be marked unused again. A new set replaces the old one:
-- delete and insert in one transaction.
CREATE TABLE leadmaps.recovery_codes (
    subject_kind text NOT NULL CHECK (subject_kind IN ('user', 'staff')),
    subject_id uuid NOT NULL,
    slot integer NOT NULL CHECK (slot >= 0),
    salt bytea NOT NULL CHECK (octet_length(salt) = 16),
    hash bytea NOT NULL CHECK (octet_length(hash) = 32),
    PRIMARY KEY (subject_kind, subject_id, slot)
);

-- Staff members: identities apart from customer users (one address may be both, as two
-- identities). "C" collation as for users: an address matches byte for byte.
CREATE TABLE leadmaps.staff_members (
    id uuid PRIMARY KEY,
    email text COLLATE "C" NOT NULL CHECK (octet_length(email) BETWEEN 3 AND 254),
    created_at timestamptz NOT NULL,
    CONSTRAINT staff_members_email_key UNIQUE (email)
);

REVOKE ALL ON leadmaps.recovery_codes, leadmaps.staff_members FROM PUBLIC;
REVOKE TRUNCATE ON leadmaps.recovery_codes, leadmaps.staff_members
    FROM PUBLIC, {{app_role}}, {{lookup_role}};

-- Codes are inserted (a new set), listed, and deleted (replaced, or used); never updated.
GRANT SELECT, INSERT, DELETE ON leadmaps.recovery_codes TO {{app_role}};
-- Staff members are created and found by address; never updated or deleted by the app role.
GRANT SELECT, INSERT ON leadmaps.staff_members TO {{app_role}};

-- A member's principal carries each workspace's TOTP policy, so the gate can enforce it; the
-- memberships are read before any workspace is chosen, through the lookup function of V5, which
-- now answers the policy too. The lookup role may read that one more column of workspaces (a
-- flag: still never a blob or a name). A membership whose workspace row does not exist has no
-- policy: false.
GRANT SELECT (workspace_id, require_totp) ON leadmaps.workspaces TO {{lookup_role}};

-- The result type changes, which CREATE OR REPLACE cannot do. The function belongs to the lookup
-- role, so the migrating superuser drops it; it is made again as in V5 and handed back.
RESET ROLE;
DROP FUNCTION leadmaps.memberships_of_user(uuid);
SET LOCAL ROLE {{owner_role}};

CREATE FUNCTION leadmaps.memberships_of_user(member_user uuid)
RETURNS TABLE (member_workspace uuid, member_role text, member_require_totp boolean)
LANGUAGE sql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
    SELECT m.workspace_id, m.role, coalesce(w.require_totp, false)
    FROM leadmaps.memberships AS m
    LEFT JOIN leadmaps.workspaces AS w ON w.workspace_id = m.workspace_id
    WHERE m.user_id = member_user
    ORDER BY m.workspace_id
$fn$;

REVOKE ALL ON FUNCTION leadmaps.memberships_of_user(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.memberships_of_user(uuid) TO {{app_role}};

RESET ROLE;
ALTER FUNCTION leadmaps.memberships_of_user(uuid) OWNER TO {{lookup_role}};
SET LOCAL ROLE {{owner_role}};
