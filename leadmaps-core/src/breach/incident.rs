//! An incident: what happened, how bad it is operationally (severity), what it means under the
//! GDPR (assessment), whom it affects, and the obligations it started.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::obligation::{Obligation, ObligationState, check_all_settled};
use super::rules::{Duty, RuleBook};
use crate::audit::audit_time;
use crate::error::{Error, Result};
use crate::tenancy::{BreachActor, StaffId, SystemTask, WorkspaceId, uuid_id};

uuid_id!(
    /// A security incident.
    IncidentId
);
uuid_id!(
    /// One obligation of an incident. Derived from the incident, the rule and the affected
    /// workspace (see [`ObligationId::derive`]), so recomputing obligations keeps their ids and
    /// the notifier's delivery records stay attached.
    ObligationId
);

impl ObligationId {
    /// The id of the obligation `rule` gives `incident` (for `workspace`, when the rule applies
    /// per affected workspace): a SHA-256 of the three, shaped as a UUID.
    pub fn derive(incident: IncidentId, rule: &str, workspace: Option<WorkspaceId>) -> Self {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        hasher.update(b"leadmaps/breach-obligation/v1");
        hasher.update(incident.as_uuid().as_bytes());
        hasher.update((rule.len() as u64).to_be_bytes());
        hasher.update(rule.as_bytes());
        match workspace {
            Some(ws) => {
                hasher.update([1]);
                hasher.update(ws.as_uuid().as_bytes());
            }
            None => hasher.update([0]),
        }
        let digest: [u8; 32] = hasher.finalize().into();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        Self::from_uuid(uuid::Builder::from_random_bytes(bytes).into_uuid())
    }
}

/// Operational severity, S0 (worst) to S3. Kept apart from the GDPR [`Assessment`]: an outage
/// can be S0 without any personal data, and a small leak of personal data S3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Severity {
    /// Critical: customer data exposed or the service down for everyone.
    S0,
    /// Major.
    S1,
    /// Minor.
    S2,
    /// Low.
    S3,
}

impl Severity {
    /// `S0` to `S3`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Severity::S0 => "S0",
            Severity::S1 => "S1",
            Severity::S2 => "S2",
            Severity::S3 => "S3",
        }
    }
}

impl std::str::FromStr for Severity {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "S0" | "s0" => Ok(Severity::S0),
            "S1" | "s1" => Ok(Severity::S1),
            "S2" | "s2" => Ok(Severity::S2),
            "S3" | "s3" => Ok(Severity::S3),
            _ => Err(Error::invalid("severity must be S0, S1, S2 or S3")),
        }
    }
}

/// The risk a personal-data breach poses to people's rights and freedoms (GDPR Art. 33(1) and
/// 34(1)), ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Risk {
    /// Unlikely to result in a risk: no filing with the authority (the register still holds it).
    None,
    /// A risk: the authority is notified.
    Risk,
    /// A high risk: the data subjects are told too (Art. 34).
    High,
}

impl Risk {
    /// `none`, `risk` or `high`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Risk::None => "none",
            Risk::Risk => "risk",
            Risk::High => "high",
        }
    }
}

impl std::str::FromStr for Risk {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Risk::None),
            "risk" => Ok(Risk::Risk),
            "high" | "high_risk" => Ok(Risk::High),
            _ => Err(Error::invalid("risk must be none, risk or high")),
        }
    }
}

/// The GDPR assessment of an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Assessment {
    /// Whether personal data was involved (a personal-data breach, Art. 4(12)).
    pub personal_data: bool,
    /// The risk it poses; [`Risk::None`] when no personal data is involved.
    pub risk: Risk,
}

impl Assessment {
    /// No personal data involved.
    pub const NONE: Assessment = Assessment {
        personal_data: false,
        risk: Risk::None,
    };

    /// Checks that a risk is only assessed for personal data.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a risk without personal data.
    pub fn validate(&self) -> Result<()> {
        if !self.personal_data && self.risk != Risk::None {
            return Err(Error::invalid(
                "a risk is assessed only for a personal-data breach",
            ));
        }
        Ok(())
    }
}

