//! The breach clock, driven by a manual clock.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use time::macros::datetime;
use time::{Duration, OffsetDateTime};

use super::*;
use crate::audit::{AuditAction, AuditStoreExt};
use crate::auth::users::{User, UserStore};
use crate::clock::{Clock, ManualClock};
use crate::error::ErrorKind;
use crate::mail::{Email, Mailer};
use crate::memory::MemoryStore;
use crate::store::WorkspaceStore;
use crate::tenancy::{
    Action, BreachActor, Gate, Principal, Region, Role, StaffId, SystemTask, UserId, WorkspaceId,
};

const T: OffsetDateTime = datetime!(2026-03-02 09:00 UTC);

/// A mailer that keeps every message it is handed, duplicates included (unlike
/// [`crate::mail::Outbox`], which drops a repeated idempotency key), so a test sees every send.
#[derive(Default)]
struct Recorder(Mutex<Vec<Email>>);

impl Recorder {
    fn sent(&self) -> Vec<Email> {
        self.0.lock().unwrap().clone()
    }
}

#[async_trait]
impl Mailer for Recorder {
    async fn send(&self, email: &Email) -> crate::Result<()> {
        self.0.lock().unwrap().push(email.clone());
        Ok(())
    }
}

fn staff() -> BreachActor {
    BreachActor::Staff(StaffId::new())
}

fn s1_personal(workspaces: Vec<WorkspaceId>) -> NewIncident {
    NewIncident {
        title: "Account export readable without sign-in".into(),
        severity: Severity::S1,
        assessment: Assessment {
            personal_data: true,
            risk: Risk::Risk,
        },
        aware_at: T,
        workspaces,
        data_sets: vec![DataSet {
            name: "customer user accounts".into(),
            role: DataRole::Controller,
        }],
        details: Details::default(),
    }
}

fn by_duty(incident: &Incident, duty: Duty) -> Vec<&Obligation> {
    incident
        .obligations
        .iter()
        .filter(|o| o.duty == duty)
        .collect()
}

#[test]
fn an_s1_personal_data_incident_gets_the_admin_email_at_4h_and_the_filing_at_72h() {
    let ws = WorkspaceId::new();
    let rules = RuleBook::default();
    let incident = Incident::open(s1_personal(vec![ws]), &rules, staff(), T).unwrap();
    let email = by_duty(&incident, Duty::EmailAdmins);
    assert_eq!(email.len(), 1);
    assert_eq!(email[0].due_at, T + Duration::hours(4));
    assert_eq!(email[0].workspace, Some(ws));
    let filing = by_duty(&incident, Duty::NotifyAuthority);
    assert_eq!(filing.len(), 1);
    assert_eq!(filing[0].due_at, T + Duration::hours(72));
    assert_eq!(filing[0].rule_set, "gdpr-2016-679/v1");
    assert!(
        by_duty(&incident, Duty::NotifyDataSubjects).is_empty(),
        "no high risk"
    );
    assert!(
        by_duty(&incident, Duty::NotifyCustomer).is_empty(),
        "controller only"
    );

    // Ordered by deadline; at T nothing is due yet.
    let now = due(std::slice::from_ref(&incident), T);
    assert_eq!(
        now.iter().map(|d| d.duty).collect::<Vec<_>>(),
        [Duty::EmailAdmins, Duty::NotifyAuthority]
    );
    assert!(
        now.iter().all(|d| d.steps.is_empty()),
        "nothing early: {now:?}"
    );
    assert!(now.iter().all(|d| d.standing == Standing::Pending));
    // One second before each point nothing changes; at it, the step comes due.
    let steps_at = |at: OffsetDateTime| {
        due(std::slice::from_ref(&incident), at)
            .into_iter()
            .find(|d| d.duty == Duty::EmailAdmins)
            .unwrap()
            .steps
    };
    assert!(steps_at(T + Duration::hours(3) - Duration::seconds(1)).is_empty());
    assert_eq!(
        steps_at(T + Duration::hours(3)),
        [Step::Reminder { minutes_before: 60 }]
    );
    let send_at = T + Duration::hours(4) - Duration::minutes(15);
    assert_eq!(
        steps_at(send_at - Duration::seconds(1)),
        [Step::Reminder { minutes_before: 60 }]
    );
    assert_eq!(
        steps_at(send_at),
        [Step::Send, Step::Reminder { minutes_before: 60 }]
    );
    assert_eq!(
        steps_at(T + Duration::hours(4)),
        [Step::Send, Step::Overdue]
    );
}

