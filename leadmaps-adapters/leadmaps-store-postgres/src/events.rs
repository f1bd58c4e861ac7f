//! Events. A batch spans workspaces but commits in one transaction: its rows travel to a
//! session-private staging table with one binary `COPY` (COPY cannot write into a table under
//! row-level security, the staging table has none and is visible to this connection only), and
//! then, for each workspace in the batch, the transaction sets `leadmaps.workspace_id` anew and
//! moves that workspace's staged rows with `INSERT ... SELECT`, so row-level security checks every
//! row against the workspace it claims, and the batch is all or nothing.
//!
//! `leadmaps.events` is partitioned by month of `received_at` (UTC). A unique constraint there
//! would have to include `received_at`, so idempotency lives in `leadmaps.event_ids`: the move
//! first inserts there the staged ids it does not hold yet, and only the ids that went in (the
//! Accepted ones) are moved into `leadmaps.events`. A plain insert of the missing ids is cheaper
//! than `ON CONFLICT DO NOTHING` (no speculative insertion); its price is a race: when another
//! transaction inserts one of the ids first, the unique index makes this one wait for it, and if
//! it commits, this batch fails with a unique violation and is retried, and then calls that id a
//! Duplicate. Before writing a batch with a month it
//! has not seen, the store makes the month's partition through the SECURITY DEFINER function
//! `leadmaps.ensure_event_partitions`, in its own short transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use async_trait::async_trait;
use leadmaps_core::ingest::{
    Event, EventBatch, EventId, RejectReason, Revenue, Verdict, VisitorId,
};
use leadmaps_core::store::{DropCount, EventSink};
use leadmaps_core::tenancy::{Action, Denied, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use uuid::Uuid;

use crate::error::{internal, pg};
use crate::store::{PostgresStore, id, scoped};

const SET_WORKSPACE: &str = "SELECT set_config('leadmaps.workspace_id', $1, true)";

/// The staging table: temporary (this session only, never in a dump, no WAL), emptied at every
/// commit, made on first use by each pooled connection. `client_min_messages` keeps the "already
/// exists" notice of every later batch off the wire.
const STAGE: &str = "SET LOCAL client_min_messages = warning;
    CREATE TEMP TABLE IF NOT EXISTS leadmaps_event_stage (
        workspace_id uuid NOT NULL,
        id uuid NOT NULL,
        received_at timestamptz NOT NULL,
        domain text NOT NULL,
        name text NOT NULL,
        hostname text NOT NULL,
        pathname text NOT NULL,
        referrer text,
        props text NOT NULL,
        revenue_amount text,
        revenue_currency text,
        interactive boolean NOT NULL,
        visitor bytea NOT NULL
    ) ON COMMIT DELETE ROWS";

const COPY_STAGE: &str = "COPY pg_temp.leadmaps_event_stage (workspace_id, id, received_at, domain,
        name, hostname, pathname, referrer, props, revenue_amount, revenue_currency, interactive,
        visitor)
    FROM STDIN (FORMAT binary)";

/// The column types of [`COPY_STAGE`], in order.
const STAGE_TYPES: [Type; 13] = [
    Type::UUID,
    Type::UUID,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::BOOL,
    Type::BYTEA,
];

/// Claims a workspace's staged ids that `event_ids` does not hold yet (sorted, so concurrent
/// batches take the key locks in one order) and answers with how many were new and, unless that is
/// all `$2` staged, which. The planner's guess of a handful of staged rows makes the anti-join a
/// nested loop over the primary key, which is the right plan.
const CLAIM_IDS: &str = "WITH claimed AS (
        INSERT INTO leadmaps.event_ids (workspace_id, id)
        SELECT s.workspace_id, s.id FROM pg_temp.leadmaps_event_stage AS s
        WHERE s.workspace_id = $1
          AND NOT EXISTS (SELECT FROM leadmaps.event_ids AS e WHERE e.workspace_id = $1 AND e.id = s.id)
        ORDER BY s.id
        RETURNING id
    )
    SELECT count(*), CASE WHEN count(*) = $2::int8 THEN NULL ELSE array_agg(id) END FROM claimed";