/// Where an incident stands. It only moves forward: open, contained, resolved, closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Being handled.
    Open,
    /// It no longer spreads.
    Contained,
    /// Its cause is fixed.
    Resolved,
    /// Every obligation is met; nothing changes any more.
    Closed,
}

impl Status {
    /// `open`, `contained`, `resolved` or `closed`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Contained => "contained",
            Status::Resolved => "resolved",
            Status::Closed => "closed",
        }
    }
}

impl std::str::FromStr for Status {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "open" => Ok(Status::Open),
            "contained" => Ok(Status::Contained),
            "resolved" => Ok(Status::Resolved),
            "closed" => Ok(Status::Closed),
            _ => Err(Error::invalid(
                "status must be open, contained, resolved or closed",
            )),
        }
    }
}

/// leadmaps' role for a data set under the GDPR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DataRole {
    /// leadmaps decides why and how the data is processed (its own accounts, staff, billing):
    /// leadmaps notifies the supervisory authority (Art. 33(1)).
    Controller,
    /// leadmaps processes it for a customer (their analytics): leadmaps notifies the customer,
    /// who is the controller (Art. 33(2)).
    Processor,
}

impl std::str::FromStr for DataRole {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "controller" => Ok(DataRole::Controller),
            "processor" => Ok(DataRole::Processor),
            _ => Err(Error::invalid("role must be controller or processor")),
        }
    }
}

/// A data set the incident touches, and leadmaps' role for it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DataSet {
    /// What it is, e.g. "customer user accounts" or "analytics events".
    pub name: String,
    /// leadmaps' role for it.
    pub role: DataRole,
}

/// How sure a draft field is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Certainty {
    /// Established.
    Known,
    /// An estimate, to be confirmed in a follow-up (Art. 33(4)).
    Estimated,
    /// Not known yet: to be given in a follow-up (Art. 33(4)).
    Unknown,
}

impl Certainty {
    /// `known`, `estimated` or `unknown`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Certainty::Known => "known",
            Certainty::Estimated => "estimated",
            Certainty::Unknown => "unknown",
        }
    }
}

/// A value with how sure it is. A known or estimated field has a value; an unknown one may
/// carry a note of what is being done to find out.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Marked<T> {
    /// How sure.
    pub certainty: Certainty,
    /// The value.
    pub value: Option<T>,
}

impl<T> Marked<T> {
    /// An established value.
    pub fn known(value: T) -> Self {
        Self {
            certainty: Certainty::Known,
            value: Some(value),
        }
    }

    /// An estimate.
    pub fn estimated(value: T) -> Self {
        Self {
            certainty: Certainty::Estimated,
            value: Some(value),
        }
    }

    /// Not known yet.
    pub fn unknown() -> Self {
        Self {
            certainty: Certainty::Unknown,
            value: None,
        }
    }

    fn check(&self, field: &str) -> Result<()> {
        if self.certainty != Certainty::Unknown && self.value.is_none() {
            return Err(Error::invalid(format!(
                "{field}: a known or estimated field needs a value"
            )));
        }
        Ok(())
    }
}

impl<T> Default for Marked<T> {
    fn default() -> Self {
        Self::unknown()
    }
}

/// What GDPR Art. 33(3) asks a notification to describe, each field marked known, estimated or
/// unknown (a field left out of JSON is unknown).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Details {
    /// (a) The nature of the breach.
    pub nature: Marked<String>,
    /// (a) Categories of data subjects concerned.
    pub subject_categories: Marked<Vec<String>>,
    /// (a) Approximate number of data subjects concerned.
    pub subjects: Marked<u64>,
    /// (a) Categories of personal data records concerned.
    pub record_categories: Marked<Vec<String>>,
    /// (a) Approximate number of personal data records concerned.
    pub records: Marked<u64>,
    /// (b) Name and contact details of the data protection officer or other contact point.
    pub contact_point: Marked<String>,
    /// (c) Likely consequences of the breach.
    pub consequences: Marked<String>,
    /// (d) Measures taken or proposed to address the breach and mitigate its effects.
    pub measures: Marked<String>,
}