#[test]
fn the_escalation_ladder_sends_only_the_latest_rung_passed() {
    let incident = Incident::open(s1_personal(vec![]), &RuleBook::default(), staff(), T).unwrap();
    let steps = |at| {
        due(std::slice::from_ref(&incident), at)
            .into_iter()
            .find(|d| d.duty == Duty::NotifyAuthority)
            .unwrap()
            .steps
    };
    assert!(steps(T + Duration::hours(23)).is_empty());
    assert_eq!(
        steps(T + Duration::hours(24)),
        [Step::Reminder {
            minutes_before: 48 * 60
        }]
    );
    // A notifier that was down for a day sends the rung it is at, not every rung it missed.
    assert_eq!(
        steps(T + Duration::hours(71)),
        [Step::Reminder {
            minutes_before: 2 * 60
        }]
    );
    assert_eq!(steps(T + Duration::hours(72)), [Step::Overdue]);
    let d = due(std::slice::from_ref(&incident), T + Duration::hours(72));
    assert_eq!(d[0].standing, Standing::Overdue);
}

#[test]
fn a_missed_deadline_demands_a_reason() {
    let rules = RuleBook::default();
    let mut incident = Incident::open(s1_personal(vec![]), &rules, staff(), T).unwrap();
    let filing = by_duty(&incident, Duty::NotifyAuthority)[0].id;
    let by = staff();
    // Before the deadline there is no delay to explain.
    let early = incident.state_reason(filing, "busy", by, T + Duration::hours(1));
    assert_eq!(early.unwrap_err().kind(), ErrorKind::Invalid);
    let late = T + Duration::hours(73);
    assert_eq!(
        incident.obligation(filing).unwrap().standing(late),
        Standing::Overdue
    );
    let refused = incident.acknowledge(filing, "AP ref 2026-001", None, by, late);
    assert_eq!(refused.unwrap_err().kind(), ErrorKind::Invalid);
    assert_eq!(incident.version, 1, "a refused change changes nothing");
    incident
        .acknowledge(
            filing,
            "AP ref 2026-001",
            Some("the scope was only established after forensic analysis"),
            by,
            late,
        )
        .unwrap();
    let done = incident.obligation(filing).unwrap();
    assert_eq!(done.standing(late), Standing::Done);
    assert!(matches!(
        &done.state,
        ObligationState::Done { late_reason: Some(r), evidence, .. }
            if r.contains("forensic") && evidence == "AP ref 2026-001"
    ));
    assert_eq!(incident.filings.len(), 1, "the filing is phase 1");

    // A reason stated while still late is kept when it is done.
    let mut other = Incident::open(s1_personal(vec![]), &rules, staff(), T).unwrap();
    let filing = by_duty(&other, Duty::NotifyAuthority)[0].id;
    other
        .state_reason(filing, "waiting for the hosting provider's logs", by, late)
        .unwrap();
    assert_eq!(
        other.obligation(filing).unwrap().standing(late),
        Standing::Late
    );
    other
        .acknowledge(
            filing,
            "AP ref 2026-002",
            None,
            by,
            late + Duration::hours(1),
        )
        .unwrap();
    assert!(other.obligation(filing).unwrap().is_settled());
}

#[test]
fn a_notice_sent_late_by_the_notifier_owes_a_reason_until_staff_state_it() {
    let ws = WorkspaceId::new();
    let mut incident =
        Incident::open(s1_personal(vec![ws]), &RuleBook::default(), staff(), T).unwrap();
    let email = by_duty(&incident, Duty::EmailAdmins)[0].id;
    let late = T + Duration::hours(5);
    incident
        .record_sent(email, "sent", BreachActor::System(SystemTask::Breach), late)
        .unwrap();
    let d = due(std::slice::from_ref(&incident), late);
    let owed = d.iter().find(|d| d.obligation == email).unwrap();
    assert_eq!(owed.standing, Standing::ReasonOwed);
    assert!(owed.steps.is_empty(), "nothing more to send");
    assert!(incident.close(late).is_err(), "not settled");
    incident
        .state_reason(
            email,
            "the notifier was down for maintenance",
            staff(),
            late,
        )
        .unwrap();
    assert!(
        due(std::slice::from_ref(&incident), late)
            .iter()
            .all(|d| d.obligation != email)
    );
}

