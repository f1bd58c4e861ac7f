//! Every statement the store runs, in one place so a test can hold them to the tenancy rule.
//!
//! The rule: a statement on a customer-data table binds the scope's workspace id as `?1` and
//! filters on `workspace_id = ?1` (or inserts it as the first column). The few statements that
//! span workspaces are listed in `UNSCOPED` with the reason; the store calls them only from
//! methods that take no scope.

/// Creates a workspace.
pub(crate) const INSERT_WORKSPACE: &str =
    "INSERT INTO workspaces (workspace_id, name, region, created_at) VALUES (?1, ?2, ?3, ?4)";
/// Reads a workspace.
pub(crate) const SELECT_WORKSPACE: &str = "SELECT workspace_id, name, region, created_at, require_totp, ip_allowlist, retention_days \
     FROM workspaces WHERE workspace_id = ?1";
/// Renames a workspace and returns it.
pub(crate) const RENAME_WORKSPACE: &str = "UPDATE workspaces SET name = ?2 WHERE workspace_id = ?1 \
     RETURNING workspace_id, name, region, created_at, require_totp, ip_allowlist, retention_days";
/// Replaces a workspace's policy and returns the workspace.
pub(crate) const SET_WORKSPACE_POLICY: &str = "UPDATE workspaces \
     SET require_totp = ?2, ip_allowlist = ?3, retention_days = ?4 \
     WHERE workspace_id = ?1 RETURNING workspace_id, name, region, created_at, require_totp, ip_allowlist, retention_days";
/// Workspace ids after `?1` (NULL: from the first), ascending, for system jobs: ids only.
pub(crate) const WORKSPACE_IDS: &str = "SELECT workspace_id FROM workspaces \
     WHERE ?1 IS NULL OR workspace_id > ?1 ORDER BY workspace_id LIMIT ?2";

/// Stores an impersonation grant.
pub(crate) const INSERT_GRANT: &str = "INSERT INTO impersonation_grants \
     (workspace_id, grant_id, staff_id, reason, can_write, opened_at, expires_at) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// A grant by id, for the staff realm before a scope exists.
pub(crate) const SELECT_GRANT: &str = "SELECT workspace_id, grant_id, staff_id, reason, can_write, \
     opened_at, expires_at, closed_at FROM impersonation_grants WHERE grant_id = ?1";
/// Closes an open grant of the workspace.
pub(crate) const CLOSE_GRANT: &str = "UPDATE impersonation_grants SET closed_at = ?3 \
     WHERE workspace_id = ?1 AND grant_id = ?2 AND closed_at IS NULL";

/// Inserts or replaces a secret.
pub(crate) const UPSERT_SECRET: &str = "INSERT INTO secrets (workspace_id, name, purpose, blob) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (workspace_id, name) DO UPDATE SET purpose = excluded.purpose, blob = excluded.blob";
/// Reads a secret.
pub(crate) const SELECT_SECRET: &str =
    "SELECT name, purpose, blob FROM secrets WHERE workspace_id = ?1 AND name = ?2";
/// Deletes a secret.
pub(crate) const DELETE_SECRET: &str = "DELETE FROM secrets WHERE workspace_id = ?1 AND name = ?2";
/// Names of a workspace's secrets; BINARY collation is byte order, as Rust sorts `String`s.
pub(crate) const SECRET_NAMES: &str =
    "SELECT name FROM secrets WHERE workspace_id = ?1 ORDER BY name COLLATE BINARY";

/// A workspace's tenant keys, ascending by version.
pub(crate) const SELECT_TENANT_KEYS: &str = "SELECT workspace_id, version, kek_id, blob, created_at FROM tenant_keys \
     WHERE workspace_id = ?1 ORDER BY version";
/// Adds a tenant key.
pub(crate) const INSERT_TENANT_KEY: &str = "INSERT INTO tenant_keys (workspace_id, version, kek_id, blob, created_at) VALUES (?1, ?2, ?3, ?4, ?5)";
/// Rewraps one tenant key if it is still under the expected KEK: a compare-and-swap in one
/// statement, which SQLite runs atomically.
pub(crate) const REWRAP_TENANT_KEY: &str = "UPDATE tenant_keys SET kek_id = ?4, blob = ?5 \
     WHERE workspace_id = ?1 AND version = ?2 AND kek_id = ?3";
/// Crypto-shredding: every tenant key of a workspace.
pub(crate) const DELETE_TENANT_KEYS: &str = "DELETE FROM tenant_keys WHERE workspace_id = ?1";

/// First page of workspaces holding a key under another KEK than `?1`, by id bytes.
pub(crate) const NEEDING_REWRAP_FIRST: &str = "SELECT DISTINCT workspace_id FROM tenant_keys \
     WHERE kek_id <> ?1 ORDER BY workspace_id LIMIT ?2";
/// Next page, after the id `?2`.
pub(crate) const NEEDING_REWRAP_AFTER: &str = "SELECT DISTINCT workspace_id FROM tenant_keys \
     WHERE kek_id <> ?1 AND workspace_id > ?2 ORDER BY workspace_id LIMIT ?3";
