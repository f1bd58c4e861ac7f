//! Rules as versioned data: which incidents oblige what, by when, and with which reminders.
//!
//! A changed legal deadline is a new [`RuleSet`] with a later `effective_from`, loaded beside the
//! old ones in a [`RuleBook`], not a code change. An incident takes the rule set in force when
//! leadmaps became aware of it and keeps its version, so its deadlines never move under it.

use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use super::incident::{Assessment, DataRole, Incident, ObligationId, Risk, Severity};
use super::obligation::{Obligation, ObligationState};
use crate::error::{Error, Result};
use crate::tenancy::WorkspaceId;

/// What an obligation asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Duty {
    /// File with the supervisory authority (the Dutch Autoriteit Persoonsgegevens): GDPR Art.
    /// 33(1), leadmaps as controller.
    NotifyAuthority,
    /// Notify the customer, who is the controller: GDPR Art. 33(2), leadmaps as processor.
    NotifyCustomer,
    /// E-mail the admins of an affected workspace: leadmaps' promise for S0/S1 incidents and
    /// every personal-data breach.
    EmailAdmins,
    /// Communicate the breach to the data subjects: GDPR Art. 34(1), high risk.
    NotifyDataSubjects,
    /// Answer the reporter of a vulnerability (leadmaps' disclosure policy).
    AnswerReporter,
    /// Disclose a fixed vulnerability publicly (leadmaps' disclosure policy).
    Disclose,
}

impl Duty {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Duty::NotifyAuthority => "notify_authority",
            Duty::NotifyCustomer => "notify_customer",
            Duty::EmailAdmins => "email_admins",
            Duty::NotifyDataSubjects => "notify_data_subjects",
            Duty::AnswerReporter => "answer_reporter",
            Duty::Disclose => "disclose",
        }
    }

    /// A short description for people.
    pub const fn describe(self) -> &'static str {
        match self {
            Duty::NotifyAuthority => "file with the supervisory authority",
            Duty::NotifyCustomer => "notify the affected customer (controller)",
            Duty::EmailAdmins => "e-mail the admins of the affected workspace",
            Duty::NotifyDataSubjects => "communicate the breach to the data subjects",
            Duty::AnswerReporter => "answer the reporter of the vulnerability",
            Duty::Disclose => "disclose the vulnerability publicly",
        }
    }
}

/// When a rule applies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Personal data is involved.
    PersonalData,
    /// The assessed risk is at least this.
    RiskAtLeast(Risk),
    /// The severity is this or worse (S0 is the worst).
    SeverityAtLeast(Severity),
    /// leadmaps has this role for at least one affected data set.
    Role(DataRole),
    /// Every condition holds.
    All(Vec<Condition>),
    /// At least one holds.
    Any(Vec<Condition>),
    /// The condition does not hold.
    Not(Box<Condition>),
}

impl Condition {
    /// Whether it holds for `facts` (an [`Incident`], a vulnerability report, ...).
    pub fn holds<F: Facts + ?Sized>(&self, facts: &F) -> bool {
        match self {
            Condition::PersonalData => facts.assessment().personal_data,
            Condition::RiskAtLeast(risk) => {
                let assessment = facts.assessment();
                assessment.personal_data && assessment.risk >= *risk
            }
            Condition::SeverityAtLeast(severity) => facts.severity() <= *severity,
            Condition::Role(role) => facts.has_role(*role),
            Condition::All(all) => all.iter().all(|c| c.holds(facts)),
            Condition::Any(any) => any.iter().any(|c| c.holds(facts)),
            Condition::Not(inner) => !inner.holds(facts),
        }
    }
}

/// What rules look at and what obligations are derived for: an [`Incident`], or another
/// subject whose deadlines come from a rule set (a vulnerability report,
/// [`crate::vulnerability::Report`]).
pub trait Facts {
    /// The operational severity.
    fn severity(&self) -> Severity;
    /// The GDPR assessment ([`Assessment::NONE`] when personal data is not at stake).
    fn assessment(&self) -> Assessment;
    /// Whether leadmaps has `role` for at least one affected data set.
    fn has_role(&self, role: DataRole) -> bool;
    /// The affected workspaces, for rules owed per workspace.
    fn workspaces(&self) -> &[WorkspaceId];
    /// When the clocks start (the awareness or receipt time).
    fn clock_start(&self) -> OffsetDateTime;
    /// The id of the obligation `rule` gives (for `workspace`): stable across recomputation.
    fn obligation_id(&self, rule: &str, workspace: Option<WorkspaceId>) -> ObligationId;
}

