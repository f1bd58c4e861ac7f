//! Events. A batch spans workspaces but commits in one transaction. For each workspace in it, the
//! transaction sets `leadmaps.workspace_id` anew and writes that workspace's events with plain
//! `INSERT` statements under the app role, so row-level security checks every row against the
//! workspace it claims, and the batch is all or nothing.
//!
//! `leadmaps.events` is partitioned by month of `received_at` (UTC). A unique constraint there
//! would have to include `received_at`, so idempotency lives in `leadmaps.event_ids` (primary key
//! `(workspace_id, id)`): an event goes into `events` only in the transaction that put its id into
//! `event_ids`. `event_ids` is the one index that says "stored once"; `events` carries only the
//! index its reads and retention need, `(workspace_id, received_at)` (migration V7 dropped its
//! primary key `(workspace_id, received_at, id)`, which could not say it and cost every insert a
//! uniqueness check on a wider key).
//!
//! # Why the write path is shaped as it is
//!
//! Measured with `benches/postgres_copy.rs`, reading the server backends' CPU time from `/proc`:
//! what separates the store from raw COPY is work per row in the server, not the network. Raw
//! binary COPY into a plain table costs the server about 4 ms per 1000 events. The store writes two
//! tables with an index each, row by row (`INSERT` has no multi-row heap path as COPY has), and
//! the claim in `event_ids`, a B-tree insert at a random place per event, costs about as much as
//! the insert into `events`. Staging through COPY with an anti-join claim took about 20 ms of
//! server CPU a batch (0.25 to 0.33 of raw COPY's events/s); this path takes 8 to 13 ms (0.39 to
//! 0.58 over twenty runs on a busy two-core machine, most often just under 0.5).
//!
//! - **Rows travel as one array per column**, spread by `INSERT ... SELECT $1, unnest($2),
//!   unnest($3), ...`. `COPY FROM` refuses a table under row-level security, and binary COPY into a
//!   temporary staging table (what this replaced) cost a round trip more, a second write of every
//!   row and a truncation of the stage at every commit. The `unnest` calls sit in the select list,
//!   where PostgreSQL runs them in step; in `FROM` it first copies every array into a tuple store
//!   of its own (about 1.3 ms more a batch).
//! - **Ids are claimed with a plain insert, optimistically.** In the common batch every id is new,
//!   and a plain `INSERT INTO event_ids` is much cheaper than `ON CONFLICT DO NOTHING` (a
//!   speculative insertion: a probe, an insert and a confirmation per row) or an anti-join before
//!   the insert. Then the events need no answer from the claim, and the two statements go
//!   together. An id `event_ids` holds already fails the claim with a unique violation, which
//!   rolls the whole batch back; the batch is then written carefully: `ON CONFLICT DO NOTHING
//!   RETURNING id` says which ids are new, and only their events are inserted. (When another
//!   transaction has inserted one of the ids and not finished, the unique index makes either kind
//!   of claim wait for it, and the id is a Duplicate if it commits, Accepted if it rolls back.)
//!   After a batch met a stored id, the store writes the next `CAREFUL_BATCHES` batches carefully
//!   at once (and counts again from each careful batch that meets one), so a client that keeps
//!   re-sending does not make every batch pay for a failed attempt. The ids are sorted in Rust and
//!   go in array order, so concurrent batches take the key locks in one order; an `ORDER BY` in
//!   SQL cost a sort of sorted input.
//! - **Pipelined.** Within the transaction, every statement of the batch (each workspace's
//!   `set_config`, claim and insert, then the drop counts) is sent before the first answer is
//!   awaited: three round trips a batch (BEGIN, the statements, COMMIT) whatever it holds.
//!   COMMIT is sent only after every statement has answered, so the batch's atomicity never rests
//!   on the order in which the client library writes requests.
//! - **Statements prepared once per connection** (`prepare_cached`, generic plans), no DDL per
//!   batch.
//!
//! Tried and left out: the claim and the insert as one statement (a data-modifying CTE; no faster),
//! `ON CONFLICT` for every batch joined to the insert (about 18 ms a batch), BEGIN and COMMIT in the
//! same flight as the statements (a few per cent, but a library writing requests out of order
//! could then commit a claim without its events). Not done, because it would weaken a guarantee:
//! COPY into `events` as the table's owner (no row-level security check), a SECURITY DEFINER
//! function writing on the app role's behalf, an unlogged `event_ids`, `synchronous_commit = off`.
//!
//! Before writing a batch with a month it has not seen, the store makes the month's partition
//! through the SECURITY DEFINER function `leadmaps.ensure_event_partitions`, in its own short
//! transaction.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use async_trait::async_trait;
use deadpool_postgres::Transaction;
use leadmaps_core::audit::AuditRecord;
use leadmaps_core::ingest::{
    Event, EventBatch, EventId, RejectReason, Revenue, Verdict, VisitorId,
};
use leadmaps_core::store::{DropCount, EventSink};
use leadmaps_core::tenancy::{Action, Denied, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use time::{Date, OffsetDateTime, UtcOffset};
use tokio_postgres::Statement;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use crate::error::{internal, pg};
use crate::store::{PostgresStore, id, scoped};

const SET_WORKSPACE: &str = "SELECT set_config('leadmaps.workspace_id', $1, true)";

/// Claims a workspace's ids (`$2`, sorted) when none of them is in `event_ids` yet, and fails with
/// a unique violation otherwise. The rows go in array order (a set-returning call in the select
/// list, nothing to reorder them), so concurrent batches take the key locks in one order; an
/// `ORDER BY` here cost a sort of already sorted ids, measurably.
const CLAIM_ALL: &str = "INSERT INTO leadmaps.event_ids (workspace_id, id)
    SELECT $1, unnest($2::uuid[])";

/// Claims those of a workspace's ids (`$2`, sorted) that `event_ids` does not hold yet, and
/// answers with how many were new and, unless that is all of them, which.
const CLAIM_NEW: &str = "WITH claimed AS (
        INSERT INTO leadmaps.event_ids (workspace_id, id)
        SELECT $1, unnest($2::uuid[])
        ON CONFLICT (workspace_id, id) DO NOTHING
        RETURNING id
    )
    SELECT count(*), CASE WHEN count(*) = cardinality($2::uuid[]) THEN NULL ELSE array_agg(id) END
    FROM claimed";