/// Moves a workspace's staged events into `leadmaps.events`: all of them, those whose ids are in
/// `$2`, or all but those (whichever list is shorter). No join: a temporary table has no
/// statistics, and the planner, guessing a handful of rows, would pick a quadratic nested loop.
const MOVE_ALL: &str = "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name,
        hostname, pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor)
    SELECT s.workspace_id, s.id, s.received_at, s.domain, s.name, s.hostname, s.pathname,
        s.referrer, s.props::jsonb, s.revenue_amount, s.revenue_currency, s.interactive, s.visitor
    FROM pg_temp.leadmaps_event_stage AS s
    WHERE s.workspace_id = $1";
const MOVE_ONLY: &str = "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name,
        hostname, pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor)
    SELECT s.workspace_id, s.id, s.received_at, s.domain, s.name, s.hostname, s.pathname,
        s.referrer, s.props::jsonb, s.revenue_amount, s.revenue_currency, s.interactive, s.visitor
    FROM pg_temp.leadmaps_event_stage AS s
    WHERE s.workspace_id = $1 AND s.id = ANY($2::uuid[])";
const MOVE_ALL_BUT: &str = "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain,
        name, hostname, pathname, referrer, props, revenue_amount, revenue_currency, interactive,
        visitor)
    SELECT s.workspace_id, s.id, s.received_at, s.domain, s.name, s.hostname, s.pathname,
        s.referrer, s.props::jsonb, s.revenue_amount, s.revenue_currency, s.interactive, s.visitor
    FROM pg_temp.leadmaps_event_stage AS s
    WHERE s.workspace_id = $1 AND s.id <> ALL($2::uuid[])";

/// Attempts at a batch: a race on an id or a vanished partition is retried.
const ATTEMPTS: u32 = 3;

const ENSURE_PARTITIONS: &str = "SELECT leadmaps.ensure_event_partitions($1::date[])";
/// The most months `leadmaps.ensure_event_partitions` takes in one call.
const MONTHS_PER_CALL: usize = 64;

const ADD_DROPS: &str = "INSERT INTO leadmaps.event_drops (workspace_id, day, reason, count)
     SELECT $1::uuid, d.day, d.reason, d.count FROM unnest($2::date[], $3::text[], $4::bigint[]) AS d(day, reason, count)
     ON CONFLICT (workspace_id, day, reason) DO UPDATE SET count = event_drops.count + EXCLUDED.count";

fn reason_from_code(code: &str) -> Result<RejectReason> {
    // The codes are RejectReason's serde names, so serde parses them back.
    RejectReason::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(code))
        .map_err(|_| internal("a stored drop reason is unknown"))
}

/// The first day of the UTC month `at` falls in: the partition it belongs to.
fn month_of(at: OffsetDateTime) -> Date {
    let utc = at.to_offset(UtcOffset::UTC);
    utc.date().replace_day(1).unwrap_or(utc.date())
}

/// One event to stage: its place in the batch and its properties as JSON text.
struct Staged<'a> {
    position: usize,
    event: &'a Event,
    props: String,
}

/// What a batch writes, worked out before any connection is taken.
struct Plan<'a> {
    /// First occurrences only, by workspace.
    events: BTreeMap<WorkspaceId, Vec<Staged<'a>>>,
    /// Counts summed per key: one upsert may not touch a row twice.
    drops: BTreeMap<WorkspaceId, BTreeMap<(Date, &'static str), i64>>,
    months: BTreeSet<Date>,
}