/// Keys under another KEK than `?1`.
pub(crate) const COUNT_NEEDING_REWRAP: &str = "SELECT count(*) FROM tenant_keys WHERE kek_id <> ?1";
/// KEK ids wrapping at least one key.
pub(crate) const KEK_IDS_IN_USE: &str = "SELECT DISTINCT kek_id FROM tenant_keys ORDER BY kek_id";

/// After crypto-shredding: moves every WAL frame into the database file and truncates the WAL.
pub(crate) const CHECKPOINT_TRUNCATE: &str = "PRAGMA wal_checkpoint(TRUNCATE)";

/// A key check.
pub(crate) const SELECT_KEY_CHECK: &str = "SELECT blob FROM key_checks WHERE kek_id = ?1";
/// Stores a key check unless one exists.
pub(crate) const INSERT_KEY_CHECK: &str =
    "INSERT INTO key_checks (kek_id, blob) VALUES (?1, ?2) ON CONFLICT (kek_id) DO NOTHING";

/// Adds a site.
pub(crate) const INSERT_SITE: &str =
    "INSERT INTO sites (workspace_id, domain, created_at) VALUES (?1, ?2, ?3)";
/// A workspace's sites, by domain (byte order, as Rust sorts `String`s).
pub(crate) const SELECT_SITES: &str = "SELECT workspace_id, domain, created_at FROM sites \
     WHERE workspace_id = ?1 ORDER BY domain COLLATE BINARY";
/// A workspace's blocked ranges (for the audit record's "before").
pub(crate) const SELECT_BLOCKED_IPS: &str =
    "SELECT ranges FROM blocked_ips WHERE workspace_id = ?1";
/// Replaces a workspace's blocked address ranges.
pub(crate) const UPSERT_BLOCKED_IPS: &str = "INSERT INTO blocked_ips (workspace_id, ranges) VALUES (?1, ?2) \
     ON CONFLICT (workspace_id) DO UPDATE SET ranges = excluded.ranges";
/// Routing for a domain, before any scope exists: the owning workspace's id, region and blocked
/// ranges, nothing else.
pub(crate) const SITE_ROUTE: &str = "SELECT sites.workspace_id, workspaces.region, blocked_ips.ranges FROM sites \
     JOIN workspaces ON workspaces.workspace_id = sites.workspace_id \
     LEFT JOIN blocked_ips ON blocked_ips.workspace_id = sites.workspace_id \
     WHERE sites.domain = ?1";

/// The salt of one day.
pub(crate) const SELECT_SALT: &str =
    "SELECT blob FROM visitor_salts WHERE workspace_id = ?1 AND day = ?2";
/// Stores the salt of a day.
pub(crate) const INSERT_SALT: &str =
    "INSERT INTO visitor_salts (workspace_id, day, blob) VALUES (?1, ?2, ?3)";
/// Destroys the salts of days before `?2`, returning those days.
pub(crate) const DELETE_SALTS_BEFORE: &str =
    "DELETE FROM visitor_salts WHERE workspace_id = ?1 AND day < ?2 RETURNING day";
/// Records a salt destruction (the same record twice is one).
pub(crate) const INSERT_SALT_DESTRUCTION: &str = "INSERT INTO salt_destructions (workspace_id, day, destroyed_at) \
     VALUES (?1, ?2, ?3) ON CONFLICT DO NOTHING";
/// A workspace's salt destructions, oldest first.
pub(crate) const SELECT_SALT_DESTRUCTIONS: &str = "SELECT day, destroyed_at FROM salt_destructions \
     WHERE workspace_id = ?1 ORDER BY destroyed_at, day";
/// First page of workspaces holding salts of days before `?1`, by id bytes.
pub(crate) const SALTS_BEFORE_FIRST: &str = "SELECT DISTINCT workspace_id FROM visitor_salts \
     WHERE day < ?1 ORDER BY workspace_id LIMIT ?2";
/// Next page, after the id `?2`.
pub(crate) const SALTS_BEFORE_AFTER: &str = "SELECT DISTINCT workspace_id FROM visitor_salts \
     WHERE day < ?1 AND workspace_id > ?2 ORDER BY workspace_id LIMIT ?3";

/// Stores an event unless the workspace has its id: one change if stored, none if a duplicate.
/// `?1` is the event's workspace, which `append_events` checked is its scope's.
pub(crate) const INSERT_EVENT: &str = "INSERT INTO events (workspace_id, id, received_at, name, domain, hostname, \
     pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13) \
     ON CONFLICT (workspace_id, id) DO NOTHING";
/// Adds to a drop count, saturating at `i64::MAX` rather than overflowing into an error.
pub(crate) const ADD_DROP_COUNT: &str = "INSERT INTO drop_counts (workspace_id, day, reason, count) VALUES (?1, ?2, ?3, ?4) \
     ON CONFLICT (workspace_id, day, reason) DO UPDATE SET count = CASE \
     WHEN count > 9223372036854775807 - excluded.count THEN 9223372036854775807 \
     ELSE count + excluded.count END";