/// Longest free text of an incident field, in bytes.
pub const MAX_TEXT: usize = 8 * 1024;
/// Longest incident title, in bytes.
pub const MAX_TITLE: usize = 200;

pub(crate) fn check_text(text: &str, max: usize, what: &str) -> Result<()> {
    if text.trim().is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if text.len() > max {
        return Err(Error::invalid(format!("{what} is longer than {max} bytes")));
    }
    if text
        .chars()
        .any(|c| c.is_control() && c != '\n' && c != '\t')
    {
        return Err(Error::invalid(format!(
            "{what} contains control characters"
        )));
    }
    Ok(())
}

impl Details {
    /// Checks every field's marking and text.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the field.
    pub fn validate(&self) -> Result<()> {
        self.nature.check("nature")?;
        self.subject_categories.check("subject_categories")?;
        self.subjects.check("subjects")?;
        self.record_categories.check("record_categories")?;
        self.records.check("records")?;
        self.contact_point.check("contact_point")?;
        self.consequences.check("consequences")?;
        self.measures.check("measures")?;
        for (text, what) in [
            (&self.nature.value, "nature"),
            (&self.contact_point.value, "contact_point"),
            (&self.consequences.value, "consequences"),
            (&self.measures.value, "measures"),
        ] {
            if let Some(text) = text {
                check_text(text, MAX_TEXT, what)?;
            }
        }
        for (list, what) in [
            (&self.subject_categories.value, "subject_categories"),
            (&self.record_categories.value, "record_categories"),
        ] {
            for item in list.iter().flatten() {
                check_text(item, MAX_TITLE, what)?;
            }
        }
        Ok(())
    }
}

/// One phase of the filing with the supervisory authority (Art. 33(4): information may be given
/// in phases): what was filed, when, and the authority's reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Filing {
    /// 1 for the initial notification, then each follow-up.
    pub phase: u32,
    /// When it was filed.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// Who recorded it.
    pub by: BreachActor,
    /// The evidence: the authority's reference or receipt.
    pub reference: String,
    /// The details as filed.
    pub details: Details,
}

/// What opening an incident needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewIncident {
    /// A short title (customer-facing: it appears in notices).
    pub title: String,
    /// Operational severity.
    pub severity: Severity,
    /// The GDPR assessment so far.
    pub assessment: Assessment,
    /// When leadmaps became aware of it: recorded once, never edited. Not in the future.
    pub aware_at: OffsetDateTime,
    /// Affected workspaces.
    pub workspaces: Vec<WorkspaceId>,
    /// Affected data sets and leadmaps' role for each.
    pub data_sets: Vec<DataSet>,
    /// The Art. 33(3) details known so far.
    pub details: Details,
}

/// An incident as stored. Change it only through its methods, which keep the rules: the
/// awareness time never moves, the status only moves forward, obligations are derived from the
/// rules, never typed in, and every change bumps `version` (the stores refuse a change that does
/// not follow the stored version, or that moves `aware_at`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    /// Its id.
    pub id: IncidentId,
    /// 1 when opened, then one more with every change.
    pub version: u64,
    /// A short title.
    pub title: String,
    /// Operational severity.
    pub severity: Severity,
    /// The GDPR assessment.
    pub assessment: Assessment,
    /// When leadmaps became aware: the clocks run from here. Recorded once.
    #[serde(with = "time::serde::rfc3339")]
    pub aware_at: OffsetDateTime,
    /// When it was opened in leadmaps.
    #[serde(with = "time::serde::rfc3339")]
    pub opened_at: OffsetDateTime,
    /// Who opened it.
    pub opened_by: BreachActor,
    /// When it last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Where it stands.
    pub status: Status,
    /// Affected workspaces, sorted, without duplicates.
    pub workspaces: Vec<WorkspaceId>,
    /// Affected data sets.
    pub data_sets: Vec<DataSet>,
    /// The Art. 33(3) details.
    pub details: Details,
    /// The version of the rule set its obligations come from: the one in force at `aware_at`.
    pub rule_set: String,
    /// What it obliges leadmaps to do, by deadline.
    pub obligations: Vec<Obligation>,
    /// The phases filed with the supervisory authority.
    pub filings: Vec<Filing>,
}