impl<'a> Plan<'a> {
    fn new(batch: &'a EventBatch) -> Result<Self> {
        // The first occurrence of an id in the batch is the one that may be stored; repeats are
        // duplicates without asking the database.
        let mut seen = HashSet::new();
        let mut events: BTreeMap<WorkspaceId, Vec<Staged<'a>>> = BTreeMap::new();
        let mut months = BTreeSet::new();
        for (position, (_, event)) in batch.events().iter().enumerate() {
            if seen.insert((event.workspace, event.id)) {
                months.insert(month_of(event.received_at));
                events.entry(event.workspace).or_default().push(Staged {
                    position,
                    event,
                    props: serde_json::to_string(&event.props)
                        .map_err(|_| internal("event properties did not encode"))?,
                });
            }
        }
        let mut drops: BTreeMap<WorkspaceId, BTreeMap<(Date, &'static str), i64>> = BTreeMap::new();
        for (scope, day, reason, count) in batch.drops() {
            let count =
                i64::try_from(*count).map_err(|_| Error::invalid("drop count out of range"))?;
            let slot = drops
                .entry(scope.workspace())
                .or_default()
                .entry((*day, reason.code()))
                .or_default();
            *slot = slot
                .checked_add(count)
                .ok_or_else(|| Error::invalid("drop count out of range"))?;
        }
        Ok(Self {
            events,
            drops,
            months,
        })
    }
}

impl PostgresStore {
    /// Makes sure the partitions of `months` exist, asking the database only about months this
    /// store has not seen yet. Runs outside any transaction: creating a partition takes a lock on
    /// `leadmaps.events` that should be held for as short a time as possible.
    pub(crate) async fn ensure_months(
        &self,
        client: &deadpool_postgres::Client,
        months: &BTreeSet<Date>,
    ) -> Result<()> {
        let missing: Vec<Date> = {
            let known = self.months.lock().unwrap_or_else(|e| e.into_inner());
            months.difference(&known).copied().collect()
        };
        if missing.is_empty() {
            return Ok(());
        }
        let ensure = client.prepare_cached(ENSURE_PARTITIONS).await.map_err(pg)?;
        for chunk in missing.chunks(MONTHS_PER_CALL) {
            client.execute(&ensure, &[&chunk]).await.map_err(pg)?;
        }
        self.months
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(missing);
        Ok(())
    }