/// A workspace's events received in `[?2, ?3)`, oldest first, ties by id, at most `?4`.
pub(crate) const SELECT_EVENTS: &str = "SELECT id, received_at, name, domain, hostname, pathname, referrer, props, \
     revenue_amount, revenue_currency, interactive, visitor FROM events \
     WHERE workspace_id = ?1 AND received_at >= ?2 AND received_at < ?3 \
     ORDER BY received_at, id LIMIT ?4";
/// Whether a workspace has an event id.
pub(crate) const HAS_EVENT: &str =
    "SELECT EXISTS (SELECT 1 FROM events WHERE workspace_id = ?1 AND id = ?2)";
/// A workspace's drop counts.
pub(crate) const SELECT_DROP_COUNTS: &str =
    "SELECT day, reason, count FROM drop_counts WHERE workspace_id = ?1";
/// Deletes at most `?3` of a workspace's events received before `?2`, oldest first; retention
/// runs it until it deletes fewer, each run its own short transaction. The outer filter repeats
/// the workspace as `+workspace_id` (the unary plus keeps it out of index selection) so the rows
/// are found by rowid, not by a scan of the workspace's time index per batch.
pub(crate) const DELETE_EVENTS_BEFORE: &str = "DELETE FROM events WHERE +workspace_id = ?1 AND rowid IN \
     (SELECT rowid FROM events WHERE workspace_id = ?1 AND received_at < ?2 \
     ORDER BY received_at, id LIMIT ?3)";

// Authentication and identity. The identity realm (TOTP factors, links, sessions, recovery
// codes, step-up grants, users, staff) is instance-wide: its statements are in `IDENTITY`, keyed
// by a subject, a selector, a staff member, a user, an address or an API key id. Memberships and
// API keys belong to a workspace: the statements that list or change them are scoped like any
// other.

/// Stores or replaces a subject's TOTP factor.
pub(crate) const UPSERT_TOTP: &str = "INSERT INTO totp_factors (subject_kind, subject_id, sealed_seed, last_step, failures, \
     locked_until, confirmed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) \
     ON CONFLICT (subject_kind, subject_id) DO UPDATE SET \
     sealed_seed = excluded.sealed_seed, last_step = excluded.last_step, \
     failures = excluded.failures, locked_until = excluded.locked_until, \
     confirmed = excluded.confirmed";
/// A subject's TOTP factor.
pub(crate) const SELECT_TOTP: &str = "SELECT sealed_seed, last_step, failures, locked_until, confirmed \
     FROM totp_factors WHERE subject_kind = ?1 AND subject_id = ?2";
/// Claims a time step: one conditional UPDATE, which changes the row only for a step above the
/// last one, so of concurrent claims of one step exactly one changes it. Resets the failures.
pub(crate) const CLAIM_TOTP_STEP: &str = "UPDATE totp_factors SET last_step = ?3, failures = 0, locked_until = NULL \
     WHERE subject_kind = ?1 AND subject_id = ?2 AND coalesce(last_step, -1) < ?3";
/// Counts a failure (saturating) and locks until `?3` once the count reaches `?4`; returns the
/// count. SET expressions read the row as it was before the UPDATE.
pub(crate) const RECORD_TOTP_FAILURE: &str = "UPDATE totp_factors SET failures = min(failures + 1, 4294967295), \
     locked_until = CASE WHEN min(failures + 1, 4294967295) >= ?4 THEN ?3 ELSE locked_until END \
     WHERE subject_kind = ?1 AND subject_id = ?2 RETURNING failures";

/// Stores a magic link.
pub(crate) const INSERT_LINK: &str = "INSERT INTO magic_links (selector, digest_kek, digest_mac, realm, email, created_at, \
     expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/// A magic link, not consumed.
pub(crate) const SELECT_LINK: &str = "SELECT selector, digest_kek, digest_mac, realm, email, created_at, expires_at \
     FROM magic_links WHERE selector = ?1";
/// Takes a link still valid at `?2`: one DELETE ... RETURNING, so it is taken at most once.
pub(crate) const TAKE_LINK: &str = "DELETE FROM magic_links WHERE selector = ?1 AND expires_at > ?2 \
     RETURNING selector, digest_kek, digest_mac, realm, email, created_at, expires_at";
/// How many links an address was sent since `?2`, and the latest send.
pub(crate) const LINKS_SENT: &str = "SELECT count(*), max(created_at) FROM magic_links \
     WHERE email = ?1 AND created_at >= ?2";

/// Stores a session.
pub(crate) const INSERT_SESSION: &str = "INSERT INTO sessions (selector, digest_kek, digest_mac, subject_kind, subject_id, \
     second_factor, created_at, last_seen_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
/// A session.
pub(crate) const SELECT_SESSION: &str = "SELECT selector, digest_kek, digest_mac, subject_kind, subject_id, second_factor, \
     created_at, last_seen_at FROM sessions WHERE selector = ?1";
/// Moves a session's last-seen time forward, never back.
pub(crate) const TOUCH_SESSION: &str =
    "UPDATE sessions SET last_seen_at = ?2 WHERE selector = ?1 AND last_seen_at < ?2";
