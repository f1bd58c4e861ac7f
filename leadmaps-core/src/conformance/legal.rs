//! Checks of vulnerability reports, DPA acceptances and sub-processor notices: reports keep their
//! receipt and move one version at a time, an actively exploited one opens a linked S0 incident;
//! an acceptance and a notice each commit with their audit record, stay in their workspace, and
//! the notifier tells each admin once.

use std::sync::Arc;

use time::Duration;

use super::{Fixture, kind};
use crate::audit::{AuditAction, AuditActor, AuditStoreExt};
use crate::auth::users::User;
use crate::breach::{Ack, Engine, RuleBook, Severity};
use crate::clock::Clock;
use crate::error::ErrorKind;
use crate::legal::{Register, RegisterBook, Subprocessor, SubprocessorNotifier};
use crate::mail::{Address, Outbox};
use crate::store::Store;
use crate::tenancy::{Action, Principal, Role, StaffId, SystemTask, UserId, WorkspaceId};
use crate::vulnerability::{Finding, Intake, NewReport, ReportStatus};

/// Reports round-trip, change one version at a time, keep their receipt, and an actively
/// exploited one opens an S0 incident it links; each change is in the instance audit log with
/// the staff member, the report and a diff without the report's contents.
pub async fn vulnerability_reports_keep_their_receipt_and_open_incidents(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let staff = StaffId::new();
    let scope = f
        .gate
        .authorize_breach(&Principal::Staff {
            staff,
            mfa: true,
            grant: None,
        })
        .unwrap();
    let engine = Engine::new(
        store.clone(),
        Arc::new(RuleBook::default()),
        f.clock.clone(),
    );
    let intake = Intake::new(store.clone(), store.clone(), engine.clone());
    let received = f.clock.now() - Duration::hours(1);
    let new = |active_exploit| NewReport {
        title: "SSRF in the favicon fetcher \u{e9}".into(),
        summary: "Fetches internal addresses.\nSteps attached.".into(),
        reporter: Some("researcher, reply through the HackerOne thread".into()),
        finding: Finding::High,
        active_exploit,
        received_at: received,
    };
    let quiet = intake.record(&scope, new(false)).await.unwrap();
    assert!(quiet.incident.is_none());
    let exploited = intake.record(&scope, new(true)).await.unwrap();
    let incident = engine
        .incident(&scope, exploited.incident.expect("linked incident"))
        .await
        .unwrap();
    assert_eq!(incident.severity, Severity::S0);
    assert_eq!(incident.aware_at, exploited.received_at);

    let stored = intake.report(&scope, quiet.id).await.unwrap();
    assert_eq!(stored, quiet, "a report reads back exactly");
    assert_eq!(intake.reports(&scope).await.unwrap().len(), 2);
    assert_eq!(intake.due(&scope).await.unwrap().len(), 4);

    let answer = quiet.obligations[0].id;
    let acked = intake
        .acknowledge(
            &scope,
            quiet.id,
            answer,
            Ack::Done {
                evidence: "answered by mail".into(),
                late_reason: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(acked.version, 2);
    assert_eq!(intake.report(&scope, quiet.id).await.unwrap(), acked);

    // A stale version, a moved receipt and an unknown report are refused.
    assert_eq!(
        kind(store.update_report(&scope, &quiet).await),
        ErrorKind::Conflict
    );
    let mut moved = acked.clone();
    moved.version += 1;
    moved.received_at -= Duration::hours(1);
    assert_eq!(
        kind(store.update_report(&scope, &moved).await),
        ErrorKind::Invalid
    );
    let mut unknown = acked.clone();
    unknown.id = crate::vulnerability::ReportId::new();
    assert_eq!(
        kind(store.update_report(&scope, &unknown).await),
        ErrorKind::NotFound
    );
    assert_eq!(
        kind(store.create_report(&scope, &acked).await),
        ErrorKind::Invalid
    );
    let mut twice = quiet.clone();
    twice.version = 1;
    assert_eq!(
        kind(store.create_report(&scope, &twice).await),
        ErrorKind::Conflict
    );

    let disclose = acked.obligations[1].id;
    intake
        .acknowledge(
            &scope,
            quiet.id,
            disclose,
            Ack::Done {
                evidence: "https://example.com/advisories/2026-1".into(),
                late_reason: None,
            },
        )
        .await
        .unwrap();
    let closed = intake.close(&scope, quiet.id).await.unwrap();
    assert_eq!(closed.status, ReportStatus::Closed);
    let mut after_close = closed.clone();
    after_close.version += 1;
    assert_eq!(
        kind(store.update_report(&scope, &after_close).await),
        ErrorKind::Conflict
    );

    // Every change is in the instance log, by the staff member, on the report, in order.
    let log: Vec<_> = store
        .all_audit_records(&f.auditor(WorkspaceId::INSTANCE))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.target.kind == "vulnerability_report")
        .collect();
    let seen: Vec<_> = log
        .iter()
        .map(|r| (r.action, r.target.id.clone()))
        .collect();
    let (quiet_id, exploited_id) = (quiet.id.to_string(), exploited.id.to_string());
    assert_eq!(
        seen,
        [
            (AuditAction::VulnerabilityRecorded, quiet_id.clone()),
            (AuditAction::VulnerabilityRecorded, exploited_id),
            (AuditAction::VulnerabilityAcknowledged, quiet_id.clone()),
            (AuditAction::VulnerabilityAcknowledged, quiet_id.clone()),
            (AuditAction::VulnerabilityClosed, quiet_id),
        ]
    );
    for record in &log {
        assert_eq!(record.actor, AuditActor::Staff { staff, grant: None });
    }
    assert_eq!(
        log[1].after.as_ref().unwrap()["incident"],
        serde_json::json!(incident.id)
    );
    let answered = (
        log[2].before.as_ref().unwrap(),
        log[2].after.as_ref().unwrap(),
    );
    assert_eq!(
        (answered.0["state"].as_str(), answered.1["state"].as_str()),
        (Some("pending"), Some("done"))
    );
    assert_eq!(answered.1["id"], serde_json::json!(answer));
    assert_eq!(
        log[4].after.as_ref().unwrap(),
        &serde_json::json!({"status": "closed"})
    );
    let text = serde_json::to_string(
        &log.iter()
            .map(|r| (&r.before, &r.after))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for secret in [
        "SSRF",
        "internal addresses",
        "HackerOne",
        "answered by mail",
        "advisories",
    ] {
        assert!(!text.contains(secret), "the audit log holds {secret:?}");
    }
}

/// A DPA acceptance is stored with who, when and which version, in the transaction of its
/// `dpa.accepted` record, once per version, and only in its workspace.
pub async fn dpa_acceptance_is_audited_and_stays_in_its_workspace(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let at = f.clock.now();
    let (acceptance, record) = store
        .accept_dpa(&f.a(Action::LegalAccept), "2026-01", at)
        .await
        .unwrap();
    assert_eq!(acceptance.version, "2026-01");
    assert_eq!(record.action, AuditAction::DpaAccepted);
    assert_eq!(record.actor, acceptance.accepted_by);
    assert_eq!(record.target.id, "2026-01");
    let log = store
        .all_audit_records(&f.a(Action::AuditRead))
        .await
        .unwrap();
    assert_eq!(log.last(), Some(&record), "the record is in A's log");
    assert_eq!(
        store
            .dpa_acceptances(&f.a(Action::LegalRead))
            .await
            .unwrap(),
        std::slice::from_ref(&acceptance)
    );
    assert!(
        store
            .dpa_acceptances(&f.b(Action::LegalRead))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        kind(
            store
                .accept_dpa(&f.a(Action::LegalAccept), "2026-01", at)
                .await
        ),
        ErrorKind::Conflict
    );
    assert_eq!(
        store
            .all_audit_records(&f.a(Action::AuditRead))
            .await
            .unwrap()
            .len(),
        log.len(),
        "a refused acceptance leaves no record"
    );
    assert_eq!(
        kind(
            store
                .accept_dpa(&f.a(Action::LegalRead), "2026-02", at)
                .await
        ),
        ErrorKind::Denied
    );
    assert_eq!(
        kind(
            store
                .accept_dpa(&f.a(Action::LegalAccept), "no spaces", at)
                .await
        ),
        ErrorKind::Invalid
    );
    assert_eq!(
        kind(store.dpa_acceptances(&f.a(Action::WorkspaceRead)).await),
        ErrorKind::Denied
    );
}

/// A new register version e-mails every admin of every workspace that existed when it took
/// effect once, and records `subprocessors.changed` in each workspace's log.
pub async fn subprocessor_changes_reach_every_admin_once(store: Arc<dyn Store>) {
    let f = Fixture::new(store.clone()).await;
    let provisioning = Principal::System(SystemTask::Provisioning);
    for (email, ws, role) in [
        ("amy@a.example", f.a, Role::Admin),
        ("vic@a.example", f.a, Role::Viewer),
        ("bob@b.example", f.b, Role::Admin),
    ] {
        let user = User {
            id: UserId::new(),
            email: Address::parse(email).unwrap(),
            created_at: f.clock.now(),
        };
        store.create_user(&user).await.unwrap();
        let manage = f
            .gate
            .authorize(&provisioning, ws, Action::MemberManage)
            .unwrap();
        store
            .set_membership(&manage, user.id, role, f.clock.now())
            .await
            .unwrap();
    }
    let mut next = Register::seed();
    next.version = "next".into();
    next.effective_from = f.clock.now() + Duration::days(1);
    next.entries.push(Subprocessor {
        vendor: "Example Analytics Backup GmbH".into(),
        purpose: "Second backup copy".into(),
        region: "EU (Austria)".into(),
        since: next.effective_from.date(),
    });
    let mut seed = Register::seed();
    seed.effective_from = f.clock.now() - Duration::days(30);
    let book = Arc::new(RegisterBook::new(vec![seed, next]).unwrap());
    let outbox = Arc::new(Outbox::new());
    let notifier = SubprocessorNotifier::new(
        store.clone(),
        outbox.clone(),
        f.gate.clone(),
        book,
        f.clock.clone(),
    );
    // Before the new version takes effect: nothing.
    assert_eq!(notifier.run().await.unwrap().notified, 0);
    assert!(outbox.sent().is_empty());
    f.clock.advance(Duration::days(2));
    let report = notifier.run().await.unwrap();
    assert_eq!((report.notified, report.failed), (2, 0));
    let mut to: Vec<String> = outbox
        .sent()
        .iter()
        .map(|e| e.to.as_str().to_owned())
        .collect();
    to.sort();
    assert_eq!(to, ["amy@a.example", "bob@b.example"]);
    assert!(
        outbox.sent()[0]
            .text
            .contains("Example Analytics Backup GmbH")
    );
    for scope in [f.a(Action::AuditRead), f.b(Action::AuditRead)] {
        let log = store.all_audit_records(&scope).await.unwrap();
        let notice = log
            .iter()
            .find(|r| r.action == AuditAction::SubprocessorsChanged)
            .expect("subprocessors.changed");
        assert_eq!(notice.target.id, "next");
        let text = serde_json::to_string(&notice.after).unwrap();
        assert!(!text.contains("@"), "no address in the record: {text}");
    }
    let legal = f
        .gate
        .authorize(
            &Principal::System(SystemTask::Legal),
            f.a,
            Action::LegalRead,
        )
        .unwrap();
    let notices = store.subprocessor_notices(&legal).await.unwrap();
    assert_eq!(notices.len(), 1);
    assert_eq!(notices[0].recipients, 1);
    // A second run tells nobody again.
    let again = notifier.run().await.unwrap();
    assert_eq!((again.notified, again.skipped), (0, 2));
    assert_eq!(outbox.sent().len(), 2);
}
