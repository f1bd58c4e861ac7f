//! [`BreachStore`] in memory: incidents, the register and deliveries under the store's one lock,
//! so every change and its register entry (and a delivery and its audit record) commit together.

use std::collections::BTreeMap;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{MemoryStore, State};
use crate::audit::{AuditDraft, AuditRecord, ChainHead};
use crate::breach::{
    BreachStore, Change, Claim, Delivery, DeliveryKey, Incident, IncidentId, Lease, ObligationId,
    RegisterEntry, check_update, seal_entry,
};
use crate::error::{Error, Result};
use crate::mail::Address;
use crate::tenancy::{Action, BreachScope, Role, Scope};

struct DeliveryRow {
    token: uuid::Uuid,
    until: OffsetDateTime,
    attempts: u32,
    claimed_at: OffsetDateTime,
    sent_at: Option<OffsetDateTime>,
}

/// The breach part of the store's state.
#[derive(Default)]
pub(super) struct BreachState {
    incidents: BTreeMap<IncidentId, Incident>,
    register: Vec<RegisterEntry>,
    deliveries: BTreeMap<(IncidentId, ObligationId, String), DeliveryRow>,
}

impl BreachState {
    fn append(
        &mut self,
        scope: &BreachScope,
        change: Change,
        incident: &Incident,
    ) -> Result<RegisterEntry> {
        let head = self
            .register
            .last()
            .map_or(ChainHead::GENESIS, RegisterEntry::head);
        let entry = seal_entry(head, scope, change, incident)?;
        self.register.push(entry.clone());
        Ok(entry)
    }
}

fn delivery_of(key: (&(IncidentId, ObligationId, String), &DeliveryRow)) -> Delivery {
    let ((incident, obligation, step), row) = key;
    Delivery {
        key: DeliveryKey {
            incident: *incident,
            obligation: *obligation,
            step: step.clone(),
        },
        attempts: row.attempts,
        claimed_at: row.claimed_at,
        sent_at: row.sent_at,
    }
}

#[async_trait]
impl BreachStore for MemoryStore {
    async fn create_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
    ) -> Result<RegisterEntry> {
        if incident.version != 1 {
            return Err(Error::invalid("a new incident is at version 1"));
        }
        let mut state = self.state();
        let breach = &mut state.breach;
        if breach.incidents.contains_key(&incident.id) {
            return Err(Error::Conflict("incident exists"));
        }
        let entry = breach.append(scope, Change::Opened, incident)?;
        breach.incidents.insert(incident.id, incident.clone());
        Ok(entry)
    }

    async fn update_incident(
        &self,
        scope: &BreachScope,
        incident: &Incident,
        change: Change,
    ) -> Result<RegisterEntry> {
        let mut state = self.state();
        let breach = &mut state.breach;
        let stored = breach.incidents.get(&incident.id).ok_or(Error::NotFound)?;
        check_update(stored, incident)?;
        let entry = breach.append(scope, change, incident)?;
        breach.incidents.insert(incident.id, incident.clone());
        Ok(entry)
    }

    async fn incident(&self, _scope: &BreachScope, id: IncidentId) -> Result<Option<Incident>> {
        Ok(self.state().breach.incidents.get(&id).cloned())
    }

    async fn incidents(&self, _scope: &BreachScope) -> Result<Vec<Incident>> {
        let mut all: Vec<Incident> = self.state().breach.incidents.values().cloned().collect();
        all.sort_by_key(|i| (i.opened_at, i.id));
        Ok(all)
    }

    async fn register_entries(
        &self,
        _scope: &BreachScope,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<RegisterEntry>> {
        let state = self.state();
        let log = &state.breach.register;
        let start = usize::try_from(after_seq).map_or(log.len(), |s| s.min(log.len()));
        Ok(log[start..].iter().take(limit as usize).cloned().collect())
    }

    async fn claim_delivery(
        &self,
        _scope: &BreachScope,
        key: &DeliveryKey,
        now: OffsetDateTime,
        lease: time::Duration,
    ) -> Result<Claim> {
        key.validate()?;
        let mut state = self.state();
        let breach = &mut state.breach;
        if !breach.incidents.contains_key(&key.incident) {
            return Err(Error::NotFound);
        }
        let token = uuid::Uuid::new_v4();
        let until = now + lease;
        let id = (key.incident, key.obligation, key.step.clone());
        let attempt = match breach.deliveries.get_mut(&id) {
            None => {
                breach.deliveries.insert(
                    id,
                    DeliveryRow {
                        token,
                        until,
                        attempts: 1,
                        claimed_at: now,
                        sent_at: None,
                    },
                );
                1
            }
            Some(row) => {
                if let Some(at) = row.sent_at {
                    return Ok(Claim::Sent { at });
                }
                if row.until > now {
                    return Ok(Claim::Busy { until: row.until });
                }
                row.token = token;
                row.until = until;
                row.attempts += 1;
                row.attempts
            }
        };
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
        let mut state = self.state();
        let id = (
            lease.key.incident,
            lease.key.obligation,
            lease.key.step.clone(),
        );
        let row = state.breach.deliveries.get(&id).ok_or(Error::NotFound)?;
        if row.sent_at.is_some() {
            return Err(Error::Conflict("the delivery was sent already"));
        }
        if row.token != lease.token {
            return Err(Error::Conflict("the claim was taken over"));
        }
        // The audit record first: if it is refused, nothing changes.
        let record = match audit {
            Some((scope, draft)) => Some(State::append_audit(&mut state, scope, draft, at)?),
            None => None,
        };
        if let Some(row) = state.breach.deliveries.get_mut(&id) {
            row.sent_at = Some(at);
        }
        Ok(record)
    }

    async fn deliveries(
        &self,
        _scope: &BreachScope,
        incident: IncidentId,
    ) -> Result<Vec<Delivery>> {
        let state = self.state();
        Ok(state
            .breach
            .deliveries
            .iter()
            .filter(|((i, _, _), _)| *i == incident)
            .map(delivery_of)
            .collect())
    }

    async fn admin_addresses(&self, scope: &Scope) -> Result<Vec<Address>> {
        scope.require(Action::WorkspaceRead)?;
        let state = self.state();
        let mut addresses: Vec<Address> = state
            .memberships
            .iter()
            .filter(|((_, ws), role)| *ws == scope.workspace() && **role == Role::Admin)
            .filter_map(|((user, _), _)| state.users.get(user).map(|u| u.email.clone()))
            .collect();
        addresses.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        addresses.dedup();
        Ok(addresses)
    }
}