/// Revokes one session.
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE selector = ?1";
/// Revokes every session of a subject.
pub(crate) const DELETE_SUBJECT_SESSIONS: &str =
    "DELETE FROM sessions WHERE subject_kind = ?1 AND subject_id = ?2";
/// Counts a wrong second-factor try of a session's challenge (saturating) and returns the count:
/// one UPDATE ... RETURNING, so concurrent tries each see their own count. No row: no session.
pub(crate) const RECORD_CHALLENGE_FAILURE: &str = "UPDATE sessions \
     SET challenge_failures = min(challenge_failures + 1, 4294967295) \
     WHERE selector = ?1 RETURNING challenge_failures";

/// Drops a subject's recovery codes, before a new set is stored in the same transaction.
pub(crate) const DELETE_RECOVERY_CODES: &str =
    "DELETE FROM recovery_codes WHERE subject_kind = ?1 AND subject_id = ?2";
/// Stores one recovery code of a subject.
pub(crate) const INSERT_RECOVERY_CODE: &str = "INSERT INTO recovery_codes (subject_kind, subject_id, slot, salt, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5)";
/// A subject's unused recovery codes, by slot.
pub(crate) const SELECT_RECOVERY_CODES: &str = "SELECT slot, salt, hash FROM recovery_codes \
     WHERE subject_kind = ?1 AND subject_id = ?2 ORDER BY slot";
/// Uses a recovery code: one DELETE of one key, so of concurrent uses of a slot one deletes it.
pub(crate) const USE_RECOVERY_CODE: &str =
    "DELETE FROM recovery_codes WHERE subject_kind = ?1 AND subject_id = ?2 AND slot = ?3";

/// Grants a step-up.
pub(crate) const INSERT_STEP_UP: &str =
    "INSERT INTO step_up_grants (staff_id, action, expires_at) VALUES (?1, ?2, ?3)";
/// Takes one grant of a staff member for an action, valid at `?3`: one DELETE of at most one row
/// (the grant expiring first), so concurrent takes of one grant succeed once.
pub(crate) const TAKE_STEP_UP: &str = "DELETE FROM step_up_grants WHERE staff_id = ?1 AND grant_id = \
     (SELECT grant_id FROM step_up_grants WHERE staff_id = ?1 AND action = ?2 AND expires_at > ?3 \
     ORDER BY expires_at LIMIT 1)";

/// Creates a user; an existing id or address is a conflict.
pub(crate) const INSERT_USER: &str =
    "INSERT INTO users (user_id, email, created_at) VALUES (?1, ?2, ?3)";
/// The user of an address.
pub(crate) const SELECT_USER_BY_EMAIL: &str =
    "SELECT user_id, email, created_at FROM users WHERE email = ?1";
/// A user by id.
pub(crate) const SELECT_USER: &str =
    "SELECT user_id, email, created_at FROM users WHERE user_id = ?1";
/// A member's role in the workspace (for the audit record's "before").
pub(crate) const SELECT_MEMBER_ROLE: &str =
    "SELECT role FROM memberships WHERE workspace_id = ?1 AND user_id = ?2";
/// Sets a user's role in the scope's workspace; a missing user fails the foreign key.
pub(crate) const UPSERT_MEMBERSHIP: &str = "INSERT INTO memberships (workspace_id, user_id, role) VALUES (?1, ?2, ?3) \
     ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = excluded.role";
/// A user's memberships across workspaces: workspace ids, roles and each workspace's TOTP
/// policy, the one column of `workspaces` read here, by its key (a membership of a workspace
/// this database does not hold has no policy: 0).
pub(crate) const SELECT_MEMBERSHIPS: &str = "SELECT memberships.workspace_id, role, coalesce(workspaces.require_totp, 0) \
     FROM memberships LEFT JOIN workspaces ON workspaces.workspace_id = memberships.workspace_id \
     WHERE user_id = ?1 ORDER BY memberships.workspace_id";

/// Creates a staff member; an existing id or address is a conflict.
pub(crate) const INSERT_STAFF: &str =
    "INSERT INTO staff (staff_id, email, created_at) VALUES (?1, ?2, ?3)";
/// The staff member of an address.
pub(crate) const SELECT_STAFF_BY_EMAIL: &str =
    "SELECT staff_id, email, created_at FROM staff WHERE email = ?1";
/// A staff member by id.
pub(crate) const SELECT_STAFF: &str =
    "SELECT staff_id, email, created_at FROM staff WHERE staff_id = ?1";
/// Every staff member, oldest first.
pub(crate) const LIST_STAFF: &str =
    "SELECT staff_id, email, created_at FROM staff ORDER BY created_at, staff_id";

/// Stores an API key of the scope's workspace.
pub(crate) const INSERT_API_KEY: &str = "INSERT INTO api_keys (workspace_id, key_id, name, actions, digest_kek, digest_mac, \
     sealed, created_at, last_used_at, revoked_at, created_by) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";
/// The workspace's API keys, oldest first, ties by id.
pub(crate) const SELECT_API_KEYS: &str = "SELECT key_id, workspace_id, name, actions, digest_kek, digest_mac, sealed, \
     created_at, last_used_at, revoked_at FROM api_keys WHERE workspace_id = ?1 \
     ORDER BY created_at, key_id";