/// Serialised as `staff:<uuid>` or `system:<task>`.
impl Serialize for BreachActor {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&actor_name(*self))
    }
}

impl<'de> Deserialize<'de> for BreachActor {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        parse_actor(&text).ok_or_else(|| serde::de::Error::custom("malformed breach actor"))
    }
}

/// `staff:<uuid>` or `system:<task>`.
pub fn actor_name(actor: BreachActor) -> String {
    match actor {
        BreachActor::Staff(staff) => format!("staff:{staff}"),
        BreachActor::System(task) => format!("system:{}", task.as_str()),
    }
}

/// Parses [`actor_name`].
pub fn parse_actor(text: &str) -> Option<BreachActor> {
    let (kind, rest) = text.split_once(':')?;
    match kind {
        "staff" => rest
            .parse::<StaffId>()
            .ok()
            .filter(|id| id.to_string() == rest)
            .map(BreachActor::Staff),
        "system" => SystemTask::parse(rest).map(BreachActor::System),
        _ => None,
    }
}

fn normalise_workspaces(mut workspaces: Vec<WorkspaceId>) -> Result<Vec<WorkspaceId>> {
    workspaces.sort();
    workspaces.dedup();
    if workspaces.contains(&WorkspaceId::INSTANCE) {
        return Err(Error::invalid(
            "the instance tenant is not a customer workspace",
        ));
    }
    Ok(workspaces)
}

fn check_data_sets(data_sets: &[DataSet]) -> Result<()> {
    for set in data_sets {
        check_text(&set.name, MAX_TITLE, "data set name")?;
    }
    Ok(())
}

impl Incident {
    /// Opens an incident at `now` by `by`: checks the input, picks the rule set in force at the
    /// awareness time and derives the obligations.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad title, details or data set, an awareness time in the future,
    /// a risk without personal data, or no rule set in force at the awareness time.
    pub fn open(
        new: NewIncident,
        rules: &RuleBook,
        by: BreachActor,
        now: OffsetDateTime,
    ) -> Result<Incident> {
        let now = audit_time(now);
        let aware_at = audit_time(new.aware_at);
        if aware_at > now {
            return Err(Error::invalid("the awareness time is in the future"));
        }
        check_text(&new.title, MAX_TITLE, "title")?;
        new.assessment.validate()?;
        new.details.validate()?;
        check_data_sets(&new.data_sets)?;
        let rule_set = rules.in_force_at(aware_at)?;
        let mut incident = Incident {
            id: IncidentId::new(),
            version: 1,
            title: new.title,
            severity: new.severity,
            assessment: new.assessment,
            aware_at,
            opened_at: now,
            opened_by: by,
            updated_at: now,
            status: Status::Open,
            workspaces: normalise_workspaces(new.workspaces)?,
            data_sets: new.data_sets,
            details: new.details,
            rule_set: rule_set.version.clone(),
            obligations: Vec::new(),
            filings: Vec::new(),
        };
        incident.obligations = rule_set.obligations_for(&incident);
        Ok(incident)
    }

    fn touch(&mut self, now: OffsetDateTime) -> Result<()> {
        if self.status == Status::Closed {
            return Err(Error::Conflict("the incident is closed"));
        }
        self.version += 1;
        self.updated_at = audit_time(now).max(self.updated_at);
        Ok(())
    }

    /// Recomputes the obligations from the rule set (by version) after a change of what the
    /// rules look at: obligations already done keep their state; pending ones are replaced by
    /// what the rules now ask (a stated late reason survives); ones no longer asked for go.
    fn recompute(&mut self, rules: &RuleBook) -> Result<()> {
        let rule_set = rules
            .version(&self.rule_set)
            .ok_or_else(|| Error::invalid("the incident's rule set is not loaded"))?;
        let fresh = rule_set.obligations_for(self);
        let mut kept: Vec<Obligation> = self
            .obligations
            .iter()
            .filter(|o| matches!(o.state, ObligationState::Done { .. }))
            .cloned()
            .collect();
        for mut obligation in fresh {
            if kept.iter().any(|o| o.id == obligation.id) {
                continue;
            }
            if let Some(old) = self.obligations.iter().find(|o| o.id == obligation.id) {
                obligation.state = old.state.clone();
            }
            kept.push(obligation);
        }
        kept.sort_by_key(|a| (a.due_at, a.id));
        self.obligations = kept;
        Ok(())
    }

