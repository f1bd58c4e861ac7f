-- leadmaps SQLite schema, version 6: the dashboard IP allowlist, the retention period, and staff
-- impersonation grants.
--
-- The conventions of versions 1 to 5 hold.

-- The client ranges a workspace's dashboard and API admit, as normalised CIDR text separated by
-- single spaces (as `blocked_ips.ranges`); empty admits every address. Changed only by
-- set_workspace_policy, in the transaction that appends its `ip_allowlist.updated` record.
ALTER TABLE workspaces ADD COLUMN ip_allowlist TEXT NOT NULL DEFAULT '';

-- Days of events the workspace keeps; NULL keeps them indefinitely. The retention job deletes
-- older events in batches, each batch with its `retention.events_deleted` record.
ALTER TABLE workspaces
    ADD COLUMN retention_days INTEGER CHECK (retention_days BETWEEN 1 AND 3650);

-- A staff member's time-boxed access to one workspace. Customer data of that workspace: led by
-- `workspace_id`, and stored only in the transaction that appends its
-- `operator.impersonation.started` record to the workspace's log. Never deleted; closing sets
-- `closed_at` once (the trigger refuses every other change).
CREATE TABLE impersonation_grants (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    grant_id     BLOB    NOT NULL UNIQUE CHECK (length(grant_id) = 16),
    staff_id     BLOB    NOT NULL CHECK (length(staff_id) = 16),
    reason       TEXT    NOT NULL CHECK (length(reason) BETWEEN 1 AND 500),
    can_write    INTEGER NOT NULL CHECK (can_write IN (0, 1)),
    opened_at    INTEGER NOT NULL,
    expires_at   INTEGER NOT NULL CHECK (expires_at > opened_at),
    closed_at    INTEGER,
    PRIMARY KEY (workspace_id, grant_id)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER impersonation_grants_close_only
BEFORE UPDATE ON impersonation_grants
WHEN OLD.closed_at IS NOT NULL OR NEW.closed_at IS NULL
    OR NEW.workspace_id IS NOT OLD.workspace_id OR NEW.grant_id IS NOT OLD.grant_id
    OR NEW.staff_id IS NOT OLD.staff_id OR NEW.reason IS NOT OLD.reason
    OR NEW.can_write IS NOT OLD.can_write OR NEW.opened_at IS NOT OLD.opened_at
    OR NEW.expires_at IS NOT OLD.expires_at
BEGIN
    SELECT RAISE(ABORT, 'impersonation grants are closed once and never changed otherwise');
END;

CREATE TRIGGER impersonation_grants_no_delete
BEFORE DELETE ON impersonation_grants
BEGIN
    SELECT RAISE(ABORT, 'impersonation grants are never deleted');
END;
