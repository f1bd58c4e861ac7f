//! Obligations: what an incident obliges leadmaps to do, by when, and how far it got.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::incident::ObligationId;
use super::rules::{Duty, Sending};
use crate::error::{Error, Result};
use crate::tenancy::{BreachActor, WorkspaceId};

/// The state of an obligation as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum ObligationState {
    /// Not done yet.
    Pending,
    /// Past its deadline, not done, and the reason for the delay is stated.
    Late {
        /// The reason (GDPR Art. 33(1) requires one for a late filing).
        reason: String,
        /// Who stated it.
        by: BreachActor,
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
    },
    /// Done, with evidence.
    Done {
        /// When.
        #[serde(with = "time::serde::rfc3339")]
        at: OffsetDateTime,
        /// Who recorded it.
        by: BreachActor,
        /// What shows it was done: a reference, a receipt, a delivery record.
        evidence: String,
        /// The reason it was late, if it was; `None` on a late one means it is still owed.
        late_reason: Option<String>,
    },
}

/// Where an obligation stands at a moment: what [`Obligation::standing`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    /// To do, before its deadline.
    Pending,
    /// Its deadline passed and it is not done: a reason for the delay is demanded.
    Overdue,
    /// Its deadline passed, not done, the reason is stated.
    Late,
    /// Done after its deadline, and the reason for the delay is still owed.
    ReasonOwed,
    /// Done (on time, or late with the reason stated).
    Done,
}

impl Standing {
    /// `pending`, `overdue`, `late`, `reason_owed` or `done`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Standing::Pending => "pending",
            Standing::Overdue => "overdue",
            Standing::Late => "late",
            Standing::ReasonOwed => "reason_owed",
            Standing::Done => "done",
        }
    }
}

/// One obligation, derived from a rule of the incident's rule set, never typed in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Obligation {
    /// Its id (derived from the incident, the rule and the workspace).
    pub id: ObligationId,
    /// The rule it comes from.
    pub rule: String,
    /// The version of the rule set that rule belongs to.
    pub rule_set: String,
    /// What must happen.
    pub duty: Duty,
    /// The legal or contractual basis, e.g. "GDPR Art. 33(1)".
    pub basis: String,
    /// The affected workspace it concerns, for duties owed per workspace.
    pub workspace: Option<WorkspaceId>,
    /// The deadline.
    #[serde(with = "time::serde::rfc3339")]
    pub due_at: OffsetDateTime,
    /// Whether the notifier sends it, and when.
    pub sending: Sending,
    /// The escalation ladder: reminders this many minutes before the deadline, descending.
    pub reminders: Vec<u32>,
    /// How far it got.
    pub state: ObligationState,
}

impl Obligation {
    /// Where it stands at `now`.
    pub fn standing(&self, now: OffsetDateTime) -> Standing {
        match &self.state {
            ObligationState::Pending if now < self.due_at => Standing::Pending,
            ObligationState::Pending => Standing::Overdue,
            ObligationState::Late { .. } => Standing::Late,
            ObligationState::Done {
                at, late_reason, ..
            } => {
                if *at > self.due_at && late_reason.is_none() {
                    Standing::ReasonOwed
                } else {
                    Standing::Done
                }
            }
        }
    }

    /// Whether nothing more is owed: done, and with a reason if done late.
    pub fn is_settled(&self) -> bool {
        matches!(
            &self.state,
            ObligationState::Done { at, late_reason, .. }
                if *at <= self.due_at || late_reason.is_some()
        )
    }

    /// When the notifier sends it, for an automatic one: `lead` before the deadline.
    pub fn send_at(&self) -> Option<OffsetDateTime> {
        match self.sending {
            Sending::Manual => None,
            Sending::Automatic { lead_minutes } => {
                Some(self.due_at - Duration::minutes(i64::from(lead_minutes)))
            }
        }
    }

    /// Checks that it may be marked done at `now` with `late_reason`: not done yet, and after
    /// the deadline only with a reason (given now, or stated before) when `demand_reason`.
    pub(crate) fn check_done(
        &self,
        now: OffsetDateTime,
        late_reason: Option<&str>,
        demand_reason: bool,
    ) -> Result<()> {
        match &self.state {
            ObligationState::Done { .. } => Err(Error::Conflict("the obligation is done already")),
            ObligationState::Late { .. } => Ok(()),
            ObligationState::Pending => {
                if demand_reason && now > self.due_at && late_reason.is_none() {
                    return Err(Error::invalid(
                        "the deadline has passed: state the reason for the delay (GDPR Art. 33(1))",
                    ));
                }
                Ok(())
            }
        }
    }

    pub(crate) fn mark_done(
        &mut self,
        now: OffsetDateTime,
        by: BreachActor,
        evidence: &str,
        late_reason: Option<&str>,
    ) {
        let stated = match &self.state {
            ObligationState::Late { reason, .. } => Some(reason.clone()),
            _ => None,
        };
        let late_reason = late_reason.map(str::to_owned).or(stated);
        self.state = ObligationState::Done {
            at: now,
            by,
            evidence: evidence.to_owned(),
            late_reason: if now > self.due_at { late_reason } else { None },
        };
    }

    pub(crate) fn state_reason(
        &mut self,
        reason: &str,
        by: BreachActor,
        now: OffsetDateTime,
    ) -> Result<()> {
        match &mut self.state {
            ObligationState::Pending | ObligationState::Late { .. } => {
                if now < self.due_at {
                    return Err(Error::invalid(
                        "the deadline has not passed: there is no delay to explain",
                    ));
                }
                self.state = ObligationState::Late {
                    reason: reason.to_owned(),
                    by,
                    at: now,
                };
                Ok(())
            }
            ObligationState::Done {
                at, late_reason, ..
            } => {
                if *at <= self.due_at {
                    return Err(Error::invalid(
                        "the obligation was done on time: there is no delay to explain",
                    ));
                }
                *late_reason = Some(reason.to_owned());
                Ok(())
            }
        }
    }
}

/// Refuses to close while an obligation is not settled, naming the first one: what closing an
/// incident or a vulnerability report requires.
///
/// # Errors
/// [`Error::Invalid`] naming the outstanding obligation.
pub(crate) fn check_all_settled(obligations: &[Obligation]) -> Result<()> {
    match obligations.iter().find(|o| !o.is_settled()) {
        Some(open) => Err(Error::invalid(format!(
            "obligation {} ({}) is not settled: mark it done, with the reason if late",
            open.id,
            open.duty.as_str()
        ))),
        None => Ok(()),
    }
}
