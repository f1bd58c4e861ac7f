//! The notification draft of GDPR Art. 33(3), in JSON and Markdown, phased as Art. 33(4)
//! allows: each field is marked known, estimated or unknown; a follow-up draft names what
//! changed since the last filing and what is still outstanding.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::incident::{
    Assessment, Certainty, DataSet, Details, Incident, IncidentId, Marked, Severity, Status,
};
use super::obligation::ObligationState;
use super::rules::Duty;

/// One field of the draft.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DraftField {
    /// A stable key, e.g. `data_subjects_approx`.
    pub key: &'static str,
    /// The provision that asks for it, e.g. `Art. 33(3)(a)`.
    pub article: &'static str,
    /// What it is, for people.
    pub label: &'static str,
    /// How sure it is.
    pub certainty: Certainty,
    /// The value (`null` when unknown).
    pub value: Value,
}

/// A filing made before this draft.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FiledPhase {
    /// Its phase.
    pub phase: u32,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The authority's reference.
    pub reference: String,
}

/// A notification draft for the supervisory authority.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Draft {
    /// The incident.
    pub incident: IncidentId,
    /// Its title.
    pub title: String,
    /// 1 for the initial notification, then each follow-up (Art. 33(4)).
    pub phase: u32,
    /// When this draft was made.
    #[serde(with = "time::serde::rfc3339")]
    pub generated_at: OffsetDateTime,
    /// When leadmaps became aware.
    #[serde(with = "time::serde::rfc3339")]
    pub aware_at: OffsetDateTime,
    /// The filing deadline, when the incident must be filed.
    #[serde(with = "time::serde::rfc3339::option")]
    pub filing_due_at: Option<OffsetDateTime>,
    /// Operational severity.
    pub severity: Severity,
    /// The GDPR assessment.
    pub assessment: Assessment,
    /// The incident's status.
    pub status: Status,
    /// How many customer workspaces are affected.
    pub affected_customers: usize,
    /// Affected data sets and leadmaps' role for each.
    pub data_sets: Vec<DataSet>,
    /// Every Art. 33(3) field, marked; and, past the deadline, the reason for the delay
    /// (Art. 33(1)).
    pub fields: Vec<DraftField>,
    /// Keys of fields not yet known (estimated or unknown): to follow in a later phase.
    pub outstanding: Vec<&'static str>,
    /// Keys of fields that changed since the last filing (empty for phase 1).
    pub changed_since_last_filing: Vec<&'static str>,
    /// Earlier phases.
    pub filed: Vec<FiledPhase>,
}

fn marked<T: Serialize>(
    key: &'static str,
    article: &'static str,
    label: &'static str,
    field: &Marked<T>,
) -> DraftField {
    DraftField {
        key,
        article,
        label,
        certainty: field.certainty,
        value: field.value.as_ref().map_or(Value::Null, |v| {
            serde_json::to_value(v).unwrap_or(Value::Null)
        }),
    }
}

/// The Art. 33(3) fields of `details`, in the order of the article.
fn fields(details: &Details) -> Vec<DraftField> {
    const A: &str = "Art. 33(3)(a)";
    vec![
        marked(
            "nature",
            A,
            "Nature of the personal data breach",
            &details.nature,
        ),
        marked(
            "data_subject_categories",
            A,
            "Categories of data subjects concerned",
            &details.subject_categories,
        ),
        marked(
            "data_subjects_approx",
            A,
            "Approximate number of data subjects concerned",
            &details.subjects,
        ),
        marked(
            "record_categories",
            A,
            "Categories of personal data records concerned",
            &details.record_categories,
        ),
        marked(
            "records_approx",
            A,
            "Approximate number of personal data records concerned",
            &details.records,
        ),
        marked(
            "contact_point",
            "Art. 33(3)(b)",
            "Data protection officer or other contact point",
            &details.contact_point,
        ),
        marked(
            "likely_consequences",
            "Art. 33(3)(c)",
            "Likely consequences of the breach",
            &details.consequences,
        ),
        marked(
            "measures",
            "Art. 33(3)(d)",
            "Measures taken or proposed, including mitigation",
            &details.measures,
        ),
    ]
}