#[test]
fn reassessing_recomputes_pending_obligations_from_the_awareness_time() {
    let rules = RuleBook::default();
    let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
    let new = NewIncident {
        severity: Severity::S3,
        assessment: Assessment::NONE,
        data_sets: vec![],
        ..s1_personal(vec![a])
    };
    let mut incident = Incident::open(new, &rules, staff(), T).unwrap();
    assert!(
        incident.obligations.is_empty(),
        "an S3 without personal data"
    );
    // Two days later it turns out to be a personal-data breach, as processor for two customers.
    let later = T + Duration::hours(48);
    incident
        .reassess(
            &rules,
            Reassessment {
                assessment: Some(Assessment {
                    personal_data: true,
                    risk: Risk::High,
                }),
                workspaces: Some(vec![b, a, a]),
                data_sets: Some(vec![
                    DataSet {
                        name: "analytics events".into(),
                        role: DataRole::Processor,
                    },
                    DataSet {
                        name: "customer user accounts".into(),
                        role: DataRole::Controller,
                    },
                ]),
                ..Reassessment::default()
            },
            later,
        )
        .unwrap();
    assert_eq!(incident.aware_at, T, "the awareness time never moves");
    assert_eq!(incident.workspaces.len(), 2, "deduplicated");
    assert_eq!(by_duty(&incident, Duty::NotifyCustomer).len(), 2);
    assert_eq!(by_duty(&incident, Duty::EmailAdmins).len(), 2);
    let authority = by_duty(&incident, Duty::NotifyAuthority);
    assert_eq!(
        authority[0].due_at,
        T + Duration::hours(72),
        "from awareness"
    );
    assert_eq!(by_duty(&incident, Duty::NotifyDataSubjects).len(), 1);
    let sorted = incident
        .obligations
        .windows(2)
        .all(|w| w[0].due_at <= w[1].due_at);
    assert!(sorted);

    // Done obligations survive a reassessment; pending ones the rules no longer ask for go.
    let email_a = incident
        .obligations
        .iter()
        .find(|o| o.duty == Duty::EmailAdmins && o.workspace == Some(a))
        .unwrap()
        .id;
    incident
        .acknowledge(
            email_a,
            "phoned and e-mailed",
            Some("found late"),
            staff(),
            later,
        )
        .unwrap();
    incident
        .reassess(
            &rules,
            Reassessment {
                assessment: Some(Assessment::NONE),
                ..Reassessment::default()
            },
            later,
        )
        .unwrap();
    assert_eq!(
        incident
            .obligations
            .iter()
            .map(|o| o.id)
            .collect::<Vec<_>>(),
        [email_a],
        "only the done one is left"
    );
    assert!(
        incident
            .reassess(
                &rules,
                Reassessment {
                    assessment: Some(Assessment {
                        personal_data: false,
                        risk: Risk::High
                    }),
                    ..Reassessment::default()
                },
                later
            )
            .is_err(),
        "no risk without personal data"
    );
}

