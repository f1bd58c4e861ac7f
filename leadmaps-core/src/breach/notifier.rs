//! The notifier: sends what [`due`] says is due, through the [`Mailer`], each step of each
//! obligation once (see [`super::delivery`] for the claim protocol), and records every notice to
//! a workspace in that workspace's audit log.

use std::sync::Arc;

use serde_json::json;
use sha2::{Digest, Sha256};
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::delivery::{Claim, DeliveryKey};
use super::draft::Draft;
use super::engine::{Engine, Step, due};
use super::incident::{Certainty, Incident, Marked};
use super::obligation::Obligation;
use super::rules::Duty;
use crate::audit::{AuditAction, AuditDraft, Target};
use crate::error::{Error, Result};
use crate::mail::{Address, Email, Mailer};
use crate::tenancy::{Action, BreachScope, Gate, Principal, SystemTask};

/// How long a claim holds before another run may take it over: longer than a send takes.
pub const DEFAULT_LEASE: Duration = Duration::minutes(5);

/// What one run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NotifierReport {
    /// Notices sent to workspaces (automatic obligations met).
    pub notices: usize,
    /// Reminders and overdue notices sent to the incident contacts.
    pub escalations: usize,
    /// Messages handed to the mailer.
    pub emails: usize,
    /// Steps due but without anyone to send to (no admin, no contact configured).
    pub unaddressed: usize,
    /// Steps another run holds a live claim on.
    pub busy: usize,
    /// Steps that failed (the mailer or the store): retried once the claim's lease runs out.
    pub failed: usize,
}

/// Sends due breach notifications. Run [`Notifier::run_once`] on an interval (the server does,
/// every minute); every run is safe to repeat, on any number of instances at once.
pub struct Notifier {
    engine: Engine,
    mailer: Arc<dyn Mailer>,
    gate: Gate,
    contacts: Vec<Address>,
    lease: Duration,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field("contacts", &self.contacts.len())
            .field("lease", &self.lease)
            .finish_non_exhaustive()
    }
}

enum Outcome {
    Sent { emails: usize },
    AlreadySent,
    Unaddressed,
    Busy,
}

