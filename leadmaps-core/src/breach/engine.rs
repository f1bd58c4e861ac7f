//! The breach clock: what must happen now ([`due`]), and the service that changes incidents
//! through the store ([`Engine`]), with time from the injected [`Clock`].

use std::sync::Arc;

use serde::Serialize;
use time::{Duration, OffsetDateTime};

use super::BreachStore;
use super::draft::Draft;
use super::incident::{
    Details, Incident, IncidentId, NewIncident, ObligationId, Reassessment, Status,
};
use super::obligation::{Obligation, Standing};
use super::register::Change;
use super::rules::{Duty, RuleBook};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::tenancy::{BreachScope, WorkspaceId};

/// A step of an obligation's escalation ladder that has come due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    /// Remind the incident contacts: the deadline is this many minutes away.
    Reminder {
        /// Minutes before the deadline.
        minutes_before: u32,
    },
    /// The notifier sends the notice itself (automatic obligations).
    Send,
    /// Tell the incident contacts the deadline passed and a reason is owed.
    Overdue,
}

impl Step {
    /// The stable name, part of a delivery key: `reminder-<minutes>`, `send` or `overdue`.
    pub fn key(&self) -> String {
        match self {
            Step::Reminder { minutes_before } => format!("reminder-{minutes_before}"),
            Step::Send => "send".into(),
            Step::Overdue => "overdue".into(),
        }
    }
}

/// One outstanding obligation and what is due for it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Due {
    /// The incident.
    pub incident: IncidentId,
    /// The obligation.
    pub obligation: ObligationId,
    /// What it asks.
    pub duty: Duty,
    /// The workspace it concerns, if any.
    pub workspace: Option<WorkspaceId>,
    /// Its deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    /// Where it stands.
    pub standing: Standing,
    /// The steps due now: the send of an automatic obligation once its time has come, the
    /// latest reminder rung passed (earlier rungs are superseded), or the overdue notice.
    pub steps: Vec<Step>,
}

/// What must happen at `now` across `incidents`: every obligation not settled, of every incident
/// not closed, ordered by deadline (then incident and obligation id), with the steps due now.
/// Nothing is due before its time: a reminder not before its rung, a send not before the
/// obligation's send time, the overdue notice not before the deadline.
pub fn due(incidents: &[Incident], now: OffsetDateTime) -> Vec<Due> {
    let mut out = Vec::new();
    for incident in incidents.iter().filter(|i| i.status != Status::Closed) {
        for obligation in &incident.obligations {
            let standing = obligation.standing(now);
            if standing == Standing::Done {
                continue;
            }
            let steps = steps(obligation, now);
            out.push(Due {
                incident: incident.id,
                obligation: obligation.id,
                duty: obligation.duty,
                workspace: obligation.workspace,
                due_at: obligation.due_at,
                standing,
                steps,
            });
        }
    }
    out.sort_by(|a, b| {
        (a.due_at, a.incident, a.obligation).cmp(&(b.due_at, b.incident, b.obligation))
    });
    out
}

/// The steps of `obligation`'s escalation ladder due at `now` (see [`due`]): the send of an
/// automatic obligation once its time has come, the latest reminder rung passed, or the overdue
/// notice; nothing for a settled one.
pub fn steps(obligation: &Obligation, now: OffsetDateTime) -> Vec<Step> {
    let mut steps = Vec::new();
    if matches!(
        obligation.standing(now),
        Standing::Pending | Standing::Overdue | Standing::Late
    ) {
        if obligation.send_at().is_some_and(|at| now >= at) {
            steps.push(Step::Send);
        }
        if now >= obligation.due_at {
            steps.push(Step::Overdue);
        } else if let Some(minutes_before) = obligation
            .reminders
            .iter()
            .copied()
            .filter(|m| now >= obligation.due_at - Duration::minutes(i64::from(*m)))
            .min()
        {
            steps.push(Step::Reminder { minutes_before });
        }
    }
    steps
}

/// How many times a change is retried when the incident changed meanwhile.
const RETRIES: usize = 5;

/// The breach service: opens and changes incidents through a [`BreachStore`], every change in
/// one transaction with its register entry, with time from the injected clock.
#[derive(Clone)]
pub struct Engine {
    store: Arc<dyn BreachStore>,
    rules: Arc<RuleBook>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").finish_non_exhaustive()
    }
}

/// What to do to an obligation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// It is done; this is the evidence (for the authority: its reference). After the deadline
    /// the reason for the delay is required, here or stated before.
    Done {
        /// The evidence.
        evidence: String,
        /// The reason it is late, if it is.
        late_reason: Option<String>,
    },
    /// It is late: this is why.
    Reason(String),
}

