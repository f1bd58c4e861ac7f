//! [`EventSink`] on the `events` and `drop_counts` tables.
//!
//! `append_events` is the collector's durable acknowledgement, so it is kept lean: the batch is
//! flattened once into fixed-size rows and one text arena (the blocking job must own its data,
//! and this costs a few allocations per batch where a clone would cost several per event), then
//! written in one IMMEDIATE transaction with statements prepared once per transaction.

use std::collections::BTreeMap;

use async_trait::async_trait;
use leadmaps_core::audit::AuditRecord;
use leadmaps_core::ingest::{Event, EventBatch, EventId, Revenue, Verdict, VisitorId};
use leadmaps_core::policy::retention_draft;
use leadmaps_core::store::{DropCount, EventSink};
use leadmaps_core::tenancy::{Action, Denied, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::types::{ToSqlOutput, Type, ValueRef};
use rusqlite::{Connection, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::codec::{
    bound_nanos, corrupt, day_number, get_day, get_reason, get_text, get_time, id_bytes, unix_nanos,
};
use crate::error::db;
use crate::sql;

/// A byte range of a [`Flat`] batch's text arena.
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
}

/// One event, flattened: its text fields are spans of the arena.
struct EventRow {
    workspace: [u8; 16],
    id: [u8; 16],
    received_at: i64,
    name: Span,
    domain: Span,
    hostname: Span,
    pathname: Span,
    referrer: Option<Span>,
    props: Span,
    revenue: Option<(Span, Span)>,
    interactive: bool,
    visitor: [u8; 16],
}

/// One drop count of the batch.
struct DropRow {
    workspace: [u8; 16],
    day: i64,
    reason: &'static str,
    count: i64,
}

/// A batch the blocking job can own: fixed-size rows plus one arena holding every text field
/// (props already as JSON). The arena holds only UTF-8, copied from `String`s or written by
/// `serde_json`, so its spans bind as TEXT.
struct Flat {
    text: Vec<u8>,
    events: Vec<EventRow>,
    drops: Vec<DropRow>,
}

impl Flat {
    /// Checks every entry's scope as the reference store does, then flattens the batch.
    ///
    /// # Errors
    /// [`Error::Denied`] for an entry whose scope is not an ingest scope of its event's
    /// workspace; [`Error::Invalid`] for an instant outside the stored range or a count over
    /// `i64::MAX`. Nothing has been written then.
    fn new(batch: &EventBatch) -> Result<Self> {
        let mut text_len = 0;
        for (scope, event) in batch.events() {
            scope.require(Action::EventIngest)?;
            if scope.workspace() != event.workspace {
                return Err(Denied::WrongScope.into());
            }
            text_len += event.name.len()
                + event.domain.len()
                + event.hostname.len()
                + event.pathname.len()
                + event.referrer.as_ref().map_or(0, String::len)
                + event
                    .revenue
                    .as_ref()
                    .map_or(0, |r| r.amount.len() + r.currency.len())
                + 2
                + event
                    .props
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 6)
                    .sum::<usize>();
        }
        let mut flat = Self {
            text: Vec::with_capacity(text_len),
            events: Vec::with_capacity(batch.events().len()),
            drops: Vec::with_capacity(batch.drops().len()),
        };
        for (_, event) in batch.events() {
            let row = EventRow {
                workspace: id_bytes(event.workspace),
                id: *event.id.0.as_bytes(),
                received_at: unix_nanos(event.received_at)?,
                name: flat.push(&event.name),
                domain: flat.push(&event.domain),
                hostname: flat.push(&event.hostname),
                pathname: flat.push(&event.pathname),
                referrer: event.referrer.as_deref().map(|r| flat.push(r)),
                props: flat.push_props(&event.props)?,
                revenue: event
                    .revenue
                    .as_ref()
                    .map(|r| (flat.push(&r.amount), flat.push(&r.currency))),
                interactive: event.interactive,
                visitor: event.visitor.0,
            };
            flat.events.push(row);
        }
        for (scope, day, reason, count) in batch.drops() {
            // EventBatch only admits ingest scopes; checked again here all the same.
            scope.require(Action::EventIngest)?;
            flat.drops.push(DropRow {
                workspace: id_bytes(scope.workspace()),
                day: day_number(*day),
                reason: reason.code(),
                count: i64::try_from(*count).map_err(|_| Error::invalid("drop count too large"))?,
            });
        }
        Ok(flat)
    }

    fn push(&mut self, text: &str) -> Span {
        let start = self.text.len();
        self.text.extend_from_slice(text.as_bytes());
        Span {
            start,
            end: self.text.len(),
        }
    }

    fn push_props(&mut self, props: &BTreeMap<String, String>) -> Result<Span> {
        let start = self.text.len();
        serde_json::to_writer(&mut self.text, props).map_err(Error::backend)?;
        Ok(Span {
            start,
            end: self.text.len(),
        })
    }

    fn text(&self, span: Span) -> ToSqlOutput<'_> {
        ToSqlOutput::Borrowed(ValueRef::Text(&self.text[span.start..span.end]))
    }

    fn optional_text(&self, span: Option<Span>) -> ToSqlOutput<'_> {
        match span {
            Some(span) => self.text(span),
            None => ToSqlOutput::Borrowed(ValueRef::Null),
        }
    }

    /// Writes the batch in one transaction: a verdict per event, in order, and every drop count
    /// added. On any error the transaction rolls back and nothing is written.
    fn write(&self, conn: &mut Connection) -> Result<Vec<Verdict>> {
        // IMMEDIATE: the write lock is taken up front, so another process's writer makes this
        // wait (busy timeout) rather than fail midway on a lock upgrade.
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut verdicts = Vec::with_capacity(self.events.len());
        if !self.events.is_empty() {
            let mut insert = tx.prepare_cached(sql::INSERT_EVENT).map_err(db)?;
            for row in &self.events {
                let revenue = row
                    .revenue
                    .map_or((None, None), |(a, c)| (Some(a), Some(c)));
                let stored = insert
                    .execute(params![
                        row.workspace,
                        row.id,
                        row.received_at,
                        self.text(row.name),
                        self.text(row.domain),
                        self.text(row.hostname),
                        self.text(row.pathname),
                        self.optional_text(row.referrer),
                        self.text(row.props),
                        self.optional_text(revenue.0),
                        self.optional_text(revenue.1),
                        row.interactive,
                        row.visitor,
                    ])
                    .map_err(db)?;
                // ON CONFLICT DO NOTHING: no change means the workspace had this id, from an
                // earlier batch or earlier in this one.
                verdicts.push(if stored == 1 {
                    Verdict::Accepted
                } else {
                    Verdict::Duplicate
                });
            }
        }
        if !self.drops.is_empty() {
            let mut add = tx.prepare_cached(sql::ADD_DROP_COUNT).map_err(db)?;
            for drop in &self.drops {
                add.execute(params![drop.workspace, drop.day, drop.reason, drop.count])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)?;
        Ok(verdicts)
    }
}