impl Facts for Incident {
    fn severity(&self) -> Severity {
        self.severity
    }
    fn assessment(&self) -> Assessment {
        self.assessment
    }
    fn has_role(&self, role: DataRole) -> bool {
        self.data_sets.iter().any(|set| set.role == role)
    }
    fn workspaces(&self) -> &[WorkspaceId] {
        &self.workspaces
    }
    fn clock_start(&self) -> OffsetDateTime {
        self.aware_at
    }
    fn obligation_id(&self, rule: &str, workspace: Option<WorkspaceId>) -> ObligationId {
        ObligationId::derive(self.id, rule, workspace)
    }
}

/// Whom a rule's obligation is owed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    /// One obligation per incident.
    Incident,
    /// One obligation per affected workspace.
    Workspace,
}

/// How an obligation is met.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum Sending {
    /// By staff, who acknowledge it with evidence (a filing, a letter).
    Manual,
    /// By the notifier, which e-mails the workspace's admins `lead_minutes` before the deadline
    /// unless staff acknowledged it earlier. The lead leaves room for the notifier's interval and
    /// the mail transport, and the time before it for staff to review and send it themselves.
    Automatic {
        /// Minutes before the deadline.
        lead_minutes: u32,
    },
}

/// One rule: when it applies, what it obliges, by when after awareness, and its reminders.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// A stable id, kept across rule-set versions (it names the obligation).
    pub id: String,
    /// What it obliges.
    pub duty: Duty,
    /// The legal or contractual basis.
    pub basis: String,
    /// When it applies.
    pub when: Condition,
    /// Per incident or per affected workspace.
    pub per: Per,
    /// The deadline, in minutes after the awareness time.
    pub within_minutes: u32,
    /// Who meets it.
    pub sending: Sending,
    /// Reminders to the incident contacts, in minutes before the deadline.
    pub reminders: Vec<u32>,
}

/// A versioned set of rules.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleSet {
    /// Its version, e.g. `gdpr-2016-679/v1`.
    pub version: String,
    /// Incidents leadmaps became aware of from this instant take this set (until a later one).
    #[serde(with = "time::serde::rfc3339")]
    pub effective_from: OffsetDateTime,
    /// The rules.
    pub rules: Vec<Rule>,
}

const HOUR: u32 = 60;