/// Inserts a workspace's events, one array per column (all of one length). The set-returning
/// calls in the select list run in step, one row per element.
const INSERT_EVENTS: &str = "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain,
        name, hostname, pathname, referrer, props, revenue_amount, revenue_currency, interactive,
        visitor)
    SELECT $1, unnest($2::uuid[]), unnest($3::timestamptz[]), unnest($4::text[]),
        unnest($5::text[]), unnest($6::text[]), unnest($7::text[]), unnest($8::text[]),
        unnest($9::text[])::jsonb, unnest($10::text[]), unnest($11::text[]), unnest($12::bool[]),
        unnest($13::bytea[])";

/// Attempts at a batch: a failed optimistic claim, a vanished partition or a race on an id is
/// retried.
const ATTEMPTS: u32 = 4;

/// How many batches after one that met an id already stored are written carefully at once.
const CAREFUL_BATCHES: u32 = 16;

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

/// Drops the partition of the workspace's oldest month when that month ends at or before
/// `cutoff` and holds only this workspace's events (V14): their id claims go first, then the
/// partition, in the caller's transaction. Returns how many events went, or `None` when the
/// month is shared (or not wholly expired) and the batched DELETE has to do it.
async fn drop_oldest_month(
    tx: &Transaction<'_>,
    scope: &Scope,
    cutoff: OffsetDateTime,
) -> Result<Option<u64>> {
    let oldest = tx
        .prepare_cached(
            "SELECT min(received_at) FROM leadmaps.events WHERE workspace_id = $1 AND received_at < $2",
        )
        .await
        .map_err(pg)?;
    let oldest: Option<OffsetDateTime> = tx
        .query_one(&oldest, &[&id(scope.workspace()), &cutoff])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    let Some(oldest) = oldest else {
        return Ok(None);
    };
    let month = month_of(oldest);
    let next = month
        .checked_add(time::Duration::days(31))
        .map(|d| d.replace_day(1).unwrap_or(d))
        .ok_or_else(|| internal("a month beyond the calendar"))?
        .midnight()
        .assume_utc();
    if next > cutoff {
        return Ok(None);
    }
    let only = tx
        .prepare_cached("SELECT leadmaps.event_month_only_of($1, $2, $3)")
        .await
        .map_err(pg)?;
    let held: i64 = tx
        .query_one(&only, &[&id(scope.workspace()), &month, &cutoff])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    if held <= 0 {
        return Ok(None);
    }
    let forget = tx
        .prepare_cached(
            "DELETE FROM leadmaps.event_ids AS i USING leadmaps.events AS e
             WHERE e.workspace_id = $1 AND e.received_at >= $2 AND e.received_at < $3
               AND i.workspace_id = $1 AND i.id = e.id",
        )
        .await
        .map_err(pg)?;
    let start = month.midnight().assume_utc();
    tx.execute(&forget, &[&id(scope.workspace()), &start, &next])
        .await
        .map_err(pg)?;
    let drop = tx
        .prepare_cached("SELECT leadmaps.drop_event_month($1, $2, $3)")
        .await
        .map_err(pg)?;
    let dropped: i64 = tx
        .query_one(&drop, &[&id(scope.workspace()), &month, &cutoff])
        .await
        .map_err(pg)?
        .try_get(0)
        .map_err(pg)?;
    // The partition was locked since the check: the same events, all this workspace's.
    u64::try_from(dropped)
        .map(Some)
        .map_err(|_| internal("a month changed while locked"))
}

