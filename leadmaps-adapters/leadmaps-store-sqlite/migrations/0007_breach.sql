-- leadmaps SQLite schema: the breach clock. Incidents, the Art. 33(5) register of every change,
-- and the notifier's delivery records.
--
-- These are instance data, not one workspace's: incidents may affect several workspaces and are
-- handled by staff, so no table is led by workspace_id (the store's tenancy rule does not apply;
-- `leadmaps_core::tenancy::BreachScope` gates them). Times are unix MICROseconds, as the audit
-- log's: the store keeps incident and delivery times to whole microseconds, like Postgres.
--
-- * `breach_incidents` holds each incident's current state as the canonical JSON of
--   `leadmaps_core::breach::Incident`, plus the columns the triggers hold fixed: the awareness
--   time and the opening are recorded once, the version only moves to the next, and a closed
--   incident is final. Incidents are never deleted.
-- * `breach_register` is append-only like `audit_records`: one chain for the instance, each entry
--   the next seq chained to the last hash; no UPDATE, no DELETE.
-- * `breach_deliveries` records the notifier's claim on each (obligation, step), with a lease
--   and a token; once sent, a delivery never changes again, and none is ever deleted.

CREATE TABLE breach_incidents (
    incident_id BLOB    NOT NULL PRIMARY KEY CHECK (length(incident_id) = 16),
    version     INTEGER NOT NULL CHECK (version >= 1),
    aware_at    INTEGER NOT NULL,
    opened_at   INTEGER NOT NULL,
    status      TEXT    NOT NULL CHECK (status IN ('open', 'contained', 'resolved', 'closed')),
    body        TEXT    NOT NULL
) STRICT, WITHOUT ROWID;

-- Listing, by opening time.
CREATE INDEX breach_incidents_by_opening ON breach_incidents (opened_at, incident_id);

CREATE TRIGGER breach_incidents_fixed BEFORE UPDATE ON breach_incidents
WHEN NEW.aware_at IS NOT OLD.aware_at OR NEW.opened_at IS NOT OLD.opened_at
    OR NEW.incident_id IS NOT OLD.incident_id
BEGIN
    SELECT RAISE(ABORT, 'an incident''s awareness time and opening are recorded once');
END;

CREATE TRIGGER breach_incidents_in_order BEFORE UPDATE ON breach_incidents
WHEN NEW.version IS NOT OLD.version + 1 OR OLD.status = 'closed'
BEGIN
    SELECT RAISE(ABORT, 'an incident changes one version at a time, and not once closed');
END;

CREATE TRIGGER breach_incidents_no_delete BEFORE DELETE ON breach_incidents
BEGIN
    SELECT RAISE(ABORT, 'incidents are never deleted');
END;

CREATE TABLE breach_register (
    seq         INTEGER NOT NULL PRIMARY KEY CHECK (seq >= 1),
    at          INTEGER NOT NULL,
    incident_id BLOB    NOT NULL REFERENCES breach_incidents (incident_id),
    actor       TEXT    NOT NULL,
    change      TEXT    NOT NULL,
    snapshot    TEXT    NOT NULL,
    prev_hash   BLOB    NOT NULL CHECK (length(prev_hash) = 32),
    hash        BLOB    NOT NULL CHECK (length(hash) = 32)
) STRICT;

CREATE TRIGGER breach_register_append_in_order BEFORE INSERT ON breach_register
WHEN NEW.seq IS NOT 1 + coalesce((SELECT max(seq) FROM breach_register), 0)
    OR NEW.prev_hash IS NOT coalesce(
        (SELECT hash FROM breach_register WHERE seq = NEW.seq - 1), zeroblob(32))
BEGIN
    SELECT RAISE(ABORT, 'register entries are appended in order, each chained to the last');
END;

CREATE TRIGGER breach_register_no_update BEFORE UPDATE ON breach_register
BEGIN
    SELECT RAISE(ABORT, 'the breach register is append-only');
END;

CREATE TRIGGER breach_register_no_delete BEFORE DELETE ON breach_register
BEGIN
    SELECT RAISE(ABORT, 'the breach register is append-only');
END;

CREATE TABLE breach_deliveries (
    incident_id   BLOB    NOT NULL REFERENCES breach_incidents (incident_id),
    obligation_id BLOB    NOT NULL CHECK (length(obligation_id) = 16),
    step          TEXT    NOT NULL CHECK (length(step) BETWEEN 1 AND 64),
    token         BLOB    NOT NULL CHECK (length(token) = 16),
    lease_until   INTEGER NOT NULL,
    attempts      INTEGER NOT NULL CHECK (attempts >= 1),
    claimed_at    INTEGER NOT NULL,
    sent_at       INTEGER,
    PRIMARY KEY (incident_id, obligation_id, step)
) STRICT, WITHOUT ROWID;

CREATE TRIGGER breach_deliveries_sent_is_final BEFORE UPDATE ON breach_deliveries
WHEN OLD.sent_at IS NOT NULL
BEGIN
    SELECT RAISE(ABORT, 'a sent delivery never changes');
END;

CREATE TRIGGER breach_deliveries_no_delete BEFORE DELETE ON breach_deliveries
BEGIN
    SELECT RAISE(ABORT, 'deliveries are never deleted');
END;
