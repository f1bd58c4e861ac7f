//! The breach clock (migration V11): `breach_incidents`, `breach_register` and
//! `breach_deliveries`, instance data gated by privileges and triggers (no workspace, so no
//! row-level security), and a workspace's admin addresses from the RLS-forced `memberships`.
//!
//! A change of an incident is one transaction: lock its row (`FOR UPDATE`), check the change
//! against it (`leadmaps_core::breach::check_update`), update it, then take the register's
//! append lock (a transaction-level advisory lock), read the head, seal and insert the entry. The
//! primary key on seq and `UNIQUE (prev_hash)` back the lock up. A delivery claim inserts the row
//! or locks it `FOR UPDATE`, so of concurrent claims one wins; completing it runs in a
//! transaction scoped to the notified workspace, so its audit record is appended under that
//! workspace's row-level security in the same commit.

use async_trait::async_trait;
use leadmaps_core::audit::{AuditDraft, AuditRecord, ChainHead, audit_time, canonical_json};
use leadmaps_core::breach::{
    BreachStore, Change, Claim, Delivery, DeliveryKey, Incident, IncidentId, Lease, ObligationId,
    RegisterEntry, actor_name, check_update, parse_actor, seal_entry,
};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{Action, BreachScope, Scope};
use leadmaps_core::{Error, Result};
use time::OffsetDateTime;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::audit::append_in;
use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

/// First key of the advisory lock that serialises register appends ("brg1" in ASCII).
const LOCK_CLASS: i32 = 0x6272_6731;

const ENTRY_COLUMNS: &str =
    "seq, recorded_at, incident_id, actor, change, snapshot, prev_hash, hash";

fn body(incident: &Incident) -> Result<String> {
    let value = serde_json::to_value(incident)
        .map_err(|_| Error::invalid("an incident did not serialise"))?;
    String::from_utf8(canonical_json(&value)).map_err(|_| internal("canonical JSON is not UTF-8"))
}

fn incident_from(row: &tokio_postgres::Row) -> Result<Incident> {
    let text: String = row.try_get("body").map_err(pg)?;
    serde_json::from_str(&text).map_err(|_| internal("a stored incident does not parse"))
}

fn hash_from(bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes
        .try_into()
        .map_err(|_| internal("a stored register hash is not 32 bytes"))
}

fn entry_from(row: &tokio_postgres::Row) -> Result<RegisterEntry> {
    let seq: i64 = row.try_get("seq").map_err(pg)?;
    let actor: String = row.try_get("actor").map_err(pg)?;
    let change: String = row.try_get("change").map_err(pg)?;
    let snapshot: String = row.try_get("snapshot").map_err(pg)?;
    Ok(RegisterEntry {
        seq: u64::try_from(seq).map_err(|_| internal("a stored register seq is negative"))?,
        at: row.try_get("recorded_at").map_err(pg)?,
        incident: IncidentId::from_uuid(row.try_get("incident_id").map_err(pg)?),
        actor: parse_actor(&actor)
            .ok_or_else(|| internal("a stored register actor is malformed"))?,
        change: Change::parse(&change)
            .ok_or_else(|| internal("a stored register change is unknown"))?,
        snapshot: serde_json::from_str(&snapshot)
            .map_err(|_| internal("a stored register snapshot does not parse"))?,
        prev_hash: hash_from(row.try_get("prev_hash").map_err(pg)?)?,
        hash: hash_from(row.try_get("hash").map_err(pg)?)?,
    })
}

/// Maps an insert's error: a missing incident (the foreign key) is `NotFound`.
fn missing_incident(error: tokio_postgres::Error, conflict: &'static str) -> Error {
    if error.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
        Error::NotFound
    } else {
        pg_conflict(error, conflict)
    }
}

