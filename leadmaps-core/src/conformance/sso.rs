//! SSO and SCIM checks: plans gate configuration, SSO sessions are bound to their workspace,
//! SCIM writes provision and deprovision in one transaction with their audit record.

use std::sync::Arc;

use serde_json::json;
use time::Duration;
use uuid::Uuid;

use super::{Fixture, kind};
use crate::audit::{AuditAction, AuditStoreExt};
use crate::auth::keys::ApiKeyRecord;
use crate::auth::session::{MagicLink, Realm, SessionRecord};
use crate::auth::tokens::{TokenDigest, recovery::RecoveryHash};
use crate::auth::totp::Subject;
use crate::auth::users::User;
use crate::clock::Clock;
use crate::error::ErrorKind;
use crate::mail::Address;
use crate::policy::{Feature, Plan};
use crate::scim::{Provisioning, ScimKind, ScimOp, ScimResource, ScimWrite};
use crate::sso::{OidcConnection, SsoProtocol};
use crate::store::Store;
use crate::tenancy::{
    Action, ApiKeyId, Denied, Principal, Role, Scope, SystemTask, UserId, WorkspaceId,
};

fn provisioning(f: &Fixture, ws: WorkspaceId, action: Action) -> Scope {
    f.gate
        .authorize(&Principal::System(SystemTask::Provisioning), ws, action)
        .unwrap()
}

fn directory(f: &Fixture, ws: WorkspaceId) -> Scope {
    let token = Principal::ApiKey {
        key: ApiKeyId::new(),
        workspace: ws,
        actions: vec![Action::DirectorySync],
    };
    f.gate.authorize(&token, ws, Action::DirectorySync).unwrap()
}

fn connection(f: &Fixture) -> OidcConnection {
    OidcConnection {
        issuer: "https://idp.example.com".into(),
        client_id: "leadmaps".into(),
        sealed_secret: vec![7; 80],
        domains: vec!["example.com".into()],
        updated_at: f.clock.now(),
    }
}

/// The actions of the workspace's log after its creation (which opens every log).
async fn actions(f: &Fixture, ws: WorkspaceId) -> Vec<AuditAction> {
    let scope = f.auditor(ws);
    let mut actions: Vec<AuditAction> = f
        .store
        .all_audit_records(&scope)
        .await
        .unwrap()
        .iter()
        .map(|r| r.action)
        .collect();
    assert_eq!(actions.remove(0), AuditAction::WorkspaceCreated);
    actions
}

async fn upgrade(f: &Fixture, ws: WorkspaceId, plan: Plan) {
    f.store
        .set_plan(
            &provisioning(f, ws, Action::WorkspaceUpdate),
            plan,
            f.clock.now(),
        )
        .await
        .expect("provisioning sets the plan");
}

