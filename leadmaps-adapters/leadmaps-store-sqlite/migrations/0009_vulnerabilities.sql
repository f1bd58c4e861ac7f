-- leadmaps SQLite schema, version 8: vulnerability reports, DPA acceptances and sub-processor
-- notices.
--
-- The conventions of versions 1 to 7 hold; times are unix MICROseconds, as in version 7.
--
-- * `vulnerability_reports` are instance data like `breach_incidents` (staff handle them behind
--   `BreachScope`): the canonical JSON of `leadmaps_core::vulnerability::Report`, plus the
--   columns the triggers hold fixed (the receipt and the recording never move, the version only
--   moves to the next, a closed report is final). Never deleted.
-- * `dpa_acceptances` and `subprocessor_notices` are customer data, led by `workspace_id`, each
--   row stored only in the transaction that appends its audit record (`dpa.accepted`,
--   `subprocessors.changed`). Append-only: never changed, never deleted.

CREATE TABLE vulnerability_reports (
    report_id   BLOB    NOT NULL PRIMARY KEY CHECK (length(report_id) = 16),
    version     INTEGER NOT NULL CHECK (version >= 1),
    received_at INTEGER NOT NULL,
    recorded_at INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('open', 'closed')),
    body        TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX vulnerability_reports_by_receipt ON vulnerability_reports (received_at, report_id);

CREATE TRIGGER vulnerability_reports_fixed BEFORE UPDATE ON vulnerability_reports
WHEN NEW.received_at IS NOT OLD.received_at OR NEW.recorded_at IS NOT OLD.recorded_at
    OR NEW.report_id IS NOT OLD.report_id
BEGIN
    SELECT RAISE(ABORT, 'a report''s receipt is recorded once');
END;

CREATE TRIGGER vulnerability_reports_in_order BEFORE UPDATE ON vulnerability_reports
WHEN NEW.version IS NOT OLD.version + 1 OR OLD.status = 'closed'
BEGIN
    SELECT RAISE(ABORT, 'a report changes one version at a time, and not once closed');
END;

CREATE TRIGGER vulnerability_reports_no_delete BEFORE DELETE ON vulnerability_reports
BEGIN
    SELECT RAISE(ABORT, 'reports are never deleted');
END;

CREATE TABLE dpa_acceptances (
    workspace_id  BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    version       TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 64),
    actor_kind    TEXT    NOT NULL,
    actor_subject TEXT    NOT NULL,
    accepted_at   INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, version)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER dpa_acceptances_no_update BEFORE UPDATE ON dpa_acceptances
BEGIN
    SELECT RAISE(ABORT, 'DPA acceptances are append-only');
END;

CREATE TRIGGER dpa_acceptances_no_delete BEFORE DELETE ON dpa_acceptances
BEGIN
    SELECT RAISE(ABORT, 'DPA acceptances are append-only');
END;

CREATE TABLE subprocessor_notices (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    version      TEXT    NOT NULL CHECK (length(version) BETWEEN 1 AND 200),
    notified_at  INTEGER NOT NULL,
    recipients   INTEGER NOT NULL CHECK (recipients >= 0),
    PRIMARY KEY (workspace_id, version)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER subprocessor_notices_no_update BEFORE UPDATE ON subprocessor_notices
BEGIN
    SELECT RAISE(ABORT, 'sub-processor notices are append-only');
END;

CREATE TRIGGER subprocessor_notices_no_delete BEFORE DELETE ON subprocessor_notices
BEGIN
    SELECT RAISE(ABORT, 'sub-processor notices are append-only');
END;