/// Revokes a key of the workspace unless already revoked.
pub(crate) const REVOKE_API_KEY: &str = "UPDATE api_keys SET revoked_at = ?3 \
     WHERE workspace_id = ?1 AND key_id = ?2 AND revoked_at IS NULL";
/// An API key by id, for authentication (before any scope exists).
pub(crate) const SELECT_API_KEY: &str = "SELECT key_id, workspace_id, name, actions, digest_kek, digest_mac, sealed, \
     created_at, last_used_at, revoked_at FROM api_keys WHERE key_id = ?1";
/// Moves a key's last-use time forward, never back.
pub(crate) const TOUCH_API_KEY: &str = "UPDATE api_keys SET last_used_at = ?2 \
     WHERE key_id = ?1 AND coalesce(last_used_at, -9223372036854775808) < ?2";

// Plans, SSO and SCIM (issue 8).

/// A workspace's plan and SSO enforcement.
pub(crate) const SELECT_SSO_SETTINGS: &str =
    "SELECT plan, enforce_sso FROM workspaces WHERE workspace_id = ?1";
/// Sets a workspace's plan.
pub(crate) const SET_PLAN: &str = "UPDATE workspaces SET plan = ?2 WHERE workspace_id = ?1";
/// Sets whether a workspace enforces SSO.
pub(crate) const SET_ENFORCE_SSO: &str =
    "UPDATE workspaces SET enforce_sso = ?2 WHERE workspace_id = ?1";
/// A workspace's OIDC connection.
pub(crate) const SELECT_OIDC: &str = "SELECT issuer, client_id, sealed_secret, domains, updated_at \
     FROM oidc_connections WHERE workspace_id = ?1";
/// Stores or replaces a workspace's OIDC connection.
pub(crate) const UPSERT_OIDC: &str = "INSERT INTO oidc_connections (workspace_id, issuer, client_id, sealed_secret, \
     domains, updated_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (workspace_id) DO UPDATE SET \
     issuer = excluded.issuer, client_id = excluded.client_id, sealed_secret = excluded.sealed_secret, \
     domains = excluded.domains, updated_at = excluded.updated_at";
/// Removes a workspace's OIDC connection.
pub(crate) const DELETE_OIDC: &str = "DELETE FROM oidc_connections WHERE workspace_id = ?1";
/// Stores a session opened by a workspace's identity provider, bound to it.
pub(crate) const INSERT_SSO_SESSION: &str = "INSERT INTO sessions (selector, digest_kek, digest_mac, subject_kind, \
     subject_id, second_factor, created_at, last_seen_at, sso_workspace) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
/// The workspace a session is bound to.
pub(crate) const SELECT_SSO_SESSION: &str =
    "SELECT sso_workspace FROM sessions WHERE selector = ?1";
/// Rotation: deletes a session and returns its binding, for the session that replaces it.
pub(crate) const TAKE_SESSION_BINDING: &str =
    "DELETE FROM sessions WHERE selector = ?1 RETURNING sso_workspace";
/// Deprovisioning: a customer's pending magic links.
pub(crate) const DELETE_CUSTOMER_LINKS: &str =
    "DELETE FROM magic_links WHERE email = ?1 AND realm = 'customer'";
/// Deprovisioning: a user's membership of the workspace.
pub(crate) const DELETE_MEMBERSHIP: &str =
    "DELETE FROM memberships WHERE workspace_id = ?1 AND user_id = ?2";
/// Provisioning: a user becomes a viewer unless they have a role.
pub(crate) const ADMIT_MEMBER: &str = "INSERT INTO memberships (workspace_id, user_id, role) VALUES (?1, ?2, 'viewer') \
     ON CONFLICT (workspace_id, user_id) DO NOTHING";
/// Deprovisioning: the live API keys a user created in the workspace.
pub(crate) const REVOKE_CREATED_KEYS: &str = "UPDATE api_keys SET revoked_at = ?3 \
     WHERE workspace_id = ?1 AND created_by = ?2 AND revoked_at IS NULL";
/// A workspace's SCIM resources of a kind, by creation.
pub(crate) const SELECT_SCIM_RESOURCES: &str = "SELECT resource_id, kind, name, external_id, active, user_id, \
     document, created_at, updated_at, version FROM scim_resources \
     WHERE workspace_id = ?1 AND kind = ?2 ORDER BY created_at, resource_id";
/// One SCIM resource.
pub(crate) const SELECT_SCIM_RESOURCE: &str = "SELECT resource_id, kind, name, external_id, active, user_id, \
     document, created_at, updated_at, version FROM scim_resources \
     WHERE workspace_id = ?1 AND resource_id = ?2 AND kind = ?3";
/// Adds a SCIM resource.
pub(crate) const INSERT_SCIM_RESOURCE: &str = "INSERT INTO scim_resources (workspace_id, resource_id, kind, name, \
     name_key, external_id, active, user_id, document, created_at, updated_at, version) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