    /// Changes the severity, the assessment, the affected workspaces and data sets (each when
    /// given) and recomputes the obligations. The awareness time does not move.
    ///
    /// # Errors
    /// [`Error::Invalid`] for bad input; [`Error::Conflict`] once closed.
    pub fn reassess(
        &mut self,
        rules: &RuleBook,
        change: Reassessment,
        now: OffsetDateTime,
    ) -> Result<()> {
        if let Some(assessment) = &change.assessment {
            assessment.validate()?;
        }
        if let Some(data_sets) = &change.data_sets {
            check_data_sets(data_sets)?;
        }
        let workspaces = change.workspaces.map(normalise_workspaces).transpose()?;
        self.touch(now)?;
        if let Some(severity) = change.severity {
            self.severity = severity;
        }
        if let Some(assessment) = change.assessment {
            self.assessment = assessment;
        }
        if let Some(workspaces) = workspaces {
            self.workspaces = workspaces;
        }
        if let Some(data_sets) = change.data_sets {
            self.data_sets = data_sets;
        }
        self.recompute(rules)
    }

    /// Replaces the Art. 33(3) details.
    ///
    /// # Errors
    /// [`Error::Invalid`]; [`Error::Conflict`] once closed.
    pub fn set_details(&mut self, details: Details, now: OffsetDateTime) -> Result<()> {
        details.validate()?;
        self.touch(now)?;
        self.details = details;
        Ok(())
    }

    /// Moves the status forward (contained, resolved). Closing is [`Incident::close`].
    ///
    /// # Errors
    /// [`Error::Invalid`] for a step back or to closed; [`Error::Conflict`] once closed.
    pub fn advance(&mut self, status: Status, now: OffsetDateTime) -> Result<()> {
        if status == Status::Closed {
            return Err(Error::invalid("close an incident with close"));
        }
        if status <= self.status {
            return Err(Error::invalid("the status only moves forward"));
        }
        self.touch(now)?;
        self.status = status;
        Ok(())
    }

    /// Closes the incident: only once every obligation is done, and every one done late has its
    /// reason stated.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming what is outstanding; [`Error::Conflict`] once closed.
    pub fn close(&mut self, now: OffsetDateTime) -> Result<()> {
        check_all_settled(&self.obligations)?;
        self.touch(now)?;
        self.status = Status::Closed;
        Ok(())
    }

    /// The obligation with this id.
    ///
    /// # Errors
    /// [`Error::NotFound`].
    pub fn obligation(&self, id: ObligationId) -> Result<&Obligation> {
        self.obligations
            .iter()
            .find(|o| o.id == id)
            .ok_or(Error::NotFound)
    }

    fn obligation_mut(&mut self, id: ObligationId) -> Result<&mut Obligation> {
        self.obligations
            .iter_mut()
            .find(|o| o.id == id)
            .ok_or(Error::NotFound)
    }