fn address_tag(address: &Address) -> String {
    let digest = Sha256::digest(address.as_str().as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

fn time_text(at: OffsetDateTime) -> String {
    at.format(&Rfc3339).unwrap_or_default()
}

fn text_or(field: &Marked<String>, otherwise: &str) -> String {
    match (&field.value, field.certainty) {
        (Some(value), Certainty::Known) => value.clone(),
        (Some(value), _) => format!("{value} (estimate)"),
        (None, _) => otherwise.to_owned(),
    }
}

impl Notifier {
    /// A notifier over `engine`'s store and clock, sending through `mailer`, acting as
    /// [`SystemTask::Breach`] through `gate`. Reminders go nowhere until
    /// [`Notifier::with_contacts`] names where.
    pub fn new(engine: Engine, mailer: Arc<dyn Mailer>, gate: Gate) -> Self {
        Self {
            engine,
            mailer,
            gate,
            contacts: Vec::new(),
            lease: DEFAULT_LEASE,
        }
    }

    /// Where reminders and overdue notices go (the security team, the DPO).
    #[must_use]
    pub fn with_contacts(mut self, contacts: Vec<Address>) -> Self {
        self.contacts = contacts;
        self
    }

    /// How long a claim holds before another run may take it over.
    #[must_use]
    pub fn with_lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// Sends everything due now that was not sent before.
    ///
    /// # Errors
    /// Only when the incidents cannot be read; a failure of one step is counted in
    /// [`NotifierReport::failed`] and the others go on.
    pub async fn run_once(&self) -> Result<NotifierReport> {
        let scope = self
            .gate
            .authorize_breach(&Principal::System(SystemTask::Breach))?;
        let incidents = self.engine.incidents(&scope).await?;
        let now = self.engine.now();
        let mut report = NotifierReport::default();
        for item in due(&incidents, now) {
            let Some(incident) = incidents.iter().find(|i| i.id == item.incident) else {
                continue;
            };
            let Ok(obligation) = incident.obligation(item.obligation) else {
                continue;
            };
            for step in &item.steps {
                match self.deliver(&scope, incident, obligation, *step).await {
                    Ok(Outcome::Sent { emails }) => {
                        report.emails += emails;
                        if *step == Step::Send {
                            report.notices += 1;
                        } else {
                            report.escalations += 1;
                        }
                    }
                    Ok(Outcome::AlreadySent) => {}
                    Ok(Outcome::Unaddressed) => report.unaddressed += 1,
                    Ok(Outcome::Busy) => report.busy += 1,
                    Err(_) => report.failed += 1,
                }
            }
        }
        Ok(report)
    }

    async fn deliver(
        &self,
        scope: &BreachScope,
        incident: &Incident,
        obligation: &Obligation,
        step: Step,
    ) -> Result<Outcome> {
        let store = self.engine.store();
        let key = DeliveryKey::new(incident.id, obligation.id, step);
        let (recipients, workspace_scope) = match step {
            Step::Send => {
                let workspace = obligation
                    .workspace
                    .ok_or_else(|| Error::invalid("an automatic obligation names a workspace"))?;
                let read = self.gate.authorize(
                    &Principal::System(SystemTask::Breach),
                    workspace,
                    Action::WorkspaceRead,
                )?;
                (store.admin_addresses(&read).await?, Some(read))
            }
            Step::Reminder { .. } | Step::Overdue => (self.contacts.clone(), None),
        };
        if recipients.is_empty() {
            return Ok(Outcome::Unaddressed);
        }
        let lease = match store
            .claim_delivery(scope, &key, self.engine.now(), self.lease)
            .await?
        {
            Claim::Claimed(lease) => lease,
            Claim::Busy { .. } => return Ok(Outcome::Busy),
            Claim::Sent { at } => {
                // Sent, but the obligation may not have been marked (a crash in between).
                if step == Step::Send {
                    let evidence = self.evidence(&key, recipients.len(), at);
                    self.engine
                        .record_sent(scope, incident.id, obligation.id, &evidence)
                        .await?;
                }
                return Ok(Outcome::AlreadySent);
            }
        };
        let (subject, text) = self.compose(incident, obligation, step);
        for to in &recipients {
            let email = Email {
                to: to.clone(),
                subject: subject.clone(),
                text: text.clone(),
                idempotency_key: Some(format!("{}/{}", key.name(), address_tag(to))),
            };
            // On failure the claim stays until its lease runs out; then a run sends again.
            self.mailer.send(&email).await?;
        }
        let sent_at = self.engine.now();
        let audit = workspace_scope.map(|read| {
            let draft = AuditDraft::new(
                &read,
                AuditAction::BreachNotificationSent,
                Target::new("incident", incident.id.to_string()),
            )
            .with_after(json!({
                "incident": incident.id.to_string(),
                "obligation": obligation.id.to_string(),
                "duty": obligation.duty.as_str(),
                "basis": obligation.basis,
                "severity": incident.severity.as_str(),
                "due_at": time_text(obligation.due_at),
                "sent_at": time_text(sent_at),
                "subject": subject,
                "recipients": recipients.len(),
            }));
            (read, draft)
        });
        store
            .complete_delivery(
                scope,
                &lease,
                sent_at,
                audit.as_ref().map(|(read, draft)| (read, draft.clone())),
            )
            .await?;
        if step == Step::Send {
            let evidence = self.evidence(&key, recipients.len(), sent_at);
            self.engine
                .record_sent(scope, incident.id, obligation.id, &evidence)
                .await?;
        }
        Ok(Outcome::Sent {
            emails: recipients.len(),
        })
    }

    fn evidence(&self, key: &DeliveryKey, recipients: usize, at: OffsetDateTime) -> String {
        format!(
            "e-mailed by the notifier to {recipients} workspace admin address(es) at {} \
             (delivery {}); recorded in the workspace's audit log as breach.notification_sent",
            time_text(at),
            key.name()
        )
    }

    fn compose(
        &self,
        incident: &Incident,
        obligation: &Obligation,
        step: Step,
    ) -> (String, String) {
        let reference = format!("[leadmaps incident {}]", incident.id);
        match step {
            Step::Send if obligation.duty == Duty::NotifyCustomer => {
                let draft = Draft::new(incident, self.engine.now());
                let mut text = format!(
                    "leadmaps processes personal data for your workspace as your processor. \
                     Under GDPR Art. 33(2) we notify you, as the controller, of a personal data \
                     breach that affects your workspace, so you can assess your own obligations \
                     (Art. 33 and 34).\n\nIncident: {}\nReference: {}\nAware since: {}\n\
                     Severity: {}\nRisk as we assess it: {}\n\n",
                    incident.title,
                    incident.id,
                    time_text(incident.aware_at),
                    incident.severity.as_str(),
                    incident.assessment.risk.as_str(),
                );
                for field in &draft.fields {
                    let value = match &field.value {
                        serde_json::Value::Null => "not known yet".to_owned(),
                        serde_json::Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    text.push_str(&format!(
                        "{} ({}): {value} [{}]\n",
                        field.label,
                        field.article,
                        field.certainty.as_str()
                    ));
                }
                text.push_str(
                    "\nWhat is not known yet follows as soon as we know it (Art. 33(4)).\n",
                );
                (
                    format!("{reference} Personal data breach notification (GDPR Art. 33(2))"),
                    text,
                )
            }
            Step::Send => {
                let details = &incident.details;
                let text = format!(
                    "leadmaps is handling a security incident that affects your workspace. You \
                     receive this because you are an admin of it.\n\n\
                     Incident: {}\nReference: {}\nSeverity: {}\nPersonal data involved: {}\n\
                     Status: {}\nAware since: {}\n\n\
                     What happened: {}\nLikely consequences: {}\nWhat we are doing: {}\n\
                     Contact: {}\n",
                    incident.title,
                    incident.id,
                    incident.severity.as_str(),
                    if incident.assessment.personal_data {
                        "yes"
                    } else {
                        "not as far as we know"
                    },
                    incident.status.as_str(),
                    time_text(incident.aware_at),
                    text_or(&details.nature, "under investigation"),
                    text_or(&details.consequences, "being assessed"),
                    text_or(&details.measures, "being decided"),
                    text_or(&details.contact_point, "reply to this message"),
                );
                (
                    format!(
                        "{reference} Security incident affecting your workspace ({})",
                        incident.severity.as_str()
                    ),
                    text,
                )
            }
            Step::Reminder { minutes_before } => (
                format!(
                    "{reference} {} due in {}h{:02}m",
                    obligation.duty.describe(),
                    minutes_before / 60,
                    minutes_before % 60
                ),
                format!(
                    "Obligation {} ({}) of incident \"{}\" is due at {}.\n\
                     Acknowledge it when done: server incident ack --id {} --obligation {} \
                     --evidence \"...\"\n",
                    obligation.id,
                    obligation.basis,
                    incident.title,
                    time_text(obligation.due_at),
                    incident.id,
                    obligation.id
                ),
            ),
            Step::Overdue => (
                format!("{reference} OVERDUE: {}", obligation.duty.describe()),
                format!(
                    "The deadline of obligation {} ({}) of incident \"{}\" passed at {}.\n\
                     A reason for the delay must be stated (GDPR Art. 33(1)): server incident \
                     ack --id {} --obligation {} --reason \"...\"\n",
                    obligation.id,
                    obligation.basis,
                    incident.title,
                    time_text(obligation.due_at),
                    incident.id,
                    obligation.id
                ),
            ),
        }
    }
}
