-- V7: events keep one index, (workspace_id, received_at), in place of the primary key
-- (workspace_id, received_at, id).
--
-- Runs as {{owner_role}}, like V1 to V6. "One event per workspace and id" is leadmaps.event_ids'
-- primary key (V3): the store, as {{app_role}}, inserts an event only in the transaction that
-- inserted its id there. The primary key of events could not say it (it includes received_at, as
-- a unique constraint on a table partitioned by received_at must), so all it added was a
-- uniqueness check on a 40-byte key at every insert. What events need is an index led by
-- workspace_id for the reads by time (ORDER BY received_at, id: the index gives the time order, a
-- sort within equal times the rest), for retention and for the row-level security filter; the
-- doctor checks it is there. PostgreSQL builds it on every partition, and the partitions
-- ensure_event_partitions makes later get it by cloning. Privileges and policies are unchanged.

ALTER TABLE leadmaps.events DROP CONSTRAINT events_pkey;
CREATE INDEX events_workspace_received ON leadmaps.events (workspace_id, received_at);