/// Replaces a SCIM resource if its version is still `?12`.
pub(crate) const UPDATE_SCIM_RESOURCE: &str = "UPDATE scim_resources SET name = ?4, name_key = ?5, external_id = ?6, \
     active = ?7, user_id = ?8, document = ?9, updated_at = ?10, version = ?11 \
     WHERE workspace_id = ?1 AND resource_id = ?2 AND kind = ?3 AND version = ?12";
/// Deletes a SCIM resource if its version is still `?4`.
pub(crate) const DELETE_SCIM_RESOURCE: &str = "DELETE FROM scim_resources \
     WHERE workspace_id = ?1 AND resource_id = ?2 AND kind = ?3 AND version = ?4";

// The audit log. Appends are one IMMEDIATE transaction: read the head, seal, insert.

/// The head of a workspace's log: its last record's seq and hash (no row: an empty log).
pub(crate) const SELECT_AUDIT_HEAD: &str = "SELECT seq, hash FROM audit_records \
     WHERE workspace_id = ?1 ORDER BY seq DESC LIMIT 1";
/// Appends a sealed record; the schema refuses any but the next seq, chained to the head.
pub(crate) const INSERT_AUDIT_RECORD: &str = "INSERT INTO audit_records (workspace_id, seq, id, at, actor_kind, \
     actor_subject, actor_grant, action, target_kind, target_id, before, after, patch, request_id, \
     prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)";
/// A page of a workspace's log: at most `?3` records with a seq above `?2`, ascending.
pub(crate) const SELECT_AUDIT_RECORDS: &str = "SELECT workspace_id, seq, id, at, actor_kind, actor_subject, actor_grant, \
     action, target_kind, target_id, before, after, patch, request_id, prev_hash, hash \
     FROM audit_records WHERE workspace_id = ?1 AND seq > ?2 ORDER BY seq LIMIT ?3";
/// Stores a checkpoint unless the identical one is stored.
pub(crate) const INSERT_AUDIT_CHECKPOINT: &str = "INSERT INTO audit_checkpoints (workspace_id, at, seq, head_hash, key_id, mac) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT DO NOTHING";
/// A workspace's checkpoints, by time, then seq.
pub(crate) const SELECT_AUDIT_CHECKPOINTS: &str = "SELECT workspace_id, seq, head_hash, at, key_id, mac \
     FROM audit_checkpoints WHERE workspace_id = ?1 ORDER BY at, seq";
/// A workspace's last checkpoint, from the end of its primary key.
pub(crate) const SELECT_LAST_AUDIT_CHECKPOINT: &str = "SELECT workspace_id, seq, head_hash, at, key_id, mac \
     FROM audit_checkpoints WHERE workspace_id = ?1 \
     ORDER BY at DESC, seq DESC, key_id DESC, head_hash DESC, mac DESC LIMIT 1";

// Breach notices go to a workspace's admins.

/// The addresses of a workspace's admins, in byte order.
pub(crate) const ADMIN_ADDRESSES: &str = "SELECT email FROM memberships JOIN users USING (user_id) \
     WHERE workspace_id = ?1 AND role = 'admin' ORDER BY email";

/// Statements confined to one workspace: `?1` is always `scope.workspace()`.
#[cfg(test)]
pub(crate) const SCOPED: &[&str] = &[
    INSERT_WORKSPACE,
    SELECT_WORKSPACE,
    RENAME_WORKSPACE,
    SET_WORKSPACE_POLICY,
    INSERT_GRANT,
    CLOSE_GRANT,
    UPSERT_SECRET,
    SELECT_SECRET,
    DELETE_SECRET,
    SECRET_NAMES,
    SELECT_TENANT_KEYS,
    INSERT_TENANT_KEY,
    REWRAP_TENANT_KEY,
    DELETE_TENANT_KEYS,
    INSERT_SITE,
    SELECT_SITES,
    UPSERT_BLOCKED_IPS,
    SELECT_BLOCKED_IPS,
    SELECT_SALT,
    INSERT_SALT,
    DELETE_SALTS_BEFORE,
    INSERT_SALT_DESTRUCTION,
    SELECT_SALT_DESTRUCTIONS,
    INSERT_EVENT,
    ADD_DROP_COUNT,
    SELECT_EVENTS,
    HAS_EVENT,
    SELECT_DROP_COUNTS,
    DELETE_EVENTS_BEFORE,
    UPSERT_MEMBERSHIP,
    SELECT_MEMBER_ROLE,
    INSERT_API_KEY,
    SELECT_API_KEYS,
    REVOKE_API_KEY,
    SELECT_AUDIT_HEAD,
    INSERT_AUDIT_RECORD,
    SELECT_AUDIT_RECORDS,
    INSERT_AUDIT_CHECKPOINT,
    SELECT_AUDIT_CHECKPOINTS,
    SELECT_LAST_AUDIT_CHECKPOINT,
    ADMIN_ADDRESSES,
    SELECT_SSO_SETTINGS,
    SET_PLAN,
    SET_ENFORCE_SSO,
    SELECT_OIDC,
    UPSERT_OIDC,
    DELETE_OIDC,
    DELETE_MEMBERSHIP,
    ADMIT_MEMBER,
    REVOKE_CREATED_KEYS,
    SELECT_SCIM_RESOURCES,
    SELECT_SCIM_RESOURCE,
    INSERT_SCIM_RESOURCE,
    UPDATE_SCIM_RESOURCE,
    DELETE_SCIM_RESOURCE,
];