impl RuleSet {
    /// The built-in rules for the GDPR (Regulation (EU) 2016/679) and leadmaps' own promise:
    ///
    /// | rule | when | duty | deadline | sent by |
    /// |---|---|---|---|---|
    /// | `gdpr.art33-1.authority` | personal data, a risk, leadmaps controller | file with the authority | 72 h | staff |
    /// | `gdpr.art33-2.customer` | personal data, leadmaps processor | notify each affected customer | 24 h ("without undue delay") | notifier, 1 h ahead |
    /// | `leadmaps.admin-email` | S0/S1, or personal data | e-mail each affected workspace's admins | 4 h | notifier, 15 min ahead |
    /// | `gdpr.art34.data-subjects` | personal data, high risk, leadmaps controller | tell the data subjects | 72 h ("without undue delay") | staff |
    pub fn gdpr_2016_679() -> Self {
        use Condition::{All, Any, PersonalData, RiskAtLeast, Role, SeverityAtLeast};
        RuleSet {
            version: "gdpr-2016-679/v1".into(),
            effective_from: time::macros::datetime!(2018-05-25 0:00 UTC),
            rules: vec![
                Rule {
                    id: "gdpr.art33-1.authority".into(),
                    duty: Duty::NotifyAuthority,
                    basis: "GDPR Art. 33(1)".into(),
                    when: All(vec![
                        PersonalData,
                        RiskAtLeast(Risk::Risk),
                        Role(DataRole::Controller),
                    ]),
                    per: Per::Incident,
                    within_minutes: 72 * HOUR,
                    sending: Sending::Manual,
                    reminders: vec![48 * HOUR, 24 * HOUR, 8 * HOUR, 2 * HOUR],
                },
                Rule {
                    id: "gdpr.art33-2.customer".into(),
                    duty: Duty::NotifyCustomer,
                    basis: "GDPR Art. 33(2)".into(),
                    when: All(vec![PersonalData, Role(DataRole::Processor)]),
                    per: Per::Workspace,
                    within_minutes: 24 * HOUR,
                    sending: Sending::Automatic { lead_minutes: HOUR },
                    reminders: vec![4 * HOUR, 2 * HOUR],
                },
                Rule {
                    id: "leadmaps.admin-email".into(),
                    duty: Duty::EmailAdmins,
                    basis: "leadmaps security promise: S0/S1 and personal-data breaches".into(),
                    when: Any(vec![SeverityAtLeast(Severity::S1), PersonalData]),
                    per: Per::Workspace,
                    within_minutes: 4 * HOUR,
                    sending: Sending::Automatic { lead_minutes: 15 },
                    reminders: vec![HOUR],
                },
                Rule {
                    id: "gdpr.art34.data-subjects".into(),
                    duty: Duty::NotifyDataSubjects,
                    basis: "GDPR Art. 34(1)".into(),
                    when: All(vec![
                        PersonalData,
                        RiskAtLeast(Risk::High),
                        Role(DataRole::Controller),
                    ]),
                    per: Per::Incident,
                    within_minutes: 72 * HOUR,
                    sending: Sending::Manual,
                    reminders: vec![24 * HOUR, 4 * HOUR],
                },
            ],
        }
    }

    /// The built-in rules for vulnerability reports (leadmaps' disclosure policy, published in
    /// `/.well-known/security.txt`'s `Policy`), from the time a report is received:
    ///
    /// | rule | when | duty | deadline |
    /// |---|---|---|---|
    /// | `vdp.answer-reporter` | every report | answer the reporter | 48 h |
    /// | `vdp.disclose` | not critical (critical findings are disclosed when fixed and agreed) | disclose publicly | 90 days |
    ///
    /// Both are met by staff, who acknowledge them with evidence (the answer's reference, the
    /// advisory's address). An actively exploited report also opens an S0 incident, whose
    /// obligations come from [`RuleSet::gdpr_2016_679`].
    pub fn vulnerability_disclosure() -> Self {
        RuleSet {
            version: "vulnerability-disclosure/v1".into(),
            effective_from: time::macros::datetime!(2020-01-01 0:00 UTC),
            rules: vec![
                Rule {
                    id: "vdp.answer-reporter".into(),
                    duty: Duty::AnswerReporter,
                    basis: "leadmaps vulnerability disclosure policy: answer within 48 hours"
                        .into(),
                    when: Condition::All(Vec::new()),
                    per: Per::Incident,
                    within_minutes: 48 * HOUR,
                    sending: Sending::Manual,
                    reminders: vec![24 * HOUR, 4 * HOUR],
                },
                Rule {
                    id: "vdp.disclose".into(),
                    duty: Duty::Disclose,
                    basis: "leadmaps vulnerability disclosure policy: disclose non-critical \
                            findings within 90 days"
                        .into(),
                    when: Condition::Not(Box::new(Condition::SeverityAtLeast(Severity::S0))),
                    per: Per::Incident,
                    within_minutes: 90 * 24 * HOUR,
                    sending: Sending::Manual,
                    reminders: vec![30 * 24 * HOUR, 7 * 24 * HOUR, 24 * HOUR],
                },
            ],
        }
    }