    fn forget_months(&self) {
        self.months
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// One attempt at writing a planned batch, in one transaction.
    async fn write_batch(
        &self,
        client: &mut deadpool_postgres::Client,
        plan: &Plan<'_>,
        verdicts: &mut [Verdict],
    ) -> std::result::Result<(), tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let set = tx.prepare_cached(SET_WORKSPACE).await?;
        if !plan.events.is_empty() {
            tx.batch_execute(STAGE).await?;
            let copy = tx.prepare_cached(COPY_STAGE).await?;
            let writer = BinaryCopyInWriter::new(tx.copy_in(&copy).await?, &STAGE_TYPES);
            let mut writer = std::pin::pin!(writer);
            for (workspace, staged) in &plan.events {
                let workspace = id(*workspace);
                for Staged { event, props, .. } in staged {
                    let revenue = event.revenue.as_ref();
                    let row: [&(dyn ToSql + Sync); 13] = [
                        &workspace,
                        &event.id.0,
                        &event.received_at,
                        &event.domain,
                        &event.name,
                        &event.hostname,
                        &event.pathname,
                        &event.referrer,
                        props,
                        &revenue.map(|r| r.amount.as_str()),
                        &revenue.map(|r| r.currency.as_str()),
                        &event.interactive,
                        &event.visitor.0.as_slice(),
                    ];
                    writer.as_mut().write(&row).await?;
                }
            }
            writer.as_mut().finish().await?;
            let claim = tx.prepare_cached(CLAIM_IDS).await?;
            for (workspace, staged) in &plan.events {
                let workspace = id(*workspace);
                tx.execute(&set, &[&workspace.to_string()]).await?;
                let staged_count = i64::try_from(staged.len()).unwrap_or(i64::MAX);
                let row = tx.query_one(&claim, &[&workspace, &staged_count]).await?;
                let (claimed, which): (i64, Option<Vec<Uuid>>) = (row.try_get(0)?, row.try_get(1)?);
                if claimed == 0 {
                    continue;
                }
                // Every staged event was new (the common case): no list came back.
                let Some(which) = which else {
                    for Staged { position, .. } in staged {
                        verdicts[*position] = Verdict::Accepted;
                    }
                    let all = tx.prepare_cached(MOVE_ALL).await?;
                    tx.execute(&all, &[&workspace]).await?;
                    continue;
                };
                let accepted: HashSet<Uuid> = which.into_iter().collect();
                let mut duplicates = Vec::new();
                for Staged {
                    position, event, ..
                } in staged
                {
                    if accepted.contains(&event.id.0) {
                        verdicts[*position] = Verdict::Accepted;
                    } else {
                        duplicates.push(event.id.0);
                    }
                }
                if duplicates.len() <= accepted.len() {
                    let all_but = tx.prepare_cached(MOVE_ALL_BUT).await?;
                    tx.execute(&all_but, &[&workspace, &duplicates]).await?;
                } else {
                    let accepted: Vec<Uuid> = accepted.into_iter().collect();
                    let only = tx.prepare_cached(MOVE_ONLY).await?;
                    tx.execute(&only, &[&workspace, &accepted]).await?;
                }
            }
        }
        if !plan.drops.is_empty() {
            let add = tx.prepare_cached(ADD_DROPS).await?;
            for (workspace, counts) in &plan.drops {
                let days: Vec<Date> = counts.keys().map(|(day, _)| *day).collect();
                let reasons: Vec<&str> = counts.keys().map(|(_, reason)| *reason).collect();
                let counts: Vec<i64> = counts.values().copied().collect();
                tx.execute(&set, &[&workspace.to_string()]).await?;
                tx.execute(&add, &[&id(*workspace), &days, &reasons, &counts])
                    .await?;
            }
        }
        tx.commit().await
    }
}

fn event_from_row(workspace: WorkspaceId, row: &tokio_postgres::Row) -> Result<Event> {
    let props: String = row.try_get("props").map_err(pg)?;
    let amount: Option<String> = row.try_get("revenue_amount").map_err(pg)?;
    let currency: Option<String> = row.try_get("revenue_currency").map_err(pg)?;
    let visitor: Vec<u8> = row.try_get("visitor").map_err(pg)?;
    Ok(Event {
        id: EventId(row.try_get("id").map_err(pg)?),
        workspace,
        domain: row.try_get("domain").map_err(pg)?,
        name: row.try_get("name").map_err(pg)?,
        hostname: row.try_get("hostname").map_err(pg)?,
        pathname: row.try_get("pathname").map_err(pg)?,
        referrer: row.try_get("referrer").map_err(pg)?,
        props: serde_json::from_str(&props)
            .map_err(|_| internal("stored event properties do not decode"))?,
        revenue: amount
            .zip(currency)
            .map(|(amount, currency)| Revenue { amount, currency }),
        interactive: row.try_get("interactive").map_err(pg)?,
        visitor: VisitorId(
            visitor
                .try_into()
                .map_err(|_| internal("a stored visitor id is not 16 bytes"))?,
        ),
        received_at: row.try_get("received_at").map_err(pg)?,
    })
}

#[async_trait]
impl EventSink for PostgresStore {
    fn region(&self) -> Region {
        self.region
    }

    async fn append_events(&self, batch: &EventBatch) -> Result<Vec<Verdict>> {
        if batch.region() != self.region {
            return Err(Error::invalid("batch for another region"));
        }
        for (scope, event) in batch.events() {
            scope.require(Action::EventIngest)?;
            if scope.workspace() != event.workspace {
                return Err(Denied::WrongScope.into());
            }
        }
        for (scope, ..) in batch.drops() {
            scope.require(Action::EventIngest)?;
        }
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let plan = Plan::new(batch)?;
        let mut client = self.client().await?;
        self.ensure_months(&client, &plan.months).await?;
        let mut verdicts = vec![Verdict::Duplicate; batch.events().len()];
        let mut attempt = 1;
        loop {
            match self.write_batch(&mut client, &plan, &mut verdicts).await {
                Ok(()) => return Ok(verdicts),
                // "No partition of relation events found for row": a partition this store had
                // seen was dropped or detached since. Ask again for every month of the batch.
                Err(error)
                    if attempt < ATTEMPTS && error.code() == Some(&SqlState::CHECK_VIOLATION) =>
                {
                    self.forget_months();
                    self.ensure_months(&client, &plan.months).await?;
                }
                // Another transaction stored one of the ids between this batch's check and its
                // insert, and committed: the next attempt sees it and calls it a duplicate.
                Err(error)
                    if attempt < ATTEMPTS && error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
                Err(error) => return Err(pg(error)),
            }
            attempt += 1;
            verdicts.fill(Verdict::Duplicate);
        }
    }

