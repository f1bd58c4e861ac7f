//! Events. A batch spans workspaces but commits in one transaction: for each workspace in it the
//! transaction sets `leadmaps.workspace_id` anew and writes that workspace's rows, so row-level
//! security checks every row against the workspace it claims, and the batch is all or nothing.

use std::collections::{BTreeMap, HashSet};

use async_trait::async_trait;
use leadmaps_core::ingest::{
    Event, EventBatch, EventId, RejectReason, Revenue, Verdict, VisitorId,
};
use leadmaps_core::store::{DropCount, EventSink};
use leadmaps_core::tenancy::{Action, Denied, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use serde::Deserialize;
use serde::de::IntoDeserializer;
use time::{Date, OffsetDateTime};
use uuid::Uuid;

use crate::error::{internal, pg};
use crate::store::{PostgresStore, id, scoped};

const SET_WORKSPACE: &str = "SELECT set_config('leadmaps.workspace_id', $1, true)";

/// One statement per workspace: the batch's rows travel as parallel arrays.
const INSERT_EVENTS: &str = "INSERT INTO leadmaps.events (workspace_id, id, received_at, domain, name, hostname,
         pathname, referrer, props, revenue_amount, revenue_currency, interactive, visitor)
     SELECT $1::uuid, e.id, e.received_at, e.domain, e.name, e.hostname, e.pathname, e.referrer,
         e.props::jsonb, e.revenue_amount, e.revenue_currency, e.interactive, e.visitor
     FROM unnest($2::uuid[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
         $9::text[], $10::text[], $11::text[], $12::bool[], $13::bytea[])
         AS e(id, received_at, domain, name, hostname, pathname, referrer, props, revenue_amount,
              revenue_currency, interactive, visitor)
     ON CONFLICT (workspace_id, id) DO NOTHING
     RETURNING id";

const ADD_DROPS: &str = "INSERT INTO leadmaps.event_drops (workspace_id, day, reason, count)
     SELECT $1::uuid, d.day, d.reason, d.count FROM unnest($2::date[], $3::text[], $4::bigint[]) AS d(day, reason, count)
     ON CONFLICT (workspace_id, day, reason) DO UPDATE SET count = event_drops.count + EXCLUDED.count";

fn reason_from_code(code: &str) -> Result<RejectReason> {
    // The codes are RejectReason's serde names, so serde parses them back.
    RejectReason::deserialize(IntoDeserializer::<serde::de::value::Error>::into_deserializer(code))
        .map_err(|_| internal("a stored drop reason is unknown"))
}

/// A workspace's share of a batch, as parallel columns.
#[derive(Default)]
struct Columns {
    /// Batch positions, parallel to the columns.
    positions: Vec<usize>,
    ids: Vec<Uuid>,
    received_at: Vec<OffsetDateTime>,
    domain: Vec<String>,
    name: Vec<String>,
    hostname: Vec<String>,
    pathname: Vec<String>,
    referrer: Vec<Option<String>>,
    props: Vec<String>,
    revenue_amount: Vec<Option<String>>,
    revenue_currency: Vec<Option<String>>,
    interactive: Vec<bool>,
    visitor: Vec<Vec<u8>>,
}

impl Columns {
    fn push(&mut self, position: usize, event: &Event) -> Result<()> {
        self.positions.push(position);
        self.ids.push(event.id.0);
        self.received_at.push(event.received_at);
        self.domain.push(event.domain.clone());
        self.name.push(event.name.clone());
        self.hostname.push(event.hostname.clone());
        self.pathname.push(event.pathname.clone());
        self.referrer.push(event.referrer.clone());
        self.props.push(
            serde_json::to_string(&event.props)
                .map_err(|_| internal("event properties did not encode"))?,
        );
        self.revenue_amount
            .push(event.revenue.as_ref().map(|r| r.amount.clone()));
        self.revenue_currency
            .push(event.revenue.as_ref().map(|r| r.currency.clone()));
        self.interactive.push(event.interactive);
        self.visitor.push(event.visitor.0.to_vec());
        Ok(())
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
        let mut verdicts = vec![Verdict::Duplicate; batch.events().len()];
        if batch.events().is_empty() && batch.drops().is_empty() {
            return Ok(verdicts);
        }
        // The first occurrence of an id in the batch is the one that may be stored; repeats are
        // duplicates without asking the database.
        let mut seen = HashSet::new();
        let mut by_workspace: BTreeMap<WorkspaceId, Columns> = BTreeMap::new();
        for (position, (_, event)) in batch.events().iter().enumerate() {
            if seen.insert((event.workspace, event.id)) {
                by_workspace
                    .entry(event.workspace)
                    .or_default()
                    .push(position, event)?;
            }
        }
        // Counts summed per key first: one upsert may not touch a row twice.
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

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let set = tx.prepare_cached(SET_WORKSPACE).await.map_err(pg)?;
        if !by_workspace.is_empty() {
            let insert = tx.prepare_cached(INSERT_EVENTS).await.map_err(pg)?;
            for (workspace, c) in &by_workspace {
                tx.execute(&set, &[&workspace.to_string()])
                    .await
                    .map_err(pg)?;
                let rows = tx
                    .query(
                        &insert,
                        &[
                            &id(*workspace),
                            &c.ids,
                            &c.received_at,
                            &c.domain,
                            &c.name,
                            &c.hostname,
                            &c.pathname,
                            &c.referrer,
                            &c.props,
                            &c.revenue_amount,
                            &c.revenue_currency,
                            &c.interactive,
                            &c.visitor,
                        ],
                    )
                    .await
                    .map_err(pg)?;
                let inserted = rows
                    .iter()
                    .map(|row| row.try_get(0).map_err(pg))
                    .collect::<Result<HashSet<Uuid>>>()?;
                for (position, event_id) in c.positions.iter().zip(&c.ids) {
                    if inserted.contains(event_id) {
                        verdicts[*position] = Verdict::Accepted;
                    }
                }
            }
        }
        if !drops.is_empty() {
            let add = tx.prepare_cached(ADD_DROPS).await.map_err(pg)?;
            for (workspace, counts) in &drops {
                let days: Vec<Date> = counts.keys().map(|(day, _)| *day).collect();
                let reasons: Vec<&str> = counts.keys().map(|(_, reason)| *reason).collect();
                let counts: Vec<i64> = counts.values().copied().collect();
                tx.execute(&set, &[&workspace.to_string()])
                    .await
                    .map_err(pg)?;
                tx.execute(&add, &[&id(*workspace), &days, &reasons, &counts])
                    .await
                    .map_err(pg)?;
            }
        }
        tx.commit().await.map_err(pg)?;
        Ok(verdicts)
    }

    async fn events(
        &self,
        scope: &Scope,
        from: OffsetDateTime,
        to: OffsetDateTime,
        limit: u32,
    ) -> Result<Vec<Event>> {
        scope.require(Action::EventRead)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), true).await?;
        let select = tx
            .prepare_cached(
                "SELECT id, received_at, domain, name, hostname, pathname, referrer, props::text AS props,
                        revenue_amount, revenue_currency, interactive, visitor
                 FROM leadmaps.events
                 WHERE workspace_id = $1 AND received_at >= $2 AND received_at < $3
                 ORDER BY received_at, id
                 LIMIT $4",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(
                &select,
                &[&id(scope.workspace()), &from, &to, &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        rows.iter()
            .map(|row| event_from_row(scope.workspace(), row))
            .collect()
    }

    async fn has_event(&self, scope: &Scope, event: EventId) -> Result<bool> {
        scope.require(Action::EventRead)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), true).await?;
        let select = tx
            .prepare_cached(
                "SELECT EXISTS (SELECT FROM leadmaps.events WHERE workspace_id = $1 AND id = $2)",
            )
            .await
            .map_err(pg)?;
        let found: bool = tx
            .query_one(&select, &[&id(scope.workspace()), &event.0])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(found)
    }

    async fn drop_counts(&self, scope: &Scope) -> Result<Vec<DropCount>> {
        scope.require(Action::EventRead)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), true).await?;
        let select = tx
            .prepare_cached(
                "SELECT day, reason, count FROM leadmaps.event_drops WHERE workspace_id = $1",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(&select, &[&id(scope.workspace())])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
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
                "DELETE FROM leadmaps.events WHERE workspace_id = $1 AND received_at < $2",
            )
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute(&delete, &[&id(scope.workspace()), &cutoff])
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
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
