-- leadmaps SQLite schema, version 2: sites, collector policy, daily salts, events.
--
-- The conventions of version 1 hold, and:
-- * a UTC day is an INTEGER of days since 1970-01-01 (`date(day * 86400, 'unixepoch')` shows it);
-- * a customer-data table whose key is not the workspace's (sites are keyed by their domain, which
--   is unique across the instance) has an index led by `workspace_id`, and every scoped query of
--   it filters on that column;
-- * tables of small rows read by their key are WITHOUT ROWID: the row lives in its key's b-tree.

-- A site: a domain whose events belong to one workspace. The collector routes by the domain.
CREATE TABLE sites (
    domain       TEXT    NOT NULL PRIMARY KEY COLLATE BINARY CHECK (length(domain) BETWEEN 1 AND 253),
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    created_at   INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

CREATE INDEX sites_by_workspace ON sites (workspace_id, domain);

-- The client address ranges a workspace blocks: CIDRs separated by single spaces, in the order
-- they were set. One row per workspace, replaced whole.
CREATE TABLE blocked_ips (
    workspace_id BLOB NOT NULL PRIMARY KEY REFERENCES workspaces (workspace_id),
    ranges       TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- Daily visitor-hash salts, sealed under the workspace's tenant key. Deleting one (with
-- secure_delete on, and a WAL checkpoint after) unlinks that day's visitor ids for good.
CREATE TABLE visitor_salts (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    day          INTEGER NOT NULL,
    blob         BLOB    NOT NULL,
    PRIMARY KEY (workspace_id, day)
) STRICT, WITHOUT ROWID;

-- The record each salt destruction leaves. The key orders a workspace's records oldest first.
CREATE TABLE salt_destructions (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    day          INTEGER NOT NULL,
    destroyed_at INTEGER NOT NULL,
    PRIMARY KEY (workspace_id, destroyed_at, day)
) STRICT, WITHOUT ROWID;

-- Pseudonymous events. A rowid table: rows are appended in arrival order, and the two indexes
-- (the idempotency key and the time order) stay narrow. No IP address or user agent is stored;
-- `visitor` is their keyed hash under the day's salt.
CREATE TABLE events (
    workspace_id     BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    id               BLOB    NOT NULL CHECK (length(id) = 16),
    received_at      INTEGER NOT NULL,
    name             TEXT    NOT NULL,
    domain           TEXT    NOT NULL,
    hostname         TEXT    NOT NULL,
    pathname         TEXT    NOT NULL,
    referrer         TEXT,
    -- A JSON object of string values.
    props            TEXT    NOT NULL,
    -- Decimal text and ISO 4217 code, both or neither: never a float.
    revenue_amount   TEXT,
    revenue_currency TEXT,
    interactive      INTEGER NOT NULL CHECK (interactive IN (0, 1)),
    visitor          BLOB    NOT NULL CHECK (length(visitor) = 16),
    PRIMARY KEY (workspace_id, id),
    CHECK ((revenue_amount IS NULL) = (revenue_currency IS NULL))
) STRICT;

-- Reads by time range and retention deletes, in (received_at, id) order.
CREATE INDEX events_by_time ON events (workspace_id, received_at, id);

-- Filtered events counted per workspace, day and reason (the stable reason code).
CREATE TABLE drop_counts (
    workspace_id BLOB    NOT NULL REFERENCES workspaces (workspace_id),
    day          INTEGER NOT NULL,
    reason       TEXT    NOT NULL,
    count        INTEGER NOT NULL CHECK (count >= 0),
    PRIMARY KEY (workspace_id, day, reason)
) STRICT, WITHOUT ROWID;