    async fn events(
        &self,
        scope: &Scope,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Event>> {
        scope.require(Action::EventRead)?;
        let rows = self.scoped_read(scope, "SELECT id, received_at, domain, name, hostname, pathname, referrer, props::text AS props,
                        revenue_amount, revenue_currency, interactive, visitor
                 FROM leadmaps.events
                 WHERE workspace_id = $1 AND received_at >= $2 AND received_at < $3
                 ORDER BY received_at, id
                 LIMIT $4", &[&id(scope.workspace()), &from, &to, &i64::from(limit)]).await?;
        rows.iter()
            .map(|row| event_from_row(scope.workspace(), row))
            .collect()
    }

    async fn has_event(&self, scope: &Scope, event: EventId) -> Result<bool> {
        scope.require(Action::EventRead)?;
        let found: bool = self.scoped_read(scope, "SELECT EXISTS (SELECT FROM leadmaps.event_ids WHERE workspace_id = $1 AND id = $2)", &[&id(scope.workspace()), &event.0]).await?
            .first()
            .ok_or_else(|| internal("a query returned no row"))?
            .try_get(0)
            .map_err(pg)?;
        Ok(found)
    }

    async fn drop_counts(&self, scope: &Scope) -> Result<Vec<DropCount>> {
        scope.require(Action::EventRead)?;
        let rows = self
            .scoped_read(
                scope,
                "SELECT day, reason, count FROM leadmaps.event_drops WHERE workspace_id = $1",
                &[&id(scope.workspace())],
            )
            .await?;
        let mut counts = rows
            .iter()
            .map(|row| {
                let reason: String = row.try_get(1).map_err(pg)?;
                let count: i64 = row.try_get(2).map_err(pg)?;
                Ok(DropCount {
                    day: row.try_get(0).map_err(pg)?,
                    reason: reason_from_code(&reason)?,
                    count: u64::try_from(count).map_err(|_| internal("a negative drop count"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // By day, then by reason in the enum's order, as the other stores answer.
        counts.sort_by_key(|d| (d.day, d.reason));
        Ok(counts)
    }

    async fn delete_events_before(&self, scope: &Scope, cutoff: OffsetDateTime) -> Result<u64> {
        scope.require(Action::RetentionEnforce)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let delete = tx
            .prepare_cached(
                "WITH gone AS (
                     DELETE FROM leadmaps.events WHERE workspace_id = $1 AND received_at < $2 RETURNING id
                 ), forgotten AS (
                     DELETE FROM leadmaps.event_ids AS i USING gone
                     WHERE i.workspace_id = $1 AND i.id = gone.id
                 )
                 SELECT count(*) FROM gone",
            )
            .await
            .map_err(pg)?;
        let deleted: i64 = tx
            .query_one(&delete, &[&id(scope.workspace()), &cutoff])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        u64::try_from(deleted).map_err(|_| internal("a negative count"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_reason_codes_parse_back() {
        for reason in [
            RejectReason::Bot,
            RejectReason::ReferrerSpam,
            RejectReason::BlockedIp,
            RejectReason::DomainUnknown,
            RejectReason::PropValueTooLong,
            RejectReason::WrongRegion,
        ] {
            assert_eq!(reason_from_code(reason.code()).unwrap(), reason);
        }
        assert!(reason_from_code("no_such_reason").is_err());
    }
}