    /// Checks the set: a version, unique rule ids, deadlines, reminders and leads within the
    /// deadline, automatic sending only per workspace (the notifier e-mails a workspace's admins).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule.
    pub fn validate(&self) -> Result<()> {
        if self.version.trim().is_empty() || self.version.len() > 100 {
            return Err(Error::invalid(
                "a rule set needs a version of 1 to 100 bytes",
            ));
        }
        let mut ids = std::collections::BTreeSet::new();
        for rule in &self.rules {
            let bad = |what: &str| Error::invalid(format!("rule {}: {what}", rule.id));
            if rule.id.is_empty() || rule.id.len() > 100 || !ids.insert(rule.id.as_str()) {
                return Err(Error::invalid("rule ids must be 1 to 100 bytes and unique"));
            }
            if rule.within_minutes == 0 {
                return Err(bad("the deadline must be after the awareness time"));
            }
            if rule.reminders.iter().any(|m| *m >= rule.within_minutes) {
                return Err(bad("a reminder falls before the awareness time"));
            }
            if let Sending::Automatic { lead_minutes } = rule.sending {
                if lead_minutes >= rule.within_minutes {
                    return Err(bad("the sending lead is longer than the deadline"));
                }
                if rule.per != Per::Workspace {
                    return Err(bad("automatic sending goes to a workspace's admins"));
                }
            }
        }
        Ok(())
    }

    /// The obligations this set gives `facts` (an incident or another subject), by deadline.
    /// Deadlines run from [`Facts::clock_start`]; every obligation starts pending and names this
    /// set's version.
    pub fn obligations_for<F: Facts + ?Sized>(&self, facts: &F) -> Vec<Obligation> {
        let mut out = Vec::new();
        for rule in self.rules.iter().filter(|r| r.when.holds(facts)) {
            let targets: Vec<Option<_>> = match rule.per {
                Per::Incident => vec![None],
                Per::Workspace => facts.workspaces().iter().copied().map(Some).collect(),
            };
            for workspace in targets {
                let mut reminders = rule.reminders.clone();
                reminders.sort_unstable_by(|a, b| b.cmp(a));
                reminders.dedup();
                out.push(Obligation {
                    id: facts.obligation_id(&rule.id, workspace),
                    rule: rule.id.clone(),
                    rule_set: self.version.clone(),
                    duty: rule.duty,
                    basis: rule.basis.clone(),
                    workspace,
                    due_at: facts.clock_start() + Duration::minutes(i64::from(rule.within_minutes)),
                    sending: rule.sending,
                    reminders,
                    state: ObligationState::Pending,
                });
            }
        }
        out.sort_by_key(|a| (a.due_at, a.id));
        out
    }
}

/// Every loaded rule set. An incident takes the one in force at its awareness time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleBook {
    sets: Vec<RuleSet>,
}

impl Default for RuleBook {
    fn default() -> Self {
        Self {
            sets: vec![RuleSet::gdpr_2016_679()],
        }
    }
}

impl RuleBook {
    /// A book of `sets`, each validated, versions unique.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a bad set, a version twice, or no set at all.
    pub fn new(sets: Vec<RuleSet>) -> Result<Self> {
        if sets.is_empty() {
            return Err(Error::invalid("a rule book needs a rule set"));
        }
        let mut versions = std::collections::BTreeSet::new();
        for set in &sets {
            set.validate()?;
            if !versions.insert(set.version.as_str()) {
                return Err(Error::invalid("a rule set version appears twice"));
            }
        }
        let mut sets = sets;
        sets.sort_by_key(|s| s.effective_from);
        Ok(Self { sets })
    }

    /// The built-in book: [`RuleSet::gdpr_2016_679`] plus `extra` sets (e.g. read from JSON).
    ///
    /// # Errors
    /// As [`RuleBook::new`].
    pub fn with(extra: Vec<RuleSet>) -> Result<Self> {
        let mut sets = vec![RuleSet::gdpr_2016_679()];
        sets.extend(extra);
        Self::new(sets)
    }

    /// The set in force at `aware_at`: the latest whose `effective_from` is not after it.
    ///
    /// # Errors
    /// [`Error::Invalid`] when none is.
    pub fn in_force_at(&self, aware_at: OffsetDateTime) -> Result<&RuleSet> {
        self.sets
            .iter()
            .rev()
            .find(|s| s.effective_from <= aware_at)
            .ok_or_else(|| Error::invalid("no rule set is in force at the awareness time"))
    }

    /// The set with this version.
    pub fn version(&self, version: &str) -> Option<&RuleSet> {
        self.sets.iter().find(|s| s.version == version)
    }

    /// Every set, oldest first.
    pub fn sets(&self) -> &[RuleSet] {
        &self.sets
    }
}
