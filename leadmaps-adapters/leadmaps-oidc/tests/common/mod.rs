//! A workspace with an OIDC connection, a member, and a relying party.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use leadmaps_core::audit::{AuditAction, AuditRecord, AuditStoreExt};
use leadmaps_core::auth::tokens::TokenHasher;
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::clock::Clock;
use leadmaps_core::crypto::{Kek, KeyRing, Vault};
use leadmaps_core::mail::Address;
use leadmaps_core::memory::MemoryStore;
use leadmaps_core::policy::Plan;
use leadmaps_core::sso::SsoStore;
use leadmaps_core::store::{Store, WorkspaceStore};
use leadmaps_core::tenancy::{
    Action, Gate, Principal, Region, Role, SystemTask, UserId, WorkspaceId,
};
use leadmaps_oidc::OidcRp;

pub const CLIENT_ID: &str = "leadmaps-test";
pub const CLIENT_SECRET: &str = "s3cret-for-tests";

pub struct World {
    pub store: Arc<MemoryStore>,
    pub gate: Gate,
    pub clock: Arc<dyn Clock>,
    pub rp: Arc<OidcRp>,
    pub workspace: WorkspaceId,
    pub user: UserId,
    pub hasher: TokenHasher,
}

impl World {
    /// `issuer` as the workspace's provider, `ada@example.com` its member, on `plan`.
    pub async fn new(clock: Arc<dyn Clock>, issuer: &str, plan: Plan) -> Self {
        let gate = Gate::new(clock.clone());
        let store = Arc::new(MemoryStore::new());
        let workspace = WorkspaceId::new();
        let provisioning = Principal::System(SystemTask::Provisioning);
        let task = |action| gate.authorize(&provisioning, workspace, action).unwrap();
        store
            .create_workspace(
                &task(Action::WorkspaceCreate),
                "Acme",
                Region::Eu,
                clock.now(),
            )
            .await
            .unwrap();
        let user = User {
            id: UserId::new(),
            email: Address::parse("ada@example.com").unwrap(),
            created_at: clock.now(),
        };
        store.create_user(&user).await.unwrap();
        store
            .set_membership(
                &task(Action::MemberManage),
                user.id,
                Role::Admin,
                clock.now(),
            )
            .await
            .unwrap();
        let outsider = User {
            id: UserId::new(),
            email: Address::parse("eve@example.com").unwrap(),
            created_at: clock.now(),
        };
        store.create_user(&outsider).await.unwrap();
        let ring =
            KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x3c).collect::<Vec<_>>()).unwrap()])
                .unwrap();
        let hasher = TokenHasher::new(&ring);
        let vault = Arc::new(
            Vault::start(ring, store.clone(), clock.clone())
                .await
                .unwrap(),
        );
        store
            .set_plan(&task(Action::WorkspaceUpdate), Plan::Business, clock.now())
            .await
            .unwrap();
        let admin = Principal::member(user.id, [(workspace, Role::Admin)]);
        leadmaps_core::sso::configure_oidc(
            &*store,
            &vault,
            &gate
                .authorize(&admin, workspace, Action::SecretWrite)
                .unwrap(),
            issuer,
            CLIENT_ID,
            CLIENT_SECRET.as_bytes(),
            &["example.com".to_owned()],
            clock.now(),
        )
        .await
        .unwrap();
        store
            .set_plan(&task(Action::WorkspaceUpdate), plan, clock.now())
            .await
            .unwrap();
        let rp = Arc::new(
            OidcRp::new(
                store.clone() as Arc<dyn Store>,
                vault,
                hasher.clone(),
                gate.clone(),
                clock.clone(),
                "https://app.example",
            )
            .unwrap(),
        );
        Self {
            store,
            gate,
            clock,
            rp,
            workspace,
            user: user.id,
            hasher,
        }
    }

    pub async fn audit(&self) -> Vec<AuditRecord> {
        let scope = self
            .gate
            .authorize(
                &Principal::System(SystemTask::Audit),
                self.workspace,
                Action::AuditRead,
            )
            .unwrap();
        self.store.all_audit_records(&scope).await.unwrap()
    }

    /// The reasons of the `sso.login_failed` records, oldest first.
    pub async fn failures(&self) -> Vec<String> {
        self.audit()
            .await
            .iter()
            .filter(|r| r.action == AuditAction::SsoLoginFailed)
            .map(|r| {
                r.after.as_ref().unwrap()["reason"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

/// A query parameter of a URL.
pub fn param(url: &url::Url, name: &str) -> String {
    url.query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in the authorization URL"))
}