impl Engine {
    /// The service over `store`, with `rules` and `clock`.
    pub fn new(store: Arc<dyn BreachStore>, rules: Arc<RuleBook>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            rules,
            clock,
        }
    }

    /// The clock's now.
    pub fn now(&self) -> OffsetDateTime {
        self.clock.now()
    }

    /// The rules.
    pub fn rules(&self) -> &RuleBook {
        &self.rules
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn BreachStore> {
        &self.store
    }

    /// Opens an incident now, with its obligations, and records it in the register.
    ///
    /// # Errors
    /// As [`Incident::open`]; store errors.
    pub async fn open(&self, scope: &BreachScope, new: NewIncident) -> Result<Incident> {
        let incident = Incident::open(new, &self.rules, scope.actor(), self.clock.now())?;
        self.store.create_incident(scope, &incident).await?;
        Ok(incident)
    }

    /// An incident.
    ///
    /// # Errors
    /// [`Error::NotFound`]; store errors.
    pub async fn incident(&self, scope: &BreachScope, id: IncidentId) -> Result<Incident> {
        self.store.incident(scope, id).await?.ok_or(Error::NotFound)
    }

    /// Every incident, oldest first.
    ///
    /// # Errors
    /// Store errors.
    pub async fn incidents(&self, scope: &BreachScope) -> Result<Vec<Incident>> {
        self.store.incidents(scope).await
    }

    /// What must happen now (see [`due`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn due(&self, scope: &BreachScope) -> Result<Vec<Due>> {
        let incidents = self.store.incidents(scope).await?;
        Ok(due(&incidents, self.clock.now()))
    }

    /// Applies `change` to the stored incident and stores it with a register entry of kind
    /// `kind`, retrying when another writer got there first.
    async fn change<F>(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        kind: Change,
        change: F,
    ) -> Result<Incident>
    where
        F: Fn(&mut Incident, OffsetDateTime) -> Result<()> + Send + Sync,
    {
        let mut attempt = 0;
        loop {
            let mut incident = self.incident(scope, id).await?;
            change(&mut incident, self.clock.now())?;
            match self.store.update_incident(scope, &incident, kind).await {
                Err(Error::Conflict(_)) if attempt + 1 < RETRIES => attempt += 1,
                Err(error) => return Err(error),
                Ok(_) => return Ok(incident),
            }
        }
    }

    /// Changes severity, assessment, workspaces or data sets, and recomputes the obligations.
    ///
    /// # Errors
    /// As [`Incident::reassess`]; store errors.
    pub async fn reassess(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        change: Reassessment,
    ) -> Result<Incident> {
        let rules = self.rules.clone();
        self.change(scope, id, Change::Reassessed, move |i, now| {
            i.reassess(&rules, change.clone(), now)
        })
        .await
    }

    /// Replaces the Art. 33(3) details.
    ///
    /// # Errors
    /// As [`Incident::set_details`]; store errors.
    pub async fn set_details(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        details: Details,
    ) -> Result<Incident> {
        self.change(scope, id, Change::DetailsUpdated, move |i, now| {
            i.set_details(details.clone(), now)
        })
        .await
    }

    /// Moves the status forward to contained or resolved.
    ///
    /// # Errors
    /// As [`Incident::advance`]; store errors.
    pub async fn advance(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        status: Status,
    ) -> Result<Incident> {
        self.change(scope, id, Change::StatusChanged, move |i, now| {
            i.advance(status, now)
        })
        .await
    }

    /// Acknowledges an obligation (done with evidence, or the reason it is late).
    ///
    /// # Errors
    /// As [`Incident::acknowledge`] and [`Incident::state_reason`]; store errors.
    pub async fn acknowledge(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        obligation: ObligationId,
        ack: Ack,
    ) -> Result<Incident> {
        let by = scope.actor();
        let kind = match &ack {
            Ack::Done { .. } => Change::ObligationDone,
            Ack::Reason(_) => Change::LateReasonStated,
        };
        self.change(scope, id, kind, move |i, now| match &ack {
            Ack::Done {
                evidence,
                late_reason,
            } => i.acknowledge(obligation, evidence, late_reason.as_deref(), by, now),
            Ack::Reason(reason) => i.state_reason(obligation, reason, by, now),
        })
        .await
    }

    /// Records that the notifier sent an automatic obligation (see [`Incident::record_sent`]).
    ///
    /// # Errors
    /// Store errors.
    pub async fn record_sent(
        &self,
        scope: &BreachScope,
        id: IncidentId,
        obligation: ObligationId,
        evidence: &str,
    ) -> Result<Incident> {
        let by = scope.actor();
        self.change(scope, id, Change::NotificationSent, move |i, now| {
            i.record_sent(obligation, evidence, by, now)
        })
        .await
    }

    /// Closes the incident (every obligation settled).
    ///
    /// # Errors
    /// As [`Incident::close`]; store errors.
    pub async fn close(&self, scope: &BreachScope, id: IncidentId) -> Result<Incident> {
        self.change(scope, id, Change::Closed, |i, now| i.close(now))
            .await
    }

    /// The Art. 33(3) notification draft of an incident, as of now.
    ///
    /// # Errors
    /// [`Error::NotFound`]; store errors.
    pub async fn draft(&self, scope: &BreachScope, id: IncidentId) -> Result<Draft> {
        let incident = self.incident(scope, id).await?;
        Ok(Draft::new(&incident, self.clock.now()))
    }
}