/// The first day of the UTC month `at` falls in: the partition it belongs to.
fn month_of(at: OffsetDateTime) -> Date {
    let utc = at.to_offset(UtcOffset::UTC);
    utc.date().replace_day(1).unwrap_or(utc.date())
}

/// One event to write: its place in the batch and its properties as JSON text.
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

/// One workspace's events as one array per column: the parameters `$2` to `$13` of
/// [`INSERT_EVENTS`].
struct Columns<'a> {
    id: Vec<Uuid>,
    received_at: Vec<OffsetDateTime>,
    domain: Vec<&'a str>,
    name: Vec<&'a str>,
    hostname: Vec<&'a str>,
    pathname: Vec<&'a str>,
    referrer: Vec<Option<&'a str>>,
    props: Vec<&'a str>,
    revenue_amount: Vec<Option<&'a str>>,
    revenue_currency: Vec<Option<&'a str>>,
    interactive: Vec<bool>,
    visitor: Vec<&'a [u8]>,
}

impl<'a> Columns<'a> {
    fn of<'b: 'a>(staged: impl ExactSizeIterator<Item = &'a Staged<'b>>) -> Self {
        let n = staged.len();
        let mut columns = Self {
            id: Vec::with_capacity(n),
            received_at: Vec::with_capacity(n),
            domain: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            hostname: Vec::with_capacity(n),
            pathname: Vec::with_capacity(n),
            referrer: Vec::with_capacity(n),
            props: Vec::with_capacity(n),
            revenue_amount: Vec::with_capacity(n),
            revenue_currency: Vec::with_capacity(n),
            interactive: Vec::with_capacity(n),
            visitor: Vec::with_capacity(n),
        };
        for Staged { event, props, .. } in staged {
            let event: &'a Event = event;
            let revenue = event.revenue.as_ref();
            columns.id.push(event.id.0);
            columns.received_at.push(event.received_at);
            columns.domain.push(&event.domain);
            columns.name.push(&event.name);
            columns.hostname.push(&event.hostname);
            columns.pathname.push(&event.pathname);
            columns.referrer.push(event.referrer.as_deref());
            columns.props.push(props);
            columns
                .revenue_amount
                .push(revenue.map(|r| r.amount.as_str()));
            columns
                .revenue_currency
                .push(revenue.map(|r| r.currency.as_str()));
            columns.interactive.push(event.interactive);
            columns.visitor.push(&event.visitor.0);
        }
        columns
    }

    /// The parameters of [`INSERT_EVENTS`], `workspace` first.
    fn params<'p>(&'p self, workspace: &'p Uuid) -> Vec<&'p (dyn ToSql + Sync)> {
        vec![
            workspace,
            &self.id,
            &self.received_at,
            &self.domain,
            &self.name,
            &self.hostname,
            &self.pathname,
            &self.referrer,
            &self.props,
            &self.revenue_amount,
            &self.revenue_currency,
            &self.interactive,
            &self.visitor,
        ]
    }
}

/// What a batch writes for one workspace: its id and its setting of `leadmaps.workspace_id`, its
/// ids sorted (for the optimistic claim), and its events.
struct WorkspaceWrite<'a> {
    workspace: Uuid,
    setting: String,
    ids: Vec<Uuid>,
    columns: Columns<'a>,
}

/// A workspace's drop counts, as the parameters of [`ADD_DROPS`].
struct WorkspaceDrops<'a> {
    workspace: Uuid,
    setting: String,
    days: Vec<Date>,
    reasons: Vec<&'a str>,
    counts: Vec<i64>,
}

/// One statement of a pipelined batch and its parameters.
type Step<'p> = (&'p Statement, Vec<&'p (dyn ToSql + Sync)>);

