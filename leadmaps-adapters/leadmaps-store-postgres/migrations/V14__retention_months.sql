-- V14: retention drops a whole month of events where it can.
--
-- Events are partitioned by month across workspaces (V3). When a workspace's oldest month lies
-- wholly before its retention cutoff and holds no other workspace's events (a dedicated
-- instance, or a quiet month), dropping the partition removes it at once, with no dead rows to
-- vacuum. The app role cannot see other workspaces' rows and does not own the partitions, so two
-- SECURITY DEFINER functions of the owner do it, each only for the workspace set in the calling
-- transaction (`leadmaps.workspace_id`) and only for a month that ends at or before the cutoff:
--
-- 1. `event_month_only_of(workspace, month, cutoff)` locks the month's partition (ACCESS
--    EXCLUSIVE, to the end of the caller's transaction, so nothing lands in it meanwhile) and
--    returns how many events it holds when every one is the workspace's, or -1 when any is not.
--    The owner is bound by FORCE ROW LEVEL SECURITY and no policy names it, so it sees no rows:
--    FORCE is lifted on that one partition for the count and put back before returning, all
--    inside the caller's transaction.
-- 2. The caller deletes the month's id claims from event_ids (its own rows, under RLS), then
--    `drop_event_month(workspace, month, cutoff)` drops the partition, after the same checks.
--
-- A month that is shared, or still inside the period, is left to the batched DELETE.

CREATE FUNCTION leadmaps.event_month_only_of(target uuid, month date, cutoff timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    part text;
    held bigint;
    others boolean;
BEGIN
    IF target IS NULL
       OR target IS DISTINCT FROM nullif(current_setting('leadmaps.workspace_id', true), '')::uuid THEN
        RAISE EXCEPTION 'only the workspace of this transaction' USING ERRCODE = '42501';
    END IF;
    IF month IS NULL OR month <> date_trunc('month', month::timestamp)::date
       OR (month::timestamp + interval '1 month') AT TIME ZONE 'UTC' > cutoff THEN
        RAISE EXCEPTION 'not a whole month before the cutoff' USING ERRCODE = '22023';
    END IF;
    part := 'events_y' || to_char(month::timestamp, 'YYYY') || 'm' || to_char(month::timestamp, 'MM');
    IF to_regclass(format('leadmaps.%I', part)) IS NULL THEN
        RETURN 0;
    END IF;
    EXECUTE format('LOCK TABLE leadmaps.%I IN ACCESS EXCLUSIVE MODE', part);
    EXECUTE format('ALTER TABLE leadmaps.%I NO FORCE ROW LEVEL SECURITY', part);
    EXECUTE format('SELECT count(*), coalesce(bool_or(workspace_id <> %L::uuid), false) FROM leadmaps.%I',
                   target, part)
        INTO held, others;
    EXECUTE format('ALTER TABLE leadmaps.%I FORCE ROW LEVEL SECURITY', part);
    RETURN CASE WHEN others THEN -1 ELSE held END;
END
$fn$;

CREATE FUNCTION leadmaps.drop_event_month(target uuid, month date, cutoff timestamptz)
RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $fn$
DECLARE
    held bigint;
    part text;
BEGIN
    held := leadmaps.event_month_only_of(target, month, cutoff);
    IF held < 0 THEN
        RETURN -1;
    END IF;
    part := 'events_y' || to_char(month::timestamp, 'YYYY') || 'm' || to_char(month::timestamp, 'MM');
    IF to_regclass(format('leadmaps.%I', part)) IS NOT NULL THEN
        EXECUTE format('DROP TABLE leadmaps.%I', part);
    END IF;
    RETURN held;
END
$fn$;

REVOKE ALL ON FUNCTION leadmaps.event_month_only_of(uuid, date, timestamptz),
    leadmaps.drop_event_month(uuid, date, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION leadmaps.event_month_only_of(uuid, date, timestamptz),
    leadmaps.drop_event_month(uuid, date, timestamptz) TO {{app_role}};