/// Statements that span workspaces, each used only by a scope-less trait method that returns ids,
/// counts or KEK ids (key rotation, salt destruction), a domain's routing (the collector), or by
/// the instance-wide key checks.
#[cfg(test)]
pub(crate) const UNSCOPED: &[&str] = &[
    // System jobs list workspace ids (no other column) to get a scope for each.
    WORKSPACE_IDS,
    // The staff realm reads a grant by its id to build the principal the gate then checks.
    SELECT_GRANT,
    SITE_ROUTE,
    SALTS_BEFORE_FIRST,
    SALTS_BEFORE_AFTER,
    NEEDING_REWRAP_FIRST,
    NEEDING_REWRAP_AFTER,
    COUNT_NEEDING_REWRAP,
    KEK_IDS_IN_USE,
    SELECT_KEY_CHECK,
    INSERT_KEY_CHECK,
    CHECKPOINT_TRUNCATE,
];

/// Statements of the instance-wide identity realm, used only by methods that take no scope
/// (authentication runs before a scope exists): each is keyed by a subject, a selector, a staff
/// member, a user, an address or an API key id, never by a range across workspaces.
#[cfg(test)]
pub(crate) const IDENTITY: &[&str] = &[
    UPSERT_TOTP,
    SELECT_TOTP,
    CLAIM_TOTP_STEP,
    RECORD_TOTP_FAILURE,
    INSERT_LINK,
    SELECT_LINK,
    TAKE_LINK,
    LINKS_SENT,
    INSERT_SESSION,
    SELECT_SESSION,
    TOUCH_SESSION,
    DELETE_SESSION,
    DELETE_SUBJECT_SESSIONS,
    RECORD_CHALLENGE_FAILURE,
    DELETE_RECOVERY_CODES,
    INSERT_RECOVERY_CODE,
    SELECT_RECOVERY_CODES,
    USE_RECOVERY_CODE,
    INSERT_STEP_UP,
    TAKE_STEP_UP,
    INSERT_USER,
    SELECT_USER_BY_EMAIL,
    SELECT_USER,
    SELECT_MEMBERSHIPS,
    INSERT_STAFF,
    SELECT_STAFF_BY_EMAIL,
    SELECT_STAFF,
    LIST_STAFF,
    SELECT_API_KEY,
    TOUCH_API_KEY,
    INSERT_SSO_SESSION,
    SELECT_SSO_SESSION,
    TAKE_SESSION_BINDING,
    DELETE_CUSTOMER_LINKS,
];

#[cfg(test)]
mod tests {
    use super::*;

    /// Every table holding customer data.
    const CUSTOMER_TABLES: &[&str] = &[
        "workspaces",
        "secrets",
        "tenant_keys",
        "sites",
        "blocked_ips",
        "visitor_salts",
        "salt_destructions",
        "events",
        "drop_counts",
        "audit_records",
        "audit_checkpoints",
        "impersonation_grants",
        "oidc_connections",
        "scim_resources",
    ];

    #[test]
    fn scoped_statements_filter_on_the_scope_workspace() {
        for sql in SCOPED {
            assert!(!sql.contains(" OR "), "{sql}");
            if sql.starts_with("INSERT INTO") {
                assert!(
                    sql.contains("(workspace_id,") && sql.contains("VALUES (?1,"),
                    "not confined to ?1: {sql}"
                );
                continue;
            }
            // Every WHERE, the subqueries' too, starts with the workspace filter.
            let wheres: Vec<&str> = sql.split("WHERE ").skip(1).collect();
            assert!(!wheres.is_empty(), "no WHERE: {sql}");
            for clause in wheres {
                assert!(
                    clause.starts_with("workspace_id = ?1")
                        || clause.starts_with("+workspace_id = ?1"),
                    "not confined to ?1: {sql}"
                );
            }
        }
    }

