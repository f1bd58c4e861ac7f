//! [`BreachStore`] on the `breach_incidents`, `breach_register` and `breach_deliveries` tables
//! (migration `0007_breach.sql`).
//!
//! Incidents are instance data (no workspace leads their keys): the [`BreachScope`] every method
//! takes is the gate's proof. Each change is one IMMEDIATE transaction: read the stored incident,
//! [`check_update`], write it, read the register's head, [`seal_entry`], append. A delivery claim
//! is one IMMEDIATE transaction too, so of concurrent claims (from any connection or process on
//! the file) one wins; completing it appends its audit record in the same transaction.

use async_trait::async_trait;
use leadmaps_core::audit::{AuditDraft, AuditRecord, ChainHead, audit_time, canonical_json};
use leadmaps_core::breach::{
    BreachStore, Change, Claim, Delivery, DeliveryKey, Incident, IncidentId, Lease, ObligationId,
    RegisterEntry, check_update, parse_actor, seal_entry,
};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{Action, BreachScope, Scope};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{Connection, OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::audit::append_in;
use crate::codec::{corrupt, get_micros, unix_micros};
use crate::error::{classify, db};
use crate::sql;

const SELECT_INCIDENT: &str = "SELECT body FROM breach_incidents WHERE incident_id = ?1";
const SELECT_INCIDENTS: &str = "SELECT body FROM breach_incidents ORDER BY opened_at, incident_id";
const INSERT_INCIDENT: &str = "INSERT INTO breach_incidents \
     (incident_id, version, aware_at, opened_at, status, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6)";
const UPDATE_INCIDENT: &str = "UPDATE breach_incidents SET version = ?2, aware_at = ?3, \
     opened_at = ?4, status = ?5, body = ?6 WHERE incident_id = ?1";
const SELECT_REGISTER_HEAD: &str =
    "SELECT seq, hash FROM breach_register ORDER BY seq DESC LIMIT 1";
const INSERT_REGISTER: &str = "INSERT INTO breach_register \
     (seq, at, incident_id, actor, change, snapshot, prev_hash, hash) \
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";
const SELECT_REGISTER: &str = "SELECT seq, at, incident_id, actor, change, snapshot, prev_hash, \
     hash FROM breach_register WHERE seq > ?1 ORDER BY seq LIMIT ?2";
const SELECT_DELIVERY: &str = "SELECT token, lease_until, attempts, sent_at FROM breach_deliveries \
     WHERE incident_id = ?1 AND obligation_id = ?2 AND step = ?3";
const INSERT_DELIVERY: &str = "INSERT INTO breach_deliveries (incident_id, obligation_id, step, \
     token, lease_until, attempts, claimed_at) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)";
const TAKE_OVER_DELIVERY: &str = "UPDATE breach_deliveries SET token = ?4, lease_until = ?5, \
     attempts = attempts + 1 WHERE incident_id = ?1 AND obligation_id = ?2 AND step = ?3 \
     RETURNING attempts";
const COMPLETE_DELIVERY: &str = "UPDATE breach_deliveries SET sent_at = ?5 \
     WHERE incident_id = ?1 AND obligation_id = ?2 AND step = ?3 AND token = ?4 \
     AND sent_at IS NULL";
const SELECT_DELIVERIES: &str = "SELECT obligation_id, step, attempts, claimed_at, sent_at \
     FROM breach_deliveries WHERE incident_id = ?1 ORDER BY obligation_id, step";

fn uuid_bytes(uuid: &Uuid) -> [u8; 16] {
    *uuid.as_bytes()
}

fn body(incident: &Incident) -> Result<String> {
    let value = serde_json::to_value(incident)
        .map_err(|_| Error::invalid("an incident did not serialise"))?;
    Ok(String::from_utf8(canonical_json(&value)).expect("canonical JSON is UTF-8"))
}

fn read_incident(row: &Row<'_>) -> rusqlite::Result<Incident> {
    let text: String = row.get(0)?;
    serde_json::from_str(&text).map_err(|_| corrupt(0, Type::Text, "incident"))
}

fn read_entry(row: &Row<'_>) -> rusqlite::Result<RegisterEntry> {
    let seq: i64 = row.get(0)?;
    let actor: String = row.get(3)?;
    let change: String = row.get(4)?;
    let snapshot: String = row.get(5)?;
    Ok(RegisterEntry {
        seq: u64::try_from(seq).map_err(|_| corrupt(0, Type::Integer, "register seq"))?,
        at: get_micros(row, 1)?,
        incident: IncidentId::from_uuid(Uuid::from_bytes(row.get(2)?)),
        actor: parse_actor(&actor).ok_or_else(|| corrupt(3, Type::Text, "register actor"))?,
        change: Change::parse(&change).ok_or_else(|| corrupt(4, Type::Text, "register change"))?,
        snapshot: serde_json::from_str(&snapshot)
            .map_err(|_| corrupt(5, Type::Text, "register snapshot"))?,
        prev_hash: row.get(6)?,
        hash: row.get(7)?,
    })
}

fn read_delivery(incident: IncidentId, row: &Row<'_>) -> rusqlite::Result<Delivery> {
    let attempts: i64 = row.get(2)?;
    let sent_at: Option<i64> = row.get(4)?;
    Ok(Delivery {
        key: DeliveryKey {
            incident,
            obligation: ObligationId::from_uuid(Uuid::from_bytes(row.get(0)?)),
            step: row.get(1)?,
        },
        attempts: u32::try_from(attempts).map_err(|_| corrupt(2, Type::Integer, "attempts"))?,
        claimed_at: get_micros(row, 3)?,
        sent_at: match sent_at {
            Some(_) => Some(get_micros(row, 4)?),
            None => None,
        },
    })
}

/// Appends the register entry of `change` to `incident` inside `tx`.
fn append_entry(
    tx: &Connection,
    scope: &BreachScope,
    change: Change,
    incident: &Incident,
) -> Result<RegisterEntry> {
    let head = tx
        .prepare_cached(SELECT_REGISTER_HEAD)
        .map_err(db)?
        .query_row([], |row| {
            let seq: i64 = row.get(0)?;
            Ok(ChainHead {
                seq: u64::try_from(seq).map_err(|_| corrupt(0, Type::Integer, "register seq"))?,
                hash: row.get(1)?,
            })
        })
        .optional()
        .map_err(db)?
        .unwrap_or(ChainHead::GENESIS);
    let entry = seal_entry(head, scope, change, incident)?;
    let seq = i64::try_from(entry.seq).map_err(|_| Error::invalid("register seq out of range"))?;
    tx.prepare_cached(INSERT_REGISTER)
        .map_err(db)?
        .execute(params![
            seq,
            unix_micros(entry.at)?,
            uuid_bytes(entry.incident.as_uuid()),
            leadmaps_core::breach::actor_name(entry.actor),
            entry.change.as_str(),
            String::from_utf8(canonical_json(&entry.snapshot)).expect("canonical JSON is UTF-8"),
            entry.prev_hash,
            entry.hash,
        ])
        .map_err(|e| classify(e, "the register moved on concurrently, retry"))?;
    Ok(entry)
}

fn key_params(key: &DeliveryKey) -> ([u8; 16], [u8; 16], String) {
    (
        uuid_bytes(key.incident.as_uuid()),
        uuid_bytes(key.obligation.as_uuid()),
        key.step.clone(),
    )
}

#[async_trait]
impl BreachStore for SqliteStore {
    async fn create_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
    ) -> Result<RegisterEntry> {
        if incident.version != 1 {
            return Err(Error::invalid("a new incident is at version 1"));
        }
        let (scope, incident) = (scope.clone(), incident.clone());
        let text = body(&incident)?;
        let (aware_at, opened_at) = (
            unix_micros(incident.aware_at)?,
            unix_micros(incident.opened_at)?,
        );
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                tx.prepare_cached(INSERT_INCIDENT)
                    .map_err(db)?
                    .execute(params![
                        uuid_bytes(incident.id.as_uuid()),
                        1i64,
                        aware_at,
                        opened_at,
                        incident.status.as_str(),
                        text,
                    ])
                    .map_err(|e| classify(e, "incident exists"))?;
                let entry = append_entry(&tx, &scope, Change::Opened, &incident)?;
                tx.commit().map_err(db)?;
                Ok(entry)
            })
            .await
    }

    async fn update_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
        change: Change,
    ) -> Result<RegisterEntry> {
        let (scope, incident) = (scope.clone(), incident.clone());
        let text = body(&incident)?;
        let version =
            i64::try_from(incident.version).map_err(|_| Error::invalid("version out of range"))?;
        let (aware_at, opened_at) = (
            unix_micros(incident.aware_at)?,
            unix_micros(incident.opened_at)?,
        );
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let id = uuid_bytes(incident.id.as_uuid());
                let stored = tx
                    .prepare_cached(SELECT_INCIDENT)
                    .map_err(db)?
                    .query_row([id], read_incident)
                    .optional()
                    .map_err(db)?
                    .ok_or(Error::NotFound)?;
                check_update(&stored, &incident)?;
                tx.prepare_cached(UPDATE_INCIDENT)
                    .map_err(db)?
                    .execute(params![
                        id,
                        version,
                        aware_at,
                        opened_at,
                        incident.status.as_str(),
                        text
                    ])
                    .map_err(db)?;
                let entry = append_entry(&tx, &scope, change, &incident)?;
                tx.commit().map_err(db)?;
                Ok(entry)
            })
            .await
    }

    async fn incident(&self, _scope: &BreachScope, id: IncidentId) -> Result<Option<Incident>> {
        let id = uuid_bytes(id.as_uuid());
        self.conn
            .run(move |conn| {
                conn.prepare_cached(SELECT_INCIDENT)
                    .map_err(db)?
                    .query_row([id], read_incident)
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn incidents(&self, _scope: &BreachScope) -> Result<Vec<Incident>> {
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(SELECT_INCIDENTS).map_err(db)?;
                let rows = select.query_map([], read_incident).map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn register_entries(
        &self,
        _scope: &BreachScope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RegisterEntry>> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(SELECT_REGISTER).map_err(db)?;
                let rows = select
                    .query_map(params![after, limit], read_entry)
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn claim_delivery(
        &self,
        _scope: &BreachScope,
        key: &DeliveryKey,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<Claim> {
        key.validate()?;
        let key = key.clone();
        let now = audit_time(now);
        let until = now + lease;
        let (now_us, until_us) = (unix_micros(now)?, unix_micros(until)?);
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let (incident, obligation, step) = key_params(&key);
                let token = Uuid::new_v4();
                let found = tx
                    .prepare_cached(SELECT_DELIVERY)
                    .map_err(db)?
                    .query_row(params![incident, obligation, step], |row| {
                        let sent: Option<i64> = row.get(3)?;
                        Ok((
                            get_micros(row, 1)?,
                            match sent {
                                Some(_) => Some(get_micros(row, 3)?),
                                None => None,
                            },
                        ))
                    })
                    .optional()
                    .map_err(db)?;
                let attempt = match found {
                    Some((_, Some(at))) => return Ok(Claim::Sent { at }),
                    Some((held_until, None)) if held_until > now => {
                        return Ok(Claim::Busy { until: held_until });
                    }
                    Some(_) => {
                        let attempts: i64 = tx
                            .prepare_cached(TAKE_OVER_DELIVERY)
                            .map_err(db)?
                            .query_row(
                                params![incident, obligation, step, uuid_bytes(&token), until_us],
                                |row| row.get(0),
                            )
                            .map_err(db)?;
                        u32::try_from(attempts).map_err(|_| Error::invalid("attempts"))?
                    }
                    None => {
                        tx.prepare_cached(INSERT_DELIVERY)
                            .map_err(db)?
                            .execute(params![
                                incident,
                                obligation,
                                step,
                                uuid_bytes(&token),
                                until_us,
                                now_us
                            ])
                            .map_err(|e| classify(e, "delivery exists"))?;
                        1
                    }
                };
                tx.commit().map_err(db)?;
                Ok(Claim::Claimed(Lease {
                    key,
                    token,
                    until,
                    attempt,
                }))
            })
            .await
    }

    async fn complete_delivery(
        &self,
        _scope: &BreachScope,
        lease: &Lease,
        at: OffsetDateTime,
        audit: Option<(&Scope, AuditDraft)>,
    ) -> Result<Option<AuditRecord>> {
        let audit = match audit {
            Some((scope, draft)) => {
                draft.check_scope(scope)?;
                Some((scope.workspace(), draft))
            }
            None => None,
        };
        let lease = lease.clone();
        let at = audit_time(at);
        let at_us = unix_micros(at)?;
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let (incident, obligation, step) = key_params(&lease.key);
                let changed = tx
                    .prepare_cached(COMPLETE_DELIVERY)
                    .map_err(db)?
                    .execute(params![
                        incident,
                        obligation,
                        step,
                        uuid_bytes(&lease.token),
                        at_us
                    ])
                    .map_err(db)?;
                if changed == 0 {
                    let exists = tx
                        .prepare_cached(SELECT_DELIVERY)
                        .map_err(db)?
                        .query_row(params![incident, obligation, step], |_| Ok(()))
                        .optional()
                        .map_err(db)?;
                    return Err(match exists {
                        None => Error::NotFound,
                        Some(()) => Error::Conflict("the claim was taken over or sent already"),
                    });
                }
                let record = match audit {
                    Some((workspace, draft)) => Some(append_in(&tx, workspace, draft, at)?),
                    None => None,
                };
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await
    }

    async fn deliveries(
        &self,
        _scope: &BreachScope,
        incident: IncidentId,
    ) -> Result<Vec<Delivery>> {
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(SELECT_DELIVERIES).map_err(db)?;
                let rows = select
                    .query_map([uuid_bytes(incident.as_uuid())], |row| {
                        read_delivery(incident, row)
                    })
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn admin_addresses(&self, scope: &Scope) -> Result<Vec<Address>> {
        scope.require(Action::WorkspaceRead)?;
        let id = crate::codec::id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::ADMIN_ADDRESSES).map_err(db)?;
                let rows = select
                    .query_map([id], |row| crate::auth::get_address(row, 0))
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The breach statements touch only the breach tables: never a workspace's data.
    #[test]
    fn breach_statements_stay_in_the_breach_tables() {
        const CUSTOMER: &[&str] = &[
            "workspaces",
            "secrets",
            "events",
            "memberships",
            "audit_records",
            "sites",
        ];
        for statement in [
            SELECT_INCIDENT,
            SELECT_INCIDENTS,
            INSERT_INCIDENT,
            UPDATE_INCIDENT,
            SELECT_REGISTER_HEAD,
            INSERT_REGISTER,
            SELECT_REGISTER,
            SELECT_DELIVERY,
            INSERT_DELIVERY,
            TAKE_OVER_DELIVERY,
            COMPLETE_DELIVERY,
            SELECT_DELIVERIES,
        ] {
            assert!(statement.contains(" breach_"), "{statement}");
            for table in CUSTOMER {
                assert!(
                    !statement.contains(&format!(" {table} ")),
                    "{statement} touches {table}"
                );
            }
        }
    }

    /// The schema holds the rules even against someone who writes to the file directly.
    #[test]
    fn the_schema_keeps_awareness_fixed_and_the_register_append_only() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::migrate::migrate(&mut conn).unwrap();
        conn.execute_batch(
            "INSERT INTO breach_incidents VALUES (zeroblob(16), 1, 100, 100, 'open', '{}');
             INSERT INTO breach_register VALUES (1, 100, zeroblob(16), 'system:breach',
                 'incident.opened', '{}', zeroblob(32), randomblob(32));",
        )
        .unwrap();
        for refused in [
            "UPDATE breach_incidents SET version = 2, aware_at = 99",
            "UPDATE breach_incidents SET version = 3",
            "DELETE FROM breach_incidents",
            "UPDATE breach_register SET actor = 'x'",
            "DELETE FROM breach_register",
            "INSERT INTO breach_register VALUES (3, 100, zeroblob(16), 'a', 'b', '{}', \
             zeroblob(32), zeroblob(32))",
            "INSERT INTO breach_register VALUES (2, 100, zeroblob(16), 'a', 'b', '{}', \
             zeroblob(32), zeroblob(32))",
        ] {
            assert!(conn.execute_batch(refused).is_err(), "{refused}");
        }
        conn.execute_batch("UPDATE breach_incidents SET version = 2, status = 'closed'")
            .unwrap();
        assert!(
            conn.execute_batch("UPDATE breach_incidents SET version = 3")
                .is_err(),
            "closed is final"
        );
    }
}