impl Draft {
    /// The draft of `incident` as of `now`: the next phase after its filings.
    pub fn new(incident: &Incident, now: OffsetDateTime) -> Self {
        let mut fields = fields(&incident.details);
        let authority = incident
            .obligations
            .iter()
            .find(|o| o.duty == Duty::NotifyAuthority);
        if let Some(authority) = authority {
            let (filed_at, reason) = match &authority.state {
                ObligationState::Pending => (None, None),
                ObligationState::Late { reason, .. } => (None, Some(reason.clone())),
                ObligationState::Done {
                    at, late_reason, ..
                } => (Some(*at), late_reason.clone()),
            };
            if filed_at.unwrap_or(now) > authority.due_at {
                fields.push(DraftField {
                    key: "delay_reason",
                    article: "Art. 33(1)",
                    label: "Reasons for the delay (filed after 72 hours)",
                    certainty: if reason.is_some() {
                        Certainty::Known
                    } else {
                        Certainty::Unknown
                    },
                    value: reason.map_or(Value::Null, Value::String),
                });
            }
        }
        let outstanding = fields
            .iter()
            .filter(|f| f.certainty != Certainty::Known)
            .map(|f| f.key)
            .collect();
        let changed_since_last_filing = incident.filings.last().map_or_else(Vec::new, |last| {
            let before = self::fields(&last.details);
            fields
                .iter()
                .filter(|f| {
                    before
                        .iter()
                        .find(|b| b.key == f.key)
                        .is_none_or(|b| b.certainty != f.certainty || b.value != f.value)
                })
                .map(|f| f.key)
                .collect()
        });
        Draft {
            incident: incident.id,
            title: incident.title.clone(),
            phase: incident.filings.len() as u32 + 1,
            generated_at: now,
            aware_at: incident.aware_at,
            filing_due_at: authority.map(|o| o.due_at),
            severity: incident.severity,
            assessment: incident.assessment,
            status: incident.status,
            affected_customers: incident.workspaces.len(),
            data_sets: incident.data_sets.clone(),
            fields,
            outstanding,
            changed_since_last_filing,
            filed: incident
                .filings
                .iter()
                .map(|f| FiledPhase {
                    phase: f.phase,
                    at: f.at,
                    reference: f.reference.clone(),
                })
                .collect(),
        }
    }

    /// As JSON.
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or_else(|_| json!({}))
    }

    /// As Markdown: a heading, the facts, a table of the fields with their marking, and what
    /// is outstanding for the next phase.
    pub fn to_markdown(&self) -> String {
        let time = |at: OffsetDateTime| at.format(&Rfc3339).unwrap_or_default();
        let mut md = String::new();
        let kind = if self.phase == 1 {
            "initial notification".to_owned()
        } else {
            format!("follow-up, phase {} (Art. 33(4))", self.phase)
        };
        let _ = writeln!(
            md,
            "# Personal data breach notification: {}\n",
            cell(&self.title)
        );
        let _ = writeln!(md, "- Incident: `{}`", self.incident);
        let _ = writeln!(md, "- Draft: {kind}, made {}", time(self.generated_at));
        let _ = writeln!(md, "- Aware since: {}", time(self.aware_at));
        if let Some(due) = self.filing_due_at {
            let _ = writeln!(md, "- Filing due: {} (Art. 33(1), 72 hours)", time(due));
        }
        let _ = writeln!(
            md,
            "- Severity: {}; personal data: {}; risk: {}; status: {}",
            self.severity.as_str(),
            if self.assessment.personal_data {
                "yes"
            } else {
                "no"
            },
            self.assessment.risk.as_str(),
            self.status.as_str()
        );
        let _ = writeln!(md, "- Affected customers: {}", self.affected_customers);
        for set in &self.data_sets {
            let role = match set.role {
                super::incident::DataRole::Controller => "controller",
                super::incident::DataRole::Processor => "processor",
            };
            let _ = writeln!(md, "- Data set: {} (leadmaps is {role})", cell(&set.name));
        }
        let _ = writeln!(md, "\n| Field | Article | Marked | Value |");
        let _ = writeln!(md, "|---|---|---|---|");
        for field in &self.fields {
            let value = match &field.value {
                Value::Null => "—".to_owned(),
                Value::String(s) => cell(s),
                Value::Array(items) => items
                    .iter()
                    .map(|i| cell(i.as_str().unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", "),
                other => cell(&other.to_string()),
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {value} |",
                field.label,
                field.article,
                field.certainty.as_str()
            );
        }
        if !self.outstanding.is_empty() {
            let _ = writeln!(
                md,
                "\nTo follow in a later phase (Art. 33(4)): {}",
                self.outstanding.join(", ")
            );
        }
        if !self.changed_since_last_filing.is_empty() {
            let _ = writeln!(
                md,
                "\nChanged since the last filing: {}",
                self.changed_since_last_filing.join(", ")
            );
        }
        for filed in &self.filed {
            let _ = writeln!(
                md,
                "\nFiled phase {} at {}: reference {}",
                filed.phase,
                time(filed.at),
                cell(&filed.reference)
            );
        }
        md
    }
}

/// Text safe inside a Markdown table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}