/// Workspaces start on Free; only provisioning sets a plan; below Business an OIDC connection
/// and SSO enforcement are refused naming the plan; every change is audited, in its workspace.
pub async fn plans_gate_sso_configuration(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let read = f.a(Action::WorkspaceRead);
    assert_eq!(f.store.sso_settings(&read).await.unwrap().plan, Plan::Free);
    assert_eq!(
        kind(
            f.store
                .set_plan(
                    &f.a(Action::WorkspaceUpdate),
                    Plan::Enterprise,
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Denied,
        "an admin cannot choose their own plan"
    );
    let put = f
        .store
        .put_oidc_connection(&f.a(Action::SecretWrite), &connection(&f), f.clock.now())
        .await;
    assert!(
        matches!(
            put,
            Err(crate::Error::Denied(Denied::FeatureNotInPlan(Feature::Sso)))
        ),
        "{put:?}"
    );
    assert!(matches!(
        f.store
            .set_sso_enforced(&f.a(Action::MemberManage), true, f.clock.now())
            .await,
        Err(crate::Error::Denied(Denied::FeatureNotInPlan(Feature::Sso)))
    ));
    assert_eq!(
        f.store.oidc_connection(&read).await.unwrap(),
        None,
        "nothing was stored"
    );
    upgrade(&f, f.a, Plan::Pro).await;
    assert_eq!(
        kind(
            f.store
                .set_sso_enforced(&f.a(Action::MemberManage), true, f.clock.now())
                .await
        ),
        ErrorKind::Denied,
        "Pro is not enough"
    );
    upgrade(&f, f.a, Plan::Business).await;
    f.store
        .put_oidc_connection(&f.a(Action::SecretWrite), &connection(&f), f.clock.now())
        .await
        .unwrap();
    assert_eq!(
        kind(
            f.store
                .put_oidc_connection(
                    &f.a(Action::WorkspaceUpdate),
                    &connection(&f),
                    f.clock.now()
                )
                .await
        ),
        ErrorKind::Denied,
        "configuring needs the secret-write action"
    );
    let bad = OidcConnection {
        domains: vec![],
        ..connection(&f)
    };
    assert_eq!(
        kind(
            f.store
                .put_oidc_connection(&f.a(Action::SecretWrite), &bad, f.clock.now())
                .await
        ),
        ErrorKind::Invalid
    );
    f.store
        .set_sso_enforced(&f.a(Action::MemberManage), true, f.clock.now())
        .await
        .unwrap();
    let settings = f.store.sso_settings(&read).await.unwrap();
    assert_eq!(
        (settings.plan, settings.enforce_sso),
        (Plan::Business, true)
    );
    assert_eq!(
        f.store.oidc_connection(&read).await.unwrap(),
        Some(connection(&f))
    );
    // B is untouched.
    let b = f.b(Action::WorkspaceRead);
    assert_eq!(
        f.store.sso_settings(&b).await.unwrap(),
        crate::sso::SsoSettings::default()
    );
    assert_eq!(f.store.oidc_connection(&b).await.unwrap(), None);
    assert!(
        f.store
            .delete_oidc_connection(&f.b(Action::SecretWrite), f.clock.now())
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        f.store
            .delete_oidc_connection(&f.a(Action::SecretWrite), f.clock.now())
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(f.store.oidc_connection(&read).await.unwrap(), None);
    assert_eq!(
        actions(&f, f.a).await,
        [
            AuditAction::PlanChanged,
            AuditAction::PlanChanged,
            AuditAction::SsoConfigured,
            AuditAction::SsoEnforcementChanged,
            AuditAction::SsoRemoved,
        ]
    );
    assert!(actions(&f, f.b).await.is_empty());
}

fn session(selector: &str, user: UserId, at: time::OffsetDateTime) -> SessionRecord {
    SessionRecord {
        selector: selector.into(),
        digest: TokenDigest {
            key_id: 1,
            mac: [3; 32],
        },
        subject: Subject::User(user),
        second_factor: false,
        created_at: at,
        last_seen_at: at,
    }
}

/// An SSO session is stored with its login record and is bound to its workspace; only the
/// session's own user can store it; an ordinary session is bound to nothing; a rotation carries
/// the binding over; a deleted session is bound to nothing.
pub async fn sso_sessions_are_bound_to_their_workspace(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let user = UserId::new();
    let member = Principal::member(user, [(f.a, Role::Viewer)]);
    let scope = f
        .gate
        .authorize(&member, f.a, Action::WorkspaceRead)
        .unwrap();
    let record = f
        .store
        .insert_sso_session(
            &scope,
            &session("sso-1", user, f.clock.now()),
            SsoProtocol::Saml,
            f.clock.now(),
        )
        .await
        .unwrap();
    assert_eq!(record.action, AuditAction::SsoLoginSucceeded);
    assert_eq!(record.workspace, f.a);
    assert_eq!(
        record.after.as_ref().map(|after| after["protocol"].clone()),
        Some(json!("saml")),
        "the login record names the protocol"
    );
    assert_eq!(
        f.store.sso_session_workspace("sso-1").await.unwrap(),
        Some(f.a)
    );
    assert!(f.store.session("sso-1").await.unwrap().is_some());
    let other = f
        .store
        .insert_sso_session(
            &scope,
            &session("sso-2", UserId::new(), f.clock.now()),
            SsoProtocol::Oidc,
            f.clock.now(),
        )
        .await;
    assert_eq!(kind(other), ErrorKind::Denied, "someone else's session");
    assert_eq!(f.store.session("sso-2").await.unwrap(), None);
    f.store
        .insert_session(&session("plain", user, f.clock.now()))
        .await
        .unwrap();
    assert_eq!(f.store.sso_session_workspace("plain").await.unwrap(), None);
    // A rotation (second factor passed) carries the binding to the new session, atomically.
    let mut rotated = session("sso-3", user, f.clock.now());
    rotated.second_factor = true;
    f.store.replace_session("sso-1", &rotated).await.unwrap();
    assert_eq!(f.store.session("sso-1").await.unwrap(), None);
    assert_eq!(f.store.session("sso-3").await.unwrap(), Some(rotated));
    assert_eq!(
        f.store.sso_session_workspace("sso-3").await.unwrap(),
        Some(f.a)
    );
    assert_eq!(f.store.sso_session_workspace("sso-1").await.unwrap(), None);
    f.store
        .replace_session("plain", &session("plain-2", user, f.clock.now()))
        .await
        .unwrap();
    assert_eq!(
        f.store.sso_session_workspace("plain-2").await.unwrap(),
        None
    );
    assert_eq!(
        kind(
            f.store
                .replace_session("gone", &session("never", user, f.clock.now()))
                .await
        ),
        ErrorKind::NotFound,
        "a revoked session is not replaced"
    );
    assert_eq!(f.store.session("never").await.unwrap(), None);
    assert!(f.store.delete_session("sso-3").await.unwrap());
    assert_eq!(f.store.sso_session_workspace("sso-3").await.unwrap(), None);
}

fn user_resource(f: &Fixture, name: &str) -> ScimResource {
    ScimResource {
        kind: ScimKind::User,
        id: Uuid::new_v4(),
        name: name.into(),
        external_id: Some("ext-1".into()),
        active: true,
        user: None,
        document: json!({"userName": name, "emails": [{"value": name, "primary": true}]}),
        created_at: f.clock.now(),
        updated_at: f.clock.now(),
        version: 1,
    }
}

fn key(ws: WorkspaceId, at: time::OffsetDateTime) -> ApiKeyRecord {
    ApiKeyRecord {
        id: ApiKeyId::new(),
        workspace: ws,
        name: "k".into(),
        actions: vec![Action::EventRead],
        digest: TokenDigest {
            key_id: 1,
            mac: [9; 32],
        },
        sealed: vec![1, 2, 3],
        created_at: at,
        last_used_at: None,
        revoked_at: None,
    }
}

/// A SCIM create admits the linked user (created if new, a viewer); deactivating deprovisions
/// them in the same transaction as its audit record: the membership, every session, every
/// pending link, every recovery code and every API key they created in the workspace are gone,
/// and nobody else's.
pub async fn scim_writes_provision_and_deprovision(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let now = f.clock.now();
    let dir = directory(&f, f.a);
    let address = Address::parse("ada@example.com").unwrap();
    let created = f
        .store
        .scim_write(
            &dir,
            &ScimWrite {
                op: ScimOp::Create,
                resource: user_resource(&f, "ada@example.com"),
                provisioning: Provisioning::Admit(address.clone()),
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!(created.record.action, AuditAction::ScimUserProvisioned);
    let user = created.resource.user.expect("linked");
    assert_eq!(
        f.store.user_by_email(&address).await.unwrap().unwrap().id,
        user
    );
    let memberships = f.store.memberships(user).await.unwrap();
    assert_eq!(memberships.len(), 1);
    assert_eq!(
        (memberships[0].workspace, memberships[0].role),
        (f.a, Role::Viewer)
    );

    // Give the user (and a bystander) every kind of credential.
    let bystander = User {
        id: UserId::new(),
        email: Address::parse("bob@example.com").unwrap(),
        created_at: now,
    };
    f.store.create_user(&bystander).await.unwrap();
    let as_user = |ws| {
        f.gate
            .authorize(
                &Principal::member(user, [(ws, Role::Admin)]),
                ws,
                Action::MemberManage,
            )
            .unwrap()
    };
    let own_key = key(f.a, now);
    f.store
        .insert_api_key(&as_user(f.a), &own_key)
        .await
        .unwrap();
    let other_ws_key = key(f.b, now);
    f.store
        .insert_api_key(&as_user(f.b), &other_ws_key)
        .await
        .unwrap();
    let admins_key = key(f.a, now);
    f.store
        .insert_api_key(&f.a(Action::MemberManage), &admins_key)
        .await
        .unwrap();
    for (selector, who) in [("s1", user), ("s2", user), ("s3", bystander.id)] {
        f.store
            .insert_session(&session(selector, who, now))
            .await
            .unwrap();
    }
    for (selector, email) in [("l1", &address), ("l2", &bystander.email)] {
        f.store
            .insert_link(&MagicLink {
                selector: selector.into(),
                digest: TokenDigest {
                    key_id: 1,
                    mac: [5; 32],
                },
                realm: Realm::Customer,
                email: email.clone(),
                created_at: now,
                expires_at: now + Duration::minutes(10),
            })
            .await
            .unwrap();
    }
    let codes = vec![
        RecoveryHash {
            salt: [1; 16],
            hash: [2; 32],
        };
        3
    ];
    for who in [user, bystander.id] {
        f.store
            .put_recovery_codes(Subject::User(who), &codes)
            .await
            .unwrap();
    }

    // Deactivate.
    let mut inactive = created.resource.clone();
    inactive.active = false;
    inactive.version = 2;
    let outcome = f
        .store
        .scim_write(
            &dir,
            &ScimWrite {
                op: ScimOp::Replace { expected: 1 },
                resource: inactive,
                provisioning: Provisioning::Revoke(user),
            },
            now,
        )
        .await
        .unwrap();
    let revoked = outcome.revoked.expect("revoked");
    assert!(revoked.membership);
    assert_eq!(
        (
            revoked.sessions,
            revoked.links,
            revoked.recovery_codes,
            revoked.api_keys
        ),
        (2, 1, 3, 1)
    );
    assert_eq!(outcome.resource.user, None);
    assert_eq!(outcome.record.action, AuditAction::ScimUserDeprovisioned);
    let after = outcome.record.after.as_ref().unwrap();
    for (key, n) in [
        ("api_key_count", 1),
        ("link_count", 1),
        ("recovery_code_count", 3),
    ] {
        assert_eq!(after[key], json!(n), "{key} in the audit record");
    }
    assert_eq!(
        outcome.record.after.as_ref().unwrap()["session_count"],
        json!(2)
    );
    // Every credential of the user is dead...
    assert!(f.store.memberships(user).await.unwrap().is_empty());
    for selector in ["s1", "s2"] {
        assert_eq!(f.store.session(selector).await.unwrap(), None);
    }
    assert_eq!(f.store.link("l1").await.unwrap(), None);
    assert!(
        f.store
            .recovery_codes(Subject::User(user))
            .await
            .unwrap()
            .is_empty()
    );
    let key_of = |id| {
        let store = f.store.clone();
        async move { store.api_key_for_auth(id).await.unwrap().unwrap() }
    };
    assert!(key_of(own_key.id).await.revoked_at.is_some());
    // ... and nobody else's.
    assert!(
        key_of(other_ws_key.id).await.revoked_at.is_none(),
        "another workspace's key"
    );
    assert!(
        key_of(admins_key.id).await.revoked_at.is_none(),
        "another member's key"
    );
    assert!(f.store.session("s3").await.unwrap().is_some());
    assert!(f.store.link("l2").await.unwrap().is_some());
    assert_eq!(
        f.store
            .recovery_codes(Subject::User(bystander.id))
            .await
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        actions(&f, f.a).await,
        [
            AuditAction::ScimUserProvisioned,
            // The two keys made above, each logged by the store.
            AuditAction::ApiKeyCreated,
            AuditAction::ApiKeyCreated,
            AuditAction::ScimUserDeprovisioned
        ]
    );
    let stored = f
        .store
        .scim_resource(&dir, ScimKind::User, created.resource.id)
        .await
        .unwrap()
        .unwrap();
    assert!(!stored.active);
    assert_eq!(stored.version, 2);
}

/// Names are unique per workspace and kind ignoring case; versions guard replaces and deletes;
/// resources never cross workspaces; only the directory action reaches them.
pub async fn scim_resources_are_unique_versioned_and_isolated(store: Arc<dyn Store>) {
    let f = Fixture::new(store).await;
    let now = f.clock.now();
    let (dir_a, dir_b) = (directory(&f, f.a), directory(&f, f.b));
    let write = |op, resource| ScimWrite {
        op,
        resource,
        provisioning: Provisioning::Keep,
    };
    let first = user_resource(&f, "Carol");
    f.store
        .scim_write(&dir_a, &write(ScimOp::Create, first.clone()), now)
        .await
        .unwrap();
    let clash = user_resource(&f, "CAROL");
    assert_eq!(
        kind(
            f.store
                .scim_write(&dir_a, &write(ScimOp::Create, clash.clone()), now)
                .await
        ),
        ErrorKind::Conflict
    );
    let mut group = user_resource(&f, "carol");
    group.kind = ScimKind::Group;
    group.document = json!({"displayName": "carol"});
    f.store
        .scim_write(&dir_a, &write(ScimOp::Create, group), now)
        .await
        .expect("users and groups have their own names");
    f.store
        .scim_write(&dir_b, &write(ScimOp::Create, clash), now)
        .await
        .expect("another workspace may use the name");
    assert_eq!(
        kind(
            f.store
                .scim_write(&dir_a, &write(ScimOp::Create, first.clone()), now)
                .await
        ),
        ErrorKind::Conflict,
        "the id exists"
    );
    let stale = write(ScimOp::Replace { expected: 7 }, first.clone());
    assert_eq!(
        kind(f.store.scim_write(&dir_a, &stale, now).await),
        ErrorKind::Conflict
    );
    let mut renamed = first.clone();
    renamed.name = "Caroline".into();
    renamed.version = 2;
    f.store
        .scim_write(
            &dir_a,
            &write(ScimOp::Replace { expected: 1 }, renamed.clone()),
            now,
        )
        .await
        .unwrap();
    assert_eq!(
        kind(
            f.store
                .scim_write(
                    &dir_b,
                    &write(ScimOp::Replace { expected: 2 }, renamed.clone()),
                    now
                )
                .await
        ),
        ErrorKind::NotFound,
        "B cannot touch A's resource"
    );
    assert_eq!(
        f.store
            .scim_resource(&dir_b, ScimKind::User, first.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        f.store
            .scim_resources(&dir_a, ScimKind::User)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.store
            .scim_resources(&dir_a, ScimKind::Group)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        f.store
            .scim_resources(&dir_b, ScimKind::User)
            .await
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        kind(
            f.store
                .scim_resources(&f.a(Action::MemberManage), ScimKind::User)
                .await
        ),
        ErrorKind::Denied
    );
    let stored = f
        .store
        .scim_resource(&dir_a, ScimKind::User, first.id)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((stored.name.as_str(), stored.version), ("Caroline", 2));
    assert_eq!(stored.document, first.document);
    assert_eq!(stored.external_id.as_deref(), Some("ext-1"));
    f.store
        .scim_write(&dir_a, &write(ScimOp::Delete { expected: 2 }, stored), now)
        .await
        .unwrap();
    assert!(
        f.store
            .scim_resources(&dir_a, ScimKind::User)
            .await
            .unwrap()
            .is_empty()
    );
}