#[test]
fn rules_are_versioned_data() {
    let json = serde_json::to_string(&RuleSet::gdpr_2016_679()).unwrap();
    let mut stricter: RuleSet = serde_json::from_str(&json).unwrap();
    assert_eq!(stricter, RuleSet::gdpr_2016_679(), "round trip");
    // A (hypothetical) amendment shortening the filing deadline to 48 hours from 2027 on.
    stricter.version = "gdpr-2016-679/v2".into();
    stricter.effective_from = datetime!(2027-01-01 0:00 UTC);
    let authority = stricter
        .rules
        .iter_mut()
        .find(|r| r.duty == Duty::NotifyAuthority)
        .unwrap();
    authority.within_minutes = 48 * 60;
    authority.reminders = vec![24 * 60];
    let book = RuleBook::with(vec![stricter]).unwrap();
    let old = Incident::open(s1_personal(vec![]), &book, staff(), T).unwrap();
    assert_eq!(
        by_duty(&old, Duty::NotifyAuthority)[0].due_at,
        T + Duration::hours(72)
    );
    let t2 = datetime!(2027-02-01 12:00 UTC);
    let new = Incident::open(
        NewIncident {
            aware_at: t2,
            ..s1_personal(vec![])
        },
        &book,
        staff(),
        t2,
    )
    .unwrap();
    assert_eq!(new.rule_set, "gdpr-2016-679/v2");
    let filing = by_duty(&new, Duty::NotifyAuthority)[0];
    assert_eq!(filing.due_at, t2 + Duration::hours(48));
    assert_eq!(filing.rule_set, "gdpr-2016-679/v2");
    // Bad sets are refused.
    let mut bad = RuleSet::gdpr_2016_679();
    bad.rules[0].reminders.push(80 * 60);
    assert!(bad.validate().is_err());
    assert!(
        RuleBook::with(vec![RuleSet::gdpr_2016_679()]).is_err(),
        "same version twice"
    );
    assert!(
        Incident::open(
            NewIncident {
                aware_at: datetime!(2017-01-01 0:00 UTC),
                ..s1_personal(vec![])
            },
            &book,
            staff(),
            T
        )
        .is_err(),
        "no rule set in force"
    );
    assert!(
        Incident::open(
            NewIncident {
                aware_at: T + Duration::minutes(1),
                ..s1_personal(vec![])
            },
            &book,
            staff(),
            T
        )
        .is_err(),
        "awareness in the future"
    );
}