    /// The plan of each statement on the ingest and read paths, with the bundled SQLite: key
    /// lookups and index ranges, never a scan of a table.
    #[test]
    fn hot_statements_use_their_keys() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::migrate::migrate(&mut conn).unwrap();
        let plan = |sql: &str| -> Vec<String> {
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = explain.raw_query();
            let mut steps = Vec::new();
            while let Some(row) = rows.next().unwrap() {
                steps.push(row.get::<_, String>(3).unwrap());
            }
            steps
        };
        for sql in [
            SITE_ROUTE,
            SELECT_SITES,
            SELECT_SALT,
            DELETE_SALTS_BEFORE,
            SELECT_SALT_DESTRUCTIONS,
            SELECT_EVENTS,
            HAS_EVENT,
            SELECT_DROP_COUNTS,
            DELETE_EVENTS_BEFORE,
            SELECT_AUDIT_HEAD,
            SELECT_AUDIT_RECORDS,
            SELECT_AUDIT_CHECKPOINTS,
        ] {
            let steps = plan(sql);
            assert!(
                steps
                    .iter()
                    .all(|s| !s.starts_with("SCAN ") || s == "SCAN CONSTANT ROW"),
                "{sql}: {steps:?}"
            );
            assert!(
                !steps.iter().any(|s| s.contains("TEMP B-TREE")),
                "{sql} sorts: {steps:?}"
            );
        }
        assert!(plan(SELECT_EVENTS)[0].contains("events_by_time"));
        let delete = plan(DELETE_EVENTS_BEFORE);
        assert!(
            delete[0].contains("INTEGER PRIMARY KEY (rowid=?)"),
            "retention deletes by rowid: {delete:?}"
        );
    }

    #[test]
    fn unscoped_statements_return_no_customer_data() {
        for sql in UNSCOPED {
            if sql.contains(" key_checks ") || sql.starts_with("PRAGMA ") {
                assert!(!CUSTOMER_TABLES.iter().any(|t| sql.contains(t)), "{sql}");
                continue;
            }
            // Across workspaces, only reads of ids, counts, KEK ids, a domain's routing and one
            // impersonation grant by its id (what the staff realm builds a principal from):
            // never a name, a blob or an event.
            let columns = sql
                .strip_prefix("SELECT ")
                .and_then(|rest| rest.split(" FROM ").next());
            let allowed = [
                "DISTINCT workspace_id",
                "count(*)",
                "DISTINCT kek_id",
                "sites.workspace_id, workspaces.region, blocked_ips.ranges",
                "workspace_id",
                "workspace_id, grant_id, staff_id, reason, can_write, opened_at, expires_at, closed_at",
            ];
            assert!(
                columns.is_some_and(|c| allowed.contains(&c)),
                "an unscoped statement reads more: {sql}"
            );
            assert!(!sql.contains(" events"), "{sql}");
        }
    }

    /// Identity-realm statements touch none of the workspace-owned tables above, and each filters
    /// on one key of its row (or inserts one row); the one listing, of staff for `server verify`,
    /// reads the staff table whole (a handful of rows).
    #[test]
    fn identity_statements_are_keyed_and_stay_out_of_customer_data() {
        const KEYS: &[&str] = &[
            "subject_kind = ?1 AND subject_id = ?2",
            "selector = ?1",
            "staff_id = ?1",
            "user_id = ?1",
            "email = ?1",
            "key_id = ?1",
        ];
        for sql in IDENTITY {
            if *sql == LIST_STAFF {
                assert!(sql.contains(" FROM staff ORDER BY"), "{sql}");
                continue;
            }
            // The one read of a workspace-owned table: each of a user's memberships carries its
            // workspace's TOTP policy, joined by the workspace's key, and no other column of it.
            let sql = &if *sql == SELECT_MEMBERSHIPS {
                let rest = sql
                    .replace(
                        " LEFT JOIN workspaces ON workspaces.workspace_id = memberships.workspace_id ",
                        " ",
                    )
                    .replace("workspaces.require_totp", "");
                assert!(!rest.contains("workspaces"), "{sql}");
                rest
            } else {
                (*sql).to_owned()
            };
            assert!(!sql.contains(" OR "), "{sql}");
            assert!(
                !CUSTOMER_TABLES
                    .iter()
                    .any(|t| sql.contains(&format!(" {t} ")) || sql.contains(&format!(" {t}("))),
                "{sql}"
            );
            if sql.starts_with("INSERT INTO") {
                assert!(sql.contains("VALUES (?1,"), "{sql}");
                continue;
            }
            let wheres: Vec<&str> = sql.split("WHERE ").skip(1).collect();
            assert!(!wheres.is_empty(), "no WHERE: {sql}");
            for clause in wheres {
                assert!(
                    KEYS.iter().any(|key| clause.starts_with(key)),
                    "not keyed: {sql}"
                );
            }
        }
    }

    /// The identity and API-key statements are key lookups and index ranges, never scans.
    #[test]
    fn identity_statements_use_their_keys() {
        let mut conn = rusqlite::Connection::open_in_memory().unwrap();
        crate::migrate::migrate(&mut conn).unwrap();
        for sql in IDENTITY
            .iter()
            .chain(&[SELECT_API_KEYS, REVOKE_API_KEY])
            .filter(|sql| !sql.starts_with("INSERT") && **sql != LIST_STAFF)
        {
            let mut explain = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let mut rows = explain.raw_query();
            while let Some(row) = rows.next().unwrap() {
                let step: String = row.get(3).unwrap();
                assert!(!step.starts_with("SCAN "), "{sql}: {step}");
                assert!(!step.contains("TEMP B-TREE"), "{sql} sorts: {step}");
            }
        }
    }

    #[test]
    fn every_statement_is_classified() {
        let declared = include_str!("sql.rs")
            .lines()
            .filter(|line| line.starts_with("pub(crate) const ") && line.contains(": &str"))
            .count();
        assert_eq!(
            declared,
            SCOPED.len() + UNSCOPED.len() + IDENTITY.len(),
            "add the new statement to SCOPED, UNSCOPED or IDENTITY"
        );
        assert!(
            declared <= crate::connection::STATEMENT_CACHE,
            "raise the statement cache so prepared statements are not evicted"
        );
    }
}