async fn append_entry(
    tx: &deadpool_postgres::Transaction<'_>,
    scope: &BreachScope,
    change: Change,
    incident: &Incident,
) -> Result<RegisterEntry> {
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1, 0)")
        .await
        .map_err(pg)?;
    tx.execute(&lock, &[&LOCK_CLASS]).await.map_err(pg)?;
    let head = tx
        .prepare_cached("SELECT seq, hash FROM leadmaps.breach_register ORDER BY seq DESC LIMIT 1")
        .await
        .map_err(pg)?;
    let head = match tx.query_opt(&head, &[]).await.map_err(pg)? {
        None => ChainHead::GENESIS,
        Some(row) => ChainHead {
            seq: u64::try_from(row.try_get::<_, i64>(0).map_err(pg)?)
                .map_err(|_| internal("a stored register seq is negative"))?,
            hash: hash_from(row.try_get(1).map_err(pg)?)?,
        },
    };
    let entry = seal_entry(head, scope, change, incident)?;
    let insert = tx
        .prepare_cached(&format!(
            "INSERT INTO leadmaps.breach_register ({ENTRY_COLUMNS})
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .await
        .map_err(pg)?;
    let seq = i64::try_from(entry.seq).map_err(|_| Error::invalid("register seq out of range"))?;
    let snapshot = String::from_utf8(canonical_json(&entry.snapshot))
        .map_err(|_| internal("canonical JSON is not UTF-8"))?;
    tx.execute(
        &insert,
        &[
            &seq,
            &entry.at,
            entry.incident.as_uuid(),
            &actor_name(entry.actor),
            &entry.change.as_str(),
            &snapshot,
            &&entry.prev_hash[..],
            &&entry.hash[..],
        ],
    )
    .await
    .map_err(|e| missing_incident(e, "the register moved on concurrently, retry"))?;
    Ok(entry)
}

#[async_trait]
impl BreachStore for PostgresStore {
    async fn create_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
    ) -> Result<RegisterEntry> {
        if incident.version != 1 {
            return Err(Error::invalid("a new incident is at version 1"));
        }
        let text = body(incident)?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.breach_incidents
                     (incident_id, version, aware_at, opened_at, status, body)
                 VALUES ($1, 1, $2, $3, $4, $5)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                incident.id.as_uuid(),
                &incident.aware_at,
                &incident.opened_at,
                &incident.status.as_str(),
                &text,
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "incident exists"))?;
        let entry = append_entry(&tx, scope, Change::Opened, incident).await?;
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn update_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
        change: Change,
    ) -> Result<RegisterEntry> {
        let text = body(incident)?;
        let version =
            i64::try_from(incident.version).map_err(|_| Error::invalid("version out of range"))?;
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let select = tx
            .prepare_cached(
                "SELECT body FROM leadmaps.breach_incidents WHERE incident_id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let stored = tx
            .query_opt(&select, &[incident.id.as_uuid()])
            .await
            .map_err(pg)?
            .ok_or(Error::NotFound)?;
        check_update(&incident_from(&stored)?, incident)?;
        let update = tx
            .prepare_cached(
                "UPDATE leadmaps.breach_incidents SET version = $2, status = $3, body = $4
                 WHERE incident_id = $1",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &update,
            &[
                incident.id.as_uuid(),
                &version,
                &incident.status.as_str(),
                &text,
            ],
        )
        .await
        .map_err(pg)?;
        let entry = append_entry(&tx, scope, change, incident).await?;
        tx.commit().await.map_err(pg)?;
        Ok(entry)
    }

    async fn incident(&self, _scope: &BreachScope, id: IncidentId) -> Result<Option<Incident>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT body FROM leadmaps.breach_incidents WHERE incident_id = $1")
            .await
            .map_err(pg)?;
        client
            .query_opt(&select, &[id.as_uuid()])
            .await
            .map_err(pg)?
            .as_ref()
            .map(incident_from)
            .transpose()
    }

    async fn incidents(&self, _scope: &BreachScope) -> Result<Vec<Incident>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT body FROM leadmaps.breach_incidents ORDER BY opened_at, incident_id",
            )
            .await
            .map_err(pg)?;
        client
            .query(&select, &[])
            .await
            .map_err(pg)?
            .iter()
            .map(incident_from)
            .collect()
    }

    async fn register_entries(
        &self,
        _scope: &BreachScope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RegisterEntry>> {
        let Ok(after) = i64::try_from(after_seq) else {
            return Ok(Vec::new());
        };
        let client = self.client().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {ENTRY_COLUMNS} FROM leadmaps.breach_register
                 WHERE seq > $1 ORDER BY seq LIMIT $2"
            ))
            .await
            .map_err(pg)?;
        client
            .query(&select, &[&after, &i64::from(limit)])
            .await
            .map_err(pg)?
            .iter()
            .map(entry_from)
            .collect()
    }

    async fn claim_delivery(
        &self,
        _scope: &BreachScope,
        key: &DeliveryKey,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<Claim> {
        key.validate()?;
        let now = audit_time(now);
        let until = now + lease;
        let token = Uuid::new_v4();
        let (incident, obligation) = (*key.incident.as_uuid(), *key.obligation.as_uuid());
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.breach_deliveries
                     (incident_id, obligation_id, step, token, lease_until, attempts, claimed_at)
                 VALUES ($1, $2, $3, $4, $5, 1, $6) ON CONFLICT DO NOTHING RETURNING attempts",
            )
            .await
            .map_err(pg)?;
        let inserted = tx
            .query_opt(
                &insert,
                &[&incident, &obligation, &key.step, &token, &until, &now],
            )
            .await
            .map_err(|e| missing_incident(e, "delivery exists"))?;
        let attempt = if inserted.is_some() {
            1
        } else {
            // Someone has it (their insert committed, or we waited for it): lock and decide.
            let select = tx
                .prepare_cached(
                    "SELECT lease_until, sent_at FROM leadmaps.breach_deliveries
                     WHERE incident_id = $1 AND obligation_id = $2 AND step = $3 FOR UPDATE",
                )
                .await
                .map_err(pg)?;
            let row = tx
                .query_one(&select, &[&incident, &obligation, &key.step])
                .await
                .map_err(pg)?;
            let held_until: OffsetDateTime = row.try_get(0).map_err(pg)?;
            let sent_at: Option<OffsetDateTime> = row.try_get(1).map_err(pg)?;
            if let Some(at) = sent_at {
                return Ok(Claim::Sent { at });
            }
            if held_until > now {
                return Ok(Claim::Busy { until: held_until });
            }
            let take = tx
                .prepare_cached(
                    "UPDATE leadmaps.breach_deliveries
                     SET token = $4, lease_until = $5, attempts = attempts + 1
                     WHERE incident_id = $1 AND obligation_id = $2 AND step = $3
                     RETURNING attempts",
                )
                .await
                .map_err(pg)?;
            let attempts: i32 = tx
                .query_one(&take, &[&incident, &obligation, &key.step, &token, &until])
                .await
                .map_err(pg)?
                .try_get(0)
                .map_err(pg)?;
            u32::try_from(attempts).map_err(|_| internal("a stored attempt count is negative"))?
        };
        tx.commit().await.map_err(pg)?;
        Ok(Claim::Claimed(Lease {
            key: key.clone(),
            token,
            until,
            attempt,
        }))
    }

    async fn complete_delivery(
        &self,
        _scope: &BreachScope,
        lease: &Lease,
        at: OffsetDateTime,
        audit: Option<(&Scope, AuditDraft)>,
    ) -> Result<Option<AuditRecord>> {
        if let Some((scope, draft)) = &audit {
            draft.check_scope(scope)?;
        }
        let at = audit_time(at);
        let mut client = self.client().await?;
        // Scoped to the notified workspace when there is a record to append there.
        let tx = match &audit {
            Some((scope, _)) => scoped(&mut client, scope.workspace(), false).await?,
            None => client.transaction().await.map_err(pg)?,
        };
        let (incident, obligation) = (
            *lease.key.incident.as_uuid(),
            *lease.key.obligation.as_uuid(),
        );
        let complete = tx
            .prepare_cached(
                "UPDATE leadmaps.breach_deliveries SET sent_at = $5
                 WHERE incident_id = $1 AND obligation_id = $2 AND step = $3 AND token = $4
                   AND sent_at IS NULL",
            )
            .await
            .map_err(pg)?;
        let changed = tx
            .execute(
                &complete,
                &[&incident, &obligation, &lease.key.step, &lease.token, &at],
            )
            .await
            .map_err(pg)?;
        if changed == 0 {
            let exists = tx
                .prepare_cached(
                    "SELECT 1 FROM leadmaps.breach_deliveries
                     WHERE incident_id = $1 AND obligation_id = $2 AND step = $3",
                )
                .await
                .map_err(pg)?;
            let found = tx
                .query_opt(&exists, &[&incident, &obligation, &lease.key.step])
                .await
                .map_err(pg)?;
            return Err(match found {
                None => Error::NotFound,
                Some(_) => Error::Conflict("the claim was taken over or sent already"),
            });
        }
        let record = match audit {
            Some((scope, draft)) => Some(append_in(&tx, scope.workspace(), draft, at).await?),
            None => None,
        };
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn deliveries(
        &self,
        _scope: &BreachScope,
        incident: IncidentId,
    ) -> Result<Vec<Delivery>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT obligation_id, step, attempts, claimed_at, sent_at
                 FROM leadmaps.breach_deliveries WHERE incident_id = $1
                 ORDER BY obligation_id, step",
            )
            .await
            .map_err(pg)?;
        client
            .query(&select, &[incident.as_uuid()])
            .await
            .map_err(pg)?
            .iter()
            .map(|row| {
                let attempts: i32 = row.try_get("attempts").map_err(pg)?;
                Ok(Delivery {
                    key: DeliveryKey {
                        incident,
                        obligation: ObligationId::from_uuid(
                            row.try_get("obligation_id").map_err(pg)?,
                        ),
                        step: row.try_get("step").map_err(pg)?,
                    },
                    attempts: u32::try_from(attempts)
                        .map_err(|_| internal("a stored attempt count is negative"))?,
                    claimed_at: row.try_get("claimed_at").map_err(pg)?,
                    sent_at: row.try_get("sent_at").map_err(pg)?,
                })
            })
            .collect()
    }

    async fn admin_addresses(&self, scope: &Scope) -> Result<Vec<Address>> {
        scope.require(Action::WorkspaceRead)?;
        let rows = self
            .scoped_read(
                scope,
                "SELECT u.email FROM leadmaps.memberships AS m
                 JOIN leadmaps.users AS u ON u.id = m.user_id
                 WHERE m.workspace_id = $1 AND m.role = 'admin' ORDER BY u.email",
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let text: String = row.try_get(0).map_err(pg)?;
                Address::parse(&text)
                    .map_err(|_| internal("a stored e-mail address does not parse"))
            })
            .collect()
    }
}