#[test]
fn the_draft_marks_every_article_33_3_field() {
    let rules = RuleBook::default();
    let mut new = s1_personal(vec![WorkspaceId::new(), WorkspaceId::new()]);
    new.details = Details {
        nature: Marked::known(
            "A misconfigured export endpoint served account lists without sign-in.".into(),
        ),
        subject_categories: Marked::known(vec!["customer users".into()]),
        subjects: Marked::estimated(1_200),
        record_categories: Marked::known(vec!["e-mail addresses".into(), "workspace roles".into()]),
        records: Marked::estimated(1_450),
        contact_point: Marked::known("DPO, dpo@leadmaps.example".into()),
        consequences: Marked::unknown(),
        measures: Marked::known("Endpoint disabled; access logs under review.".into()),
    };
    let mut incident = Incident::open(new, &rules, staff(), T).unwrap();
    let draft = Draft::new(&incident, T + Duration::hours(2));
    let json = draft.to_json();
    let fields = json["fields"].as_array().unwrap();
    let marked = |key: &str| {
        fields
            .iter()
            .find(|f| f["key"] == key)
            .unwrap_or_else(|| panic!("{key} missing"))["certainty"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for (key, certainty) in [
        ("nature", "known"),
        ("data_subject_categories", "known"),
        ("data_subjects_approx", "estimated"),
        ("record_categories", "known"),
        ("records_approx", "estimated"),
        ("contact_point", "known"),
        ("likely_consequences", "unknown"),
        ("measures", "known"),
    ] {
        assert_eq!(marked(key), certainty, "{key}");
    }
    assert_eq!(fields.len(), 8, "on time: no delay reason");
    assert_eq!(json["phase"], 1);
    assert_eq!(json["affected_customers"], 2);
    assert_eq!(json["filing_due_at"], "2026-03-05T09:00:00Z");
    assert_eq!(
        json["outstanding"],
        serde_json::json!([
            "data_subjects_approx",
            "records_approx",
            "likely_consequences"
        ])
    );
    let md = draft.to_markdown();
    for needle in [
        "Art. 33(3)(a)",
        "Art. 33(3)(b)",
        "Art. 33(3)(c)",
        "Art. 33(3)(d)",
        "| Approximate number of data subjects concerned | Art. 33(3)(a) | estimated | 1200 |",
        "| Likely consequences of the breach | Art. 33(3)(c) | unknown | — |",
        "e-mail addresses, workspace roles",
        "initial notification",
        "To follow in a later phase (Art. 33(4)): data_subjects_approx",
    ] {
        assert!(md.contains(needle), "{needle} not in\n{md}");
    }

    // Filed (phase 1), then the numbers are confirmed: the next draft is a follow-up that
    // names what changed.
    let filing = by_duty(&incident, Duty::NotifyAuthority)[0].id;
    incident
        .acknowledge(
            filing,
            "AP-2026-0042",
            None,
            staff(),
            T + Duration::hours(3),
        )
        .unwrap();
    let mut details = incident.details.clone();
    details.subjects = Marked::known(1_187);
    details.consequences = Marked::known("Phishing aimed at the listed addresses.".into());
    incident
        .set_details(details, T + Duration::hours(30))
        .unwrap();
    // A follow-up is filed by acknowledging the done filing again.
    let follow = Draft::new(&incident, T + Duration::hours(30));
    assert_eq!(follow.phase, 2);
    assert_eq!(
        follow.changed_since_last_filing,
        ["data_subjects_approx", "likely_consequences"]
    );
    assert!(
        follow
            .to_markdown()
            .contains("follow-up, phase 2 (Art. 33(4))")
    );
    assert!(follow.to_markdown().contains("AP-2026-0042"));
    incident
        .acknowledge(
            filing,
            "AP-2026-0042/2",
            None,
            staff(),
            T + Duration::hours(31),
        )
        .unwrap();
    assert_eq!(incident.filings.len(), 2);
    assert_eq!(Draft::new(&incident, T + Duration::hours(31)).phase, 3);

    // A filing after the deadline carries the reason for the delay (Art. 33(1)).
    let mut late = Incident::open(s1_personal(vec![]), &rules, staff(), T).unwrap();
    let draft = Draft::new(&late, T + Duration::hours(73));
    let delay = draft
        .fields
        .iter()
        .find(|f| f.key == "delay_reason")
        .unwrap();
    assert_eq!(delay.certainty, Certainty::Unknown);
    let filing = by_duty(&late, Duty::NotifyAuthority)[0].id;
    late.state_reason(filing, "forensics", staff(), T + Duration::hours(73))
        .unwrap();
    let draft = Draft::new(&late, T + Duration::hours(74));
    let delay = draft
        .fields
        .iter()
        .find(|f| f.key == "delay_reason")
        .unwrap();
    assert_eq!(
        (delay.certainty, delay.value.as_str()),
        (Certainty::Known, Some("forensics"))
    );
}

#[test]
fn the_register_chains_and_shows_tampering() {
    let rules = RuleBook::default();
    let gate = Gate::new(Arc::new(ManualClock::new(T)));
    let scope = gate
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap();
    let mut incident = Incident::open(s1_personal(vec![]), &rules, scope.actor(), T).unwrap();
    let first = seal_entry(
        crate::audit::ChainHead::GENESIS,
        &scope,
        Change::Opened,
        &incident,
    )
    .unwrap();
    incident
        .advance(Status::Contained, T + Duration::hours(1))
        .unwrap();
    let second = seal_entry(first.head(), &scope, Change::StatusChanged, &incident).unwrap();
    let entries = vec![first.clone(), second.clone()];
    assert_eq!(verify_register(&entries), Ok(()));
    assert_eq!(second.prev_hash, first.hash);
    assert_eq!(second.incident().unwrap(), incident);

    let mut edited = entries.clone();
    edited[0].snapshot["title"] = "something else".into();
    assert_eq!(
        verify_register(&edited),
        Err(RegisterProblem::BadHash { seq: 1 })
    );
    // Moving the awareness time, even with the hashes redone, is caught.
    let mut moved = incident.clone();
    moved.aware_at += Duration::hours(10);
    let mut rewritten = vec![first.clone()];
    rewritten.push(seal_entry(first.head(), &scope, Change::StatusChanged, &moved).unwrap());
    assert_eq!(
        verify_register(&rewritten),
        Err(RegisterProblem::Rewritten { seq: 2 })
    );
    assert_eq!(
        verify_register(&entries[1..]),
        Err(RegisterProblem::Gap {
            seq: 2,
            expected: 1
        })
    );
    let mut unlinked = entries.clone();
    unlinked[1].prev_hash = [7; 32];
    unlinked[1].hash = entry_hash(&unlinked[1]);
    assert_eq!(
        verify_register(&unlinked),
        Err(RegisterProblem::BrokenChain { seq: 2 })
    );
    // And the stores' own check refuses a moved awareness time outright.
    assert_eq!(
        check_update(&incident, &moved).unwrap_err().kind(),
        ErrorKind::Invalid
    );
}

#[test]
fn the_status_moves_forward_and_closing_needs_every_obligation_settled() {
    let mut incident =
        Incident::open(s1_personal(vec![]), &RuleBook::default(), staff(), T).unwrap();
    incident.advance(Status::Resolved, T).unwrap();
    assert!(
        incident.advance(Status::Contained, T).is_err(),
        "no way back"
    );
    assert!(incident.close(T).is_err(), "the filing is pending");
    let filing = by_duty(&incident, Duty::NotifyAuthority)[0].id;
    incident
        .acknowledge(filing, "AP-1", None, staff(), T + Duration::hours(1))
        .unwrap();
    incident.close(T + Duration::hours(2)).unwrap();
    assert_eq!(incident.status, Status::Closed);
    assert_eq!(
        incident
            .set_details(Details::default(), T + Duration::hours(3))
            .unwrap_err()
            .kind(),
        ErrorKind::Conflict,
        "closed is final"
    );
    assert!(due(&[incident], T + Duration::hours(100)).is_empty());
}

async fn world() -> (Arc<MemoryStore>, Arc<ManualClock>, Gate, WorkspaceId) {
    let store = Arc::new(MemoryStore::new());
    let clock = Arc::new(ManualClock::new(T));
    let gate = Gate::new(clock.clone());
    let ws = WorkspaceId::new();
    let provisioning = Principal::System(SystemTask::Provisioning);
    store
        .create_workspace(
            &gate
                .authorize(&provisioning, ws, Action::WorkspaceCreate)
                .unwrap(),
            "Acme",
            Region::Eu,
            T,
        )
        .await
        .unwrap();
    for (email, role) in [
        ("admin@acme.example", Role::Admin),
        ("viewer@acme.example", Role::Viewer),
    ] {
        let user = User {
            id: UserId::new(),
            email: crate::mail::Address::parse(email).unwrap(),
            created_at: T,
        };
        store.create_user(&user).await.unwrap();
        store
            .set_membership(
                &gate
                    .authorize(&provisioning, ws, Action::MemberManage)
                    .unwrap(),
                user.id,
                role,
                T,
            )
            .await
            .unwrap();
    }
    (store, clock, gate, ws)
}

#[tokio::test]
async fn the_notifier_sends_nothing_early_and_each_notice_once() {
    let (store, clock, gate, ws) = world().await;
    let engine = Engine::new(store.clone(), Arc::new(RuleBook::default()), clock.clone());
    let mailer = Arc::new(Recorder::default());
    let contact = crate::mail::Address::parse("security@leadmaps.example").unwrap();
    let notifier = Notifier::new(engine.clone(), mailer.clone(), gate.clone())
        .with_contacts(vec![contact.clone()]);
    let scope = gate
        .authorize_breach(&Principal::Staff {
            staff: StaffId::new(),
            mfa: true,
            grant: None,
        })
        .unwrap();
    let incident = engine.open(&scope, s1_personal(vec![ws])).await.unwrap();
    let admin_mail = |mailer: &Recorder| {
        mailer
            .sent()
            .into_iter()
            .filter(|e| e.to.as_str() == "admin@acme.example")
            .count()
    };

    for at in [T, T + Duration::hours(2), T + Duration::minutes(224)] {
        clock.set(at);
        notifier.run_once().await.unwrap();
        assert_eq!(admin_mail(&mailer), 0, "nothing early at {at}");
    }
    // The 1-hour reminder went to the contact at T+3h, once.
    let reminders: Vec<_> = mailer.sent();
    assert_eq!(reminders.len(), 1);
    assert_eq!(reminders[0].to, contact);
    assert!(reminders[0].subject.contains("due in 1h00m"));

    clock.set(T + Duration::minutes(225)); // 3h45: the send time, 15 minutes before 4h.
    let report = notifier.run_once().await.unwrap();
    assert_eq!((report.notices, report.failed), (1, 0));
    assert_eq!(admin_mail(&mailer), 1, "the admin, not the viewer");
    assert!(
        mailer
            .sent()
            .iter()
            .all(|e| e.to.as_str() != "viewer@acme.example")
    );
    for _ in 0..3 {
        clock.advance(Duration::minutes(1));
        notifier.run_once().await.unwrap();
    }
    assert_eq!(admin_mail(&mailer), 1, "once");

    // The obligation is done, on time, with the delivery as evidence.
    let stored = engine.incident(&scope, incident.id).await.unwrap();
    let email = stored
        .obligations
        .iter()
        .find(|o| o.duty == Duty::EmailAdmins)
        .unwrap();
    assert_eq!(email.standing(clock.now()), Standing::Done);
    // The workspace's audit log shows the notice it received.
    let read = gate
        .authorize(&Principal::System(SystemTask::Audit), ws, Action::AuditRead)
        .unwrap();
    let log = store.all_audit_records(&read).await.unwrap();
    let notices: Vec<_> = log
        .iter()
        .filter(|r| r.action == AuditAction::BreachNotificationSent)
        .collect();
    assert_eq!(notices.len(), 1);
    assert!(notices[0].action.customer_visible());
    assert_eq!(notices[0].target.id, incident.id.to_string());
    assert_eq!(notices[0].after.as_ref().unwrap()["recipients"], 1);
    assert!(
        !serde_json::to_string(&notices[0].after)
            .unwrap()
            .contains("acme.example"),
        "no addresses in the log"
    );
    // The register has the opening and the notice, chained.
    let entries = store.register_entries(&scope, 0, 100).await.unwrap();
    assert_eq!(verify_register(&entries), Ok(()));
    assert_eq!(
        entries.iter().map(|e| e.change).collect::<Vec<_>>(),
        [Change::Opened, Change::NotificationSent]
    );

    // At 72 hours the filing is overdue: one overdue notice to the contact.
    clock.set(T + Duration::hours(72));
    notifier.run_once().await.unwrap();
    notifier.run_once().await.unwrap();
    let overdue: Vec<_> = mailer
        .sent()
        .into_iter()
        .filter(|e| e.subject.contains("OVERDUE"))
        .collect();
    assert_eq!(overdue.len(), 1);
    assert!(overdue[0].text.contains("reason for the delay"));
}

#[tokio::test]
async fn a_claim_whose_holder_died_is_taken_over_after_its_lease() {
    let (store, clock, gate, ws) = world().await;
    let engine = Engine::new(store.clone(), Arc::new(RuleBook::default()), clock.clone());
    let scope = gate
        .authorize_breach(&Principal::System(SystemTask::Breach))
        .unwrap();
    let incident = engine.open(&scope, s1_personal(vec![ws])).await.unwrap();
    let email = by_duty(&incident, Duty::EmailAdmins)[0].id;
    clock.set(T + Duration::hours(4));
    // A run claimed the send and died before sending.
    let key = DeliveryKey::new(incident.id, email, Step::Send);
    let Claim::Claimed(dead) = store
        .claim_delivery(&scope, &key, clock.now(), DEFAULT_LEASE)
        .await
        .unwrap()
    else {
        panic!("first claim")
    };
    let mailer = Arc::new(Recorder::default());
    let notifier = Notifier::new(engine.clone(), mailer.clone(), gate.clone());
    let report = notifier.run_once().await.unwrap();
    assert_eq!(
        (report.busy, mailer.sent().len()),
        (1, 0),
        "the lease holds"
    );
    clock.advance(DEFAULT_LEASE);
    let report = notifier.run_once().await.unwrap();
    assert_eq!((report.notices, mailer.sent().len()), (1, 1), "taken over");
    // The dead holder cannot complete what it no longer holds.
    let late = store
        .complete_delivery(&scope, &dead, clock.now(), None)
        .await;
    assert_eq!(late.unwrap_err().kind(), ErrorKind::Conflict);
    let deliveries = store.deliveries(&scope, incident.id).await.unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].attempts, 2);
    assert!(deliveries[0].sent_at.is_some());
}