/// Runs `steps` in `tx`, pipelined: tokio-postgres sends a request when its future is first
/// polled, and this polls them all, in order, before awaiting any answer, so the statements reach
/// the server together and run in that order. Answers with the first error in statement order (a
/// statement after a failed one fails too, as the transaction is aborted).
async fn pipelined(
    tx: &Transaction<'_>,
    steps: &[Step<'_>],
) -> std::result::Result<(), tokio_postgres::Error> {
    type Pending<'f> =
        Pin<Box<dyn Future<Output = std::result::Result<u64, tokio_postgres::Error>> + Send + 'f>>;
    let mut pending: Vec<Option<Pending<'_>>> = steps
        .iter()
        .map(|(statement, params)| Some(Box::pin(tx.execute(*statement, params)) as Pending<'_>))
        .collect();
    // Errors by statement: a later statement's answer may be seen before an earlier one's.
    let mut errors: Vec<Option<tokio_postgres::Error>> = Vec::new();
    errors.resize_with(steps.len(), || None);
    std::future::poll_fn(|cx| {
        let mut done = true;
        for (slot, error) in pending.iter_mut().zip(errors.iter_mut()) {
            if let Some(future) = slot {
                match future.as_mut().poll(cx) {
                    Poll::Ready(outcome) => {
                        *slot = None;
                        *error = outcome.err();
                    }
                    Poll::Pending => done = false,
                }
            }
        }
        if done { Poll::Ready(()) } else { Poll::Pending }
    })
    .await;
    errors.into_iter().flatten().next().map_or(Ok(()), Err)
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

    /// One attempt at writing a planned batch, in one transaction: optimistically (every id is
    /// new, or the attempt fails with a unique violation) unless `careful`. Marks the events it
    /// stored Accepted in `verdicts`, and answers whether it met an id stored already (which only
    /// a careful attempt can answer with yes).
    async fn write_batch(
        &self,
        client: &mut deadpool_postgres::Client,
        plan: &Plan<'_>,
        verdicts: &mut [Verdict],
        careful: bool,
    ) -> std::result::Result<bool, tokio_postgres::Error> {
        let tx = client.transaction().await?;
        let set = tx.prepare_cached(SET_WORKSPACE).await?;
        let insert = tx.prepare_cached(INSERT_EVENTS).await?;
        let claim = if careful {
            tx.prepare_cached(CLAIM_NEW).await?
        } else {
            tx.prepare_cached(CLAIM_ALL).await?
        };
        let add = if plan.drops.is_empty() {
            None
        } else {
            Some(tx.prepare_cached(ADD_DROPS).await?)
        };

        let mut met_stored = false;
        // Per workspace: its id and setting, its ids sorted, and the events to insert.
        let mut writes: Vec<WorkspaceWrite<'_>> = Vec::with_capacity(plan.events.len());
        for (workspace, staged) in &plan.events {
            let mut ids: Vec<Uuid> = staged.iter().map(|s| s.event.id.0).collect();
            ids.sort_unstable();
            let (workspace, setting) = (id(*workspace), workspace.to_string());
            if !careful {
                writes.push(WorkspaceWrite {
                    workspace,
                    setting,
                    ids,
                    columns: Columns::of(staged.iter()),
                });
                continue;
            }
            // Careful: claim first, then insert the events whose ids were new.
            tx.execute(&set, &[&setting]).await?;
            let row = tx.query_one(&claim, &[&workspace, &ids]).await?;
            let (claimed, which): (i64, Option<Vec<Uuid>>) = (row.try_get(0)?, row.try_get(1)?);
            let fresh: Vec<&Staged<'_>> = if usize::try_from(claimed).is_ok_and(|c| c == ids.len())
            {
                staged.iter().collect()
            } else {
                met_stored = true;
                let which: HashSet<Uuid> = which.unwrap_or_default().into_iter().collect();
                staged
                    .iter()
                    .filter(|s| which.contains(&s.event.id.0))
                    .collect()
            };
            for s in &fresh {
                verdicts[s.position] = Verdict::Accepted;
            }
            if !fresh.is_empty() {
                writes.push(WorkspaceWrite {
                    workspace,
                    setting,
                    ids: Vec::new(),
                    columns: Columns::of(fresh.into_iter()),
                });
            }
        }
        let drops: Vec<WorkspaceDrops<'_>> = plan
            .drops
            .iter()
            .map(|(workspace, counts)| WorkspaceDrops {
                workspace: id(*workspace),
                setting: workspace.to_string(),
                days: counts.keys().map(|(day, _)| *day).collect(),
                reasons: counts.keys().map(|(_, reason)| *reason).collect(),
                counts: counts.values().copied().collect(),
            })
            .collect();

        let mut steps: Vec<Step<'_>> = Vec::with_capacity(3 * writes.len() + 2 * drops.len());
        for write in &writes {
            steps.push((&set, vec![&write.setting]));
            if !careful {
                steps.push((&claim, vec![&write.workspace, &write.ids]));
            }
            steps.push((&insert, write.columns.params(&write.workspace)));
        }
        if let Some(add) = &add {
            for d in &drops {
                steps.push((&set, vec![&d.setting]));
                steps.push((add, vec![&d.workspace, &d.days, &d.reasons, &d.counts]));
            }
        }
        pipelined(&tx, &steps).await?;
        if !careful {
            for Staged { position, .. } in plan.events.values().flatten() {
                verdicts[*position] = Verdict::Accepted;
            }
        }
        tx.commit().await?;
        Ok(met_stored)
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
        // Careful at once while a recent batch met an id that was stored already.
        let mut careful = self
            .careful_batches
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        let mut attempt = 1;
        loop {
            match self
                .write_batch(&mut client, &plan, &mut verdicts, careful)
                .await
            {
                Ok(met_stored) => {
                    if met_stored {
                        // Still meeting stored ids: stay careful.
                        self.careful_batches
                            .store(CAREFUL_BATCHES, Ordering::Relaxed);
                    }
                    return Ok(verdicts);
                }
                // "No partition of relation events found for row": a partition this store had
                // seen was dropped or detached since. Ask again for every month of the batch.
                Err(error)
                    if attempt < ATTEMPTS && error.code() == Some(&SqlState::CHECK_VIOLATION) =>
                {
                    self.forget_months();
                    self.ensure_months(&client, &plan.months).await?;
                }
                // The optimistic claim met an id that is stored already (or that another
                // transaction stored while this one waited for it): write the batch carefully,
                // and the next few at once.
                Err(error)
                    if attempt < ATTEMPTS && error.code() == Some(&SqlState::UNIQUE_VIOLATION) =>
                {
                    careful = true;
                    self.careful_batches
                        .store(CAREFUL_BATCHES, Ordering::Relaxed);
                }
                // Batches claim ids in (workspace, id) order, so they should never deadlock; if
                // two did, PostgreSQL rolled one back, and it is written again.
                Err(error)
                    if attempt < ATTEMPTS
                        && error.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {}
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

    async fn delete_events_before(
        &self,
        scope: &Scope,
        cutoff: OffsetDateTime,
        limit: u32,
        at: OffsetDateTime,
    ) -> Result<(u64, Option<AuditRecord>)> {
        scope.require(Action::RetentionEnforce)?;
        if limit == 0 {
            return Err(Error::invalid("retention batch of 0 events"));
        }
        let mut client = self.client().await?;
        // One batch, one transaction: the oldest `limit` events before the cutoff, their id
        // claims, and the record counting them commit together or not at all. Ids are unique
        // per workspace (event_ids), so (received_at, id) names each row; the join walks the
        // (workspace_id, received_at) index.
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        if let Some(dropped) = drop_oldest_month(&tx, scope, cutoff).await? {
            let draft = leadmaps_core::policy::retention_draft(scope, cutoff, dropped);
            let record = crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
            tx.commit().await.map_err(pg)?;
            return Ok((dropped, Some(record)));
        }
        let delete = tx
            .prepare_cached(
                "WITH doomed AS (
                     SELECT received_at, id FROM leadmaps.events
                     WHERE workspace_id = $1 AND received_at < $2
                     ORDER BY received_at LIMIT $3
                 ), gone AS (
                     DELETE FROM leadmaps.events AS e USING doomed AS d
                     WHERE e.workspace_id = $1 AND e.received_at = d.received_at AND e.id = d.id
                     RETURNING e.id
                 ), forgotten AS (
                     DELETE FROM leadmaps.event_ids AS i USING gone
                     WHERE i.workspace_id = $1 AND i.id = gone.id
                 )
                 SELECT count(*) FROM gone",
            )
            .await
            .map_err(pg)?;
        let deleted: i64 = tx
            .query_one(
                &delete,
                &[&id(scope.workspace()), &cutoff, &i64::from(limit)],
            )
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        let deleted = u64::try_from(deleted).map_err(|_| internal("a negative count"))?;
        if deleted == 0 {
            return Ok((0, None));
        }
        let draft = leadmaps_core::policy::retention_draft(scope, cutoff, deleted);
        let record = crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok((deleted, Some(record)))
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