fn read_event(row: &Row<'_>, workspace: WorkspaceId) -> rusqlite::Result<Event> {
    let props = get_text(row, 7)?.ok_or_else(|| corrupt(7, Type::Null, "props"))?;
    let props: BTreeMap<String, String> =
        serde_json::from_str(props).map_err(|_| corrupt(7, Type::Text, "props"))?;
    let revenue = match (get_text(row, 8)?, get_text(row, 9)?) {
        (None, None) => None,
        (Some(amount), Some(currency)) => Some(Revenue {
            amount: amount.to_owned(),
            currency: currency.to_owned(),
        }),
        _ => return Err(corrupt(8, Type::Text, "revenue")),
    };
    let interactive = match row.get::<_, i64>(10)? {
        0 => false,
        1 => true,
        _ => return Err(corrupt(10, Type::Integer, "interactive flag")),
    };
    Ok(Event {
        id: EventId(Uuid::from_bytes(row.get(0)?)),
        workspace,
        domain: row.get(3)?,
        name: row.get(2)?,
        hostname: row.get(4)?,
        pathname: row.get(5)?,
        referrer: row.get(6)?,
        props,
        revenue,
        interactive,
        visitor: VisitorId(row.get(11)?),
        received_at: get_time(row, 1)?,
    })
}