    /// Acknowledges an obligation as done at `now` with `evidence` (for the authority filing:
    /// the authority's reference; it is recorded as the next filing phase). After the deadline
    /// a reason for the delay is required (GDPR Art. 33(1)): given here, or stated before. An
    /// authority obligation already done takes a follow-up phase (Art. 33(4)).
    ///
    /// # Errors
    /// [`Error::Invalid`] for empty evidence or a late acknowledgement without a reason;
    /// [`Error::NotFound`] for an unknown obligation; [`Error::Conflict`] once closed.
    pub fn acknowledge(
        &mut self,
        obligation: ObligationId,
        evidence: &str,
        late_reason: Option<&str>,
        by: BreachActor,
        now: OffsetDateTime,
    ) -> Result<()> {
        let now = audit_time(now);
        check_text(evidence, MAX_TEXT, "evidence")?;
        if let Some(reason) = late_reason {
            check_text(reason, MAX_TEXT, "late reason")?;
        }
        let target = self.obligation(obligation)?.clone();
        let follow_up = target.duty == Duty::NotifyAuthority
            && matches!(target.state, ObligationState::Done { .. });
        if !follow_up {
            target.check_done(now, late_reason, true)?;
        }
        self.touch(now)?;
        if target.duty == Duty::NotifyAuthority {
            self.filings.push(Filing {
                phase: self.filings.len() as u32 + 1,
                at: now,
                by,
                reference: evidence.to_owned(),
                details: self.details.clone(),
            });
        }
        if !follow_up {
            self.obligation_mut(obligation)?
                .mark_done(now, by, evidence, late_reason);
        } else if let Some(reason) = late_reason {
            self.obligation_mut(obligation)?
                .state_reason(reason, by, now)?;
        }
        Ok(())
    }

    /// Records that the notifier sent an automatic notice for `obligation` at `now`. Unlike
    /// [`Incident::acknowledge`], a send after the deadline is recorded without a reason (the
    /// notifier cannot know it): the obligation then demands one from staff.
    ///
    /// # Errors
    /// [`Error::NotFound`]; [`Error::Conflict`] once closed.
    pub fn record_sent(
        &mut self,
        obligation: ObligationId,
        evidence: &str,
        by: BreachActor,
        now: OffsetDateTime,
    ) -> Result<()> {
        let now = audit_time(now);
        if matches!(
            self.obligation(obligation)?.state,
            ObligationState::Done { .. }
        ) {
            return Ok(());
        }
        self.touch(now)?;
        self.obligation_mut(obligation)?
            .mark_done(now, by, evidence, None);
        Ok(())
    }

    /// States the reason an obligation is late (before it is done, or after it was done late).
    ///
    /// # Errors
    /// [`Error::Invalid`] before the deadline or for an empty reason; [`Error::NotFound`];
    /// [`Error::Conflict`] once closed.
    pub fn state_reason(
        &mut self,
        obligation: ObligationId,
        reason: &str,
        by: BreachActor,
        now: OffsetDateTime,
    ) -> Result<()> {
        check_text(reason, MAX_TEXT, "late reason")?;
        let now = audit_time(now);
        self.obligation(obligation)?
            .clone()
            .state_reason(reason, by, now)?;
        self.touch(now)?;
        self.obligation_mut(obligation)?
            .state_reason(reason, by, now)
    }
}

/// What [`Incident::reassess`] changes; `None` keeps a field.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reassessment {
    /// A new severity.
    pub severity: Option<Severity>,
    /// A new assessment.
    pub assessment: Option<Assessment>,
    /// The affected workspaces, replaced.
    pub workspaces: Option<Vec<WorkspaceId>>,
    /// The affected data sets, replaced.
    pub data_sets: Option<Vec<DataSet>>,
}

/// The checks a store makes before replacing `stored` by `next`: the same incident, the next
/// version, the same awareness time and opening, and `stored` not closed. Every store calls it
/// in the transaction that replaces the row.
///
/// # Errors
/// [`Error::Invalid`] when the awareness time or the opening would change;
/// [`Error::Conflict`] when `next` does not follow the stored version or `stored` is closed.
pub fn check_update(stored: &Incident, next: &Incident) -> Result<()> {
    if stored.id != next.id {
        return Err(Error::invalid("another incident"));
    }
    if stored.aware_at != next.aware_at {
        return Err(Error::invalid(
            "the awareness time is recorded once and never edited",
        ));
    }
    if stored.opened_at != next.opened_at || stored.opened_by != next.opened_by {
        return Err(Error::invalid("the opening is recorded once"));
    }
    if stored.status == Status::Closed {
        return Err(Error::Conflict("the incident is closed"));
    }
    if next.version != stored.version + 1 {
        return Err(Error::Conflict("the incident changed meanwhile, retry"));
    }
    Ok(())
}