#[async_trait]
impl EventSink for SqliteStore {
    fn region(&self) -> Region {
        self.region
    }

    async fn append_events(&self, batch: &EventBatch) -> Result<Vec<Verdict>> {
        if batch.region() != self.region {
            return Err(Error::invalid("batch for another region"));
        }
        let flat = Flat::new(batch)?;
        if flat.events.is_empty() && flat.drops.is_empty() {
            return Ok(Vec::new());
        }
        // The batcher awaits each commit before the next: no thread hand-offs on its path.
        self.conn
            .commit_in_place(move |conn| flat.write(conn))
            .await
    }

    async fn events(
        &self,
        scope: &Scope,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Event>> {
        scope.require(Action::EventRead)?;
        let workspace = scope.workspace();
        let (id, from, to) = (id_bytes(workspace), bound_nanos(from), bound_nanos(to));
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_EVENTS).map_err(db)?;
                let events = select
                    .query_map(params![id, from, to, limit], |row| {
                        read_event(row, workspace)
                    })
                    .map_err(db)?;
                events.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn has_event(&self, scope: &Scope, event: EventId) -> Result<bool> {
        scope.require(Action::EventRead)?;
        let (id, event) = (id_bytes(scope.workspace()), *event.0.as_bytes());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::HAS_EVENT).map_err(db)?;
                select
                    .query_row(params![id, event], |row| row.get(0))
                    .map_err(db)
            })
            .await
    }

    async fn drop_counts(&self, scope: &Scope) -> Result<Vec<DropCount>> {
        scope.require(Action::EventRead)?;
        let id = id_bytes(scope.workspace());
        let mut counts = self
            .conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_DROP_COUNTS).map_err(db)?;
                let counts = select
                    .query_map([id], |row| {
                        let count: i64 = row.get(2)?;
                        Ok(DropCount {
                            day: get_day(row, 0)?,
                            reason: get_reason(row, 1)?,
                            count: u64::try_from(count)
                                .map_err(|_| corrupt(2, Type::Integer, "count"))?,
                        })
                    })
                    .map_err(db)?;
                counts.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await?;
        // By day, then reason in core's order (not the codes' alphabetical order).
        counts.sort_unstable_by_key(|count| (count.day, count.reason));
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
        let scope = scope.clone();
        let (id, bound) = (id_bytes(scope.workspace()), bound_nanos(cutoff));
        // One batch, one short transaction: the deletion and the record counting it commit
        // together, and the write lock is released before the next batch.
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let deleted = tx
                    .prepare_cached(sql::DELETE_EVENTS_BEFORE)
                    .map_err(db)?
                    .execute(params![id, bound, limit])
                    .map_err(db)? as u64;
                if deleted == 0 {
                    return Ok((0, None));
                }
                let draft = retention_draft(&scope, cutoff, deleted);
                let record = crate::audit::append_in(&tx, scope.workspace(), draft, at)?;
                tx.commit().map_err(db)?;
                Ok((deleted, Some(record)))
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use leadmaps_core::clock::ManualClock;
    use leadmaps_core::store::WorkspaceStore;
    use leadmaps_core::tenancy::{Gate, Principal, SystemTask};
    use time::Duration;

    use super::*;

    fn start() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_500)
    }

    fn scope(principal: Principal, ws: WorkspaceId, action: Action) -> Scope {
        Gate::new(Arc::new(ManualClock::new(start())))
            .authorize(&principal, ws, action)
            .unwrap()
    }

    async fn store_with_events(n: u128) -> (SqliteStore, WorkspaceId) {
        let store = SqliteStore::open_in_memory().unwrap();
        let ws = WorkspaceId::new();
        let create = scope(
            Principal::System(SystemTask::Provisioning),
            ws,
            Action::WorkspaceCreate,
        );
        store
            .create_workspace(&create, "W", Region::Eu, start())
            .await
            .unwrap();
        let ingest = scope(
            Principal::Collector { workspace: ws },
            ws,
            Action::EventIngest,
        );
        let mut batch = EventBatch::new(Region::Eu);
        for i in 0..n {
            let event = Event {
                id: EventId(Uuid::from_u128(i)),
                workspace: ws,
                domain: "example.com".into(),
                name: "pageview".into(),
                hostname: "example.com".into(),
                pathname: "/".into(),
                referrer: None,
                props: [("plan".to_owned(), "pro \"x\"".to_owned())].into(),
                revenue: Some(Revenue {
                    amount: "0.10".into(),
                    currency: "EUR".into(),
                }),
                interactive: true,
                visitor: VisitorId([7; 16]),
                received_at: start() + Duration::seconds(i as i64),
            };
            batch.push(Region::Eu, ingest.clone(), event).unwrap();
        }
        store.append_events(&batch).await.unwrap();
        (store, ws)
    }

    fn count(store: &SqliteStore) -> i64 {
        store
            .conn
            .lock()
            .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
            .unwrap()
    }

    #[tokio::test]
    async fn retention_batches_commit_with_their_record_or_not_at_all() {
        for (events, cutoff, batch, deleted, records) in [
            (9, 100, 3, 9, 3),   // whole batches, then an empty statement and no record
            (10, 100, 3, 10, 4), // a short last batch
            (10, 4, 3, 4, 2),    // stops at the cutoff
            (0, 100, 3, 0, 0),
        ] {
            let (store, ws) = store_with_events(events).await;
            let retention = scope(
                Principal::System(SystemTask::Retention),
                ws,
                Action::RetentionEnforce,
            );
            let cutoff = start() + Duration::seconds(cutoff);
            let (mut total, mut recorded) = (0, 0);
            loop {
                let (n, record) = store
                    .delete_events_before(&retention, cutoff, batch, start())
                    .await
                    .unwrap();
                total += n;
                recorded += usize::from(record.is_some());
                if n < u64::from(batch) {
                    break;
                }
            }
            assert_eq!((total, recorded), (deleted, records));
            assert_eq!(count(&store), events as i64 - deleted as i64);
            assert!(store.conn.lock().is_autocommit());
        }
        // When the record cannot be written, nothing is deleted.
        let (store, ws) = store_with_events(5).await;
        store
            .conn
            .lock()
            .execute_batch(
                "CREATE TEMP TRIGGER audit_down BEFORE INSERT ON main.audit_records \
                 BEGIN SELECT RAISE(ABORT, 'audit down'); END;",
            )
            .unwrap();
        let retention = scope(
            Principal::System(SystemTask::Retention),
            ws,
            Action::RetentionEnforce,
        );
        let cutoff = start() + Duration::seconds(100);
        assert!(
            store
                .delete_events_before(&retention, cutoff, 10, start())
                .await
                .is_err()
        );
        assert_eq!(count(&store), 5);
        assert!(store.conn.lock().is_autocommit());
    }

    #[tokio::test]
    async fn events_are_stored_as_plain_sql_values() {
        let (store, _) = store_with_events(1).await;
        let conn = store.conn.lock();
        let row: (i64, String, String, String, String, i64) = conn
            .query_row(
                "SELECT json_valid(props), json_extract(props, '$.plan'), revenue_amount, \
                 revenue_currency, typeof(received_at) || '/' || typeof(referrer), interactive \
                 FROM events",
                [],
                |r| {
                    Ok((
                        r.get(0)?,
                        r.get(1)?,
                        r.get(2)?,
                        r.get(3)?,
                        r.get(4)?,
                        r.get(5)?,
                    ))
                },
            )
            .unwrap();
        assert_eq!(
            row,
            (
                1,
                "pro \"x\"".into(),
                "0.10".into(),
                "EUR".into(),
                "integer/null".into(),
                1
            )
        );
    }
}
