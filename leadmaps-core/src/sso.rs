//! Enterprise identity settings of a workspace: its [`Plan`], whether it enforces single
//! sign-on, its OIDC identity provider, and the sessions that provider opened.
//!
//! How enforcement works (issue 8, "enforce SSO"): a session started by a workspace's identity
//! provider is *bound* to that workspace, and a session started any other way (a magic link) is
//! not. [`admitted_memberships`] builds a session's memberships for its principal:
//! - a bound session keeps only the membership of its workspace: the workspace's identity
//!   provider vouches for the person in that workspace and nowhere else;
//! - an unbound session loses the memberships of every workspace that enforces SSO.
//!
//! So once a workspace enforces SSO, magic links still sign its members in, but the session no
//! longer reaches that workspace (the gate answers [`crate::tenancy::Denied::NotAMember`]).
//! Staff are unaffected: they never reach a customer workspace through a membership, only
//! through impersonation grants.
//!
//! The plan gates configuration in the store itself: [`SsoStore::put_oidc_connection`] and
//! switching enforcement on refuse with
//! [`Denied::FeatureNotInPlan`](crate::tenancy::Denied::FeatureNotInPlan) below Business.

use async_trait::async_trait;
use serde_json::json;
use time::OffsetDateTime;

use crate::audit::{AuditAction, AuditDraft, AuditRecord, Target};
use crate::auth::session::SessionRecord;
use crate::error::{Error, Result};
use crate::policy::{Feature, Plan};
use crate::tenancy::{
    Action, Actor, Denied, Gate, Membership, Principal, Scope, SystemTask, UserId, WorkspaceId,
};

/// A workspace's plan and SSO enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SsoSettings {
    /// The workspace's plan.
    pub plan: Plan,
    /// Whether only sessions from the workspace's identity provider reach it.
    pub enforce_sso: bool,
}

/// The protocol of a workspace's identity provider, as recorded in `sso.login_succeeded` and
/// `sso.login_failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SsoProtocol {
    /// OpenID Connect (`leadmaps-oidc`).
    Oidc,
    /// SAML 2.0 (`leadmaps-saml`).
    Saml,
}

impl SsoProtocol {
    /// The name recorded in audit records: `oidc` or `saml`.
    pub const fn as_str(self) -> &'static str {
        match self {
            SsoProtocol::Oidc => "oidc",
            SsoProtocol::Saml => "saml",
        }
    }
}

/// Most e-mail domains an identity provider may vouch for.
pub const MAX_SSO_DOMAINS: usize = 50;
/// Longest issuer URL or client id, in bytes.
pub const MAX_OIDC_FIELD: usize = 1024;

/// A workspace's OIDC identity provider, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcConnection {
    /// The issuer URL; the ID token's `iss` must equal it exactly.
    pub issuer: String,
    /// The client id registered with the provider; the ID token's `aud` must contain it.
    pub client_id: String,
    /// The client secret, sealed under the workspace's tenant key with
    /// [`crate::crypto::SecretContext::oidc_client_secret`] (row id [`OIDC_CONNECTION`]).
    pub sealed_secret: Vec<u8>,
    /// The workspace's verified e-mail domains (lower case): a login is matched to a member only
    /// by a verified address in one of them.
    pub domains: Vec<String>,
    /// When it was configured.
    pub updated_at: OffsetDateTime,
}

/// The row id of a workspace's one OIDC connection, in its secret context and audit target.
pub const OIDC_CONNECTION: &str = "oidc";

impl OidcConnection {
    /// Checks the shape: an `https` issuer (or `http` on a loopback host, for tests and local
    /// providers), a client id, and 1 to [`MAX_SSO_DOMAINS`] valid domains.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the rule broken.
    pub fn validate(&self) -> Result<()> {
        let issuer = url::Url::parse(&self.issuer)
            .map_err(|_| Error::invalid("the issuer must be a URL"))?;
        let loopback = matches!(issuer.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
        if !(issuer.scheme() == "https" || (issuer.scheme() == "http" && loopback))
            || self.issuer.len() > MAX_OIDC_FIELD
        {
            return Err(Error::invalid("the issuer must be an https URL"));
        }
        if self.client_id.trim().is_empty()
            || self.client_id.len() > MAX_OIDC_FIELD
            || self.client_id.chars().any(char::is_control)
        {
            return Err(Error::invalid(
                "the client id must be 1 to 1024 printable bytes",
            ));
        }
        if self.domains.is_empty() || self.domains.len() > MAX_SSO_DOMAINS {
            return Err(Error::invalid("name 1 to 50 verified e-mail domains"));
        }
        for domain in &self.domains {
            if crate::store::normalize_domain(domain)? != *domain {
                return Err(Error::invalid("domains must be lower-case host names"));
            }
        }
        Ok(())
    }

    /// What audit records show of it: never the secret.
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "issuer": self.issuer,
            "client_id": self.client_id,
            "domains": self.domains,
        })
    }
}

/// Storage of plans, SSO enforcement, OIDC connections and SSO sessions. Every change is written
/// with its audit record in one transaction.
#[async_trait]
pub trait SsoStore: Send + Sync {
    /// The workspace's plan and enforcement. Any scope of the workspace.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the workspace does not exist.
    async fn sso_settings(&self, scope: &Scope) -> Result<SsoSettings>;

    /// Sets the workspace's plan with a `plan.changed` record ([`plan_draft`]). Requires
    /// [`Action::WorkspaceUpdate`] held by the provisioning task ([`require_provisioning`]):
    /// members never choose their own plan.
    ///
    /// # Errors
    /// [`Error::Denied`], [`Error::NotFound`].
    async fn set_plan(&self, scope: &Scope, plan: Plan, at: OffsetDateTime) -> Result<AuditRecord>;

    /// Switches enforcing SSO on or off with a `sso.enforcement_changed` record
    /// ([`enforcement_draft`]). Requires [`Action::MemberManage`]. Switching it on needs a plan
    /// with [`Feature::Sso`], checked in the same transaction.
    ///
    /// # Errors
    /// [`Denied::FeatureNotInPlan`] below Business; [`Error::NotFound`].
    async fn set_sso_enforced(
        &self,
        scope: &Scope,
        enforce: bool,
        at: OffsetDateTime,
    ) -> Result<AuditRecord>;

    /// The workspace's OIDC connection. Requires [`Action::WorkspaceRead`],
    /// [`Action::SecretRead`] or [`Action::DirectorySync`] ([`require_sso_read`]).
    async fn oidc_connection(&self, scope: &Scope) -> Result<Option<OidcConnection>>;

    /// Stores or replaces the OIDC connection with a `sso.configured` record
    /// ([`connection_draft`]). Requires [`Action::SecretWrite`] and a plan with
    /// [`Feature::Sso`], checked in the same transaction.
    ///
    /// # Errors
    /// [`Denied::FeatureNotInPlan`] below Business; [`Error::Invalid`] for a connection
    /// [`OidcConnection::validate`] refuses; [`Error::NotFound`].
    async fn put_oidc_connection(
        &self,
        scope: &Scope,
        connection: &OidcConnection,
        at: OffsetDateTime,
    ) -> Result<AuditRecord>;

    /// Removes the OIDC connection with a `sso.removed` record; `None` when there was none.
    /// Requires [`Action::SecretWrite`].
    async fn delete_oidc_connection(
        &self,
        scope: &Scope,
        at: OffsetDateTime,
    ) -> Result<Option<AuditRecord>>;

    /// Stores a session bound to `scope.workspace()` and its `sso.login_succeeded` record
    /// ([`login_draft`], naming `protocol`) in one transaction. The scope is the member's own
    /// ([`Action::WorkspaceRead`], actor the session's user).
    ///
    /// # Errors
    /// [`Error::Denied`] when the scope's actor is not the session's user;
    /// [`Error::Conflict`] for a selector that exists.
    async fn insert_sso_session(
        &self,
        scope: &Scope,
        session: &SessionRecord,
        protocol: SsoProtocol,
        at: OffsetDateTime,
    ) -> Result<AuditRecord>;

    /// The workspace a live session is bound to, if an identity provider started it. Asked
    /// before any scope exists (building the principal).
    async fn sso_session_workspace(&self, selector: &str) -> Result<Option<WorkspaceId>>;
}

/// Checks a scope that reads the OIDC connection.
///
/// # Errors
/// [`Error::Denied`] otherwise.
pub fn require_sso_read(scope: &Scope) -> Result<()> {
    scope
        .require(Action::WorkspaceRead)
        .or_else(|_| scope.require(Action::SecretRead))
        .or_else(|_| scope.require(Action::DirectorySync))
        .map_err(Error::from)
}

/// Checks that a scope may set the plan: [`Action::WorkspaceUpdate`] held by the provisioning
/// task.
///
/// # Errors
/// [`Error::Denied`] otherwise.
pub fn require_provisioning(scope: &Scope) -> Result<()> {
    scope.require(Action::WorkspaceUpdate)?;
    if scope.actor() != Actor::System(SystemTask::Provisioning) {
        return Err(Denied::ActionNotPermitted.into());
    }
    Ok(())
}

/// Checks that the plan includes `feature`.
///
/// # Errors
/// [`Denied::FeatureNotInPlan`].
pub fn require_feature(settings: &SsoSettings, feature: Feature) -> Result<()> {
    settings.plan.require(feature).map_err(Error::from)
}

/// The audit record of a plan change.
pub fn plan_draft(scope: &Scope, before: Plan, after: Plan) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::PlanChanged,
        Target::workspace(scope.workspace()),
    )
    .with_before(json!({ "plan": before.as_str() }))
    .with_after(json!({ "plan": after.as_str() }))
}

/// The audit record of an enforcement change.
pub fn enforcement_draft(scope: &Scope, before: bool, after: bool) -> AuditDraft {
    AuditDraft::new(
        scope,
        AuditAction::SsoEnforcementChanged,
        Target::workspace(scope.workspace()),
    )
    .with_before(json!({ "enforce_sso": before }))
    .with_after(json!({ "enforce_sso": after }))
}

/// The target of SSO connection records.
pub fn connection_target() -> Target {
    Target::new("sso_connection", OIDC_CONNECTION)
}

/// The audit record of configuring a connection.
pub fn connection_draft(
    scope: &Scope,
    before: Option<&OidcConnection>,
    after: &OidcConnection,
) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::SsoConfigured, connection_target())
        .with_before(before.map_or(serde_json::Value::Null, OidcConnection::to_json))
        .with_after(after.to_json())
}

/// The audit record of removing a connection.
pub fn removal_draft(scope: &Scope, before: &OidcConnection) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::SsoRemoved, connection_target())
        .with_before(before.to_json())
}

/// The audit record of a successful SSO login.
pub fn login_draft(scope: &Scope, user: UserId, protocol: &str) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::SsoLoginSucceeded, Target::user(user))
        .with_after(json!({ "protocol": protocol }))
}

/// The audit record of a refused SSO login: the protocol and a fixed reason, never a token or
/// an address.
pub fn login_failed_draft(scope: &Scope, protocol: &str, reason: &str) -> AuditDraft {
    AuditDraft::new(scope, AuditAction::SsoLoginFailed, connection_target())
        .with_after(json!({ "protocol": protocol, "reason": reason }))
}

/// Checks that an SSO session's scope belongs to its subject.
///
/// # Errors
/// [`Denied::WrongScope`] otherwise.
pub fn check_session_scope(scope: &Scope, session: &SessionRecord) -> Result<()> {
    scope.require(Action::WorkspaceRead)?;
    match (scope.actor(), session.subject) {
        (Actor::Member(user), crate::auth::totp::Subject::User(subject)) if user == subject => {
            Ok(())
        }
        _ => Err(Denied::WrongScope.into()),
    }
}

/// The memberships a session's principal carries (see the module docs): a session bound to a
/// workspace keeps only that workspace's membership; an unbound one loses every workspace in
/// `enforced`.
pub fn admitted_memberships(
    memberships: Vec<Membership>,
    bound: Option<WorkspaceId>,
    enforced: &[WorkspaceId],
) -> Vec<Membership> {
    memberships
        .into_iter()
        .filter(|m| match bound {
            Some(workspace) => m.workspace == workspace,
            None => !enforced.contains(&m.workspace),
        })
        .collect()
}

/// A customer session's memberships, read fresh and filtered by [`admitted_memberships`]: the
/// one way the HTTP layer builds a member's principal from a session. Each workspace's
/// enforcement is read with the [`SystemTask::SingleSignOn`] task's scope.
///
/// # Errors
/// Store errors.
pub async fn session_memberships(
    store: &dyn crate::store::Store,
    gate: &Gate,
    user: UserId,
    selector: &str,
) -> Result<Vec<Membership>> {
    let memberships = store.memberships(user).await?;
    let bound = store.sso_session_workspace(selector).await?;
    let mut enforced = Vec::new();
    if bound.is_none() {
        let task = Principal::System(SystemTask::SingleSignOn);
        for membership in &memberships {
            let scope = gate.authorize(&task, membership.workspace, Action::WorkspaceRead)?;
            match store.sso_settings(&scope).await {
                Ok(settings) if settings.enforce_sso => enforced.push(membership.workspace),
                Ok(_) | Err(Error::NotFound) => {}
                Err(error) => return Err(error),
            }
        }
    }
    Ok(admitted_memberships(memberships, bound, &enforced))
}

/// Configures the workspace's OIDC identity provider: checks the plan, normalises the domains,
/// seals the client secret under the workspace's tenant key and stores the connection with its
/// `sso.configured` record. Requires [`Action::SecretWrite`].
///
/// # Errors
/// [`Denied::FeatureNotInPlan`] below Business; [`Error::Invalid`] for a bad issuer, client id,
/// secret or domain.
#[allow(clippy::too_many_arguments)]
pub async fn configure_oidc(
    store: &dyn crate::store::Store,
    vault: &crate::crypto::Vault,
    scope: &Scope,
    issuer: &str,
    client_id: &str,
    client_secret: &[u8],
    domains: &[String],
    at: OffsetDateTime,
) -> Result<AuditRecord> {
    scope.require(Action::SecretWrite)?;
    require_feature(&store.sso_settings(scope).await?, Feature::Sso)?;
    if client_secret.is_empty() || client_secret.len() > 4096 {
        return Err(Error::invalid("the client secret must be 1 to 4096 bytes"));
    }
    let domains = domains
        .iter()
        .map(|d| crate::store::normalize_domain(d))
        .collect::<Result<Vec<_>>>()?;
    let sealed_secret = vault
        .seal(
            scope,
            &crate::crypto::SecretContext::oidc_client_secret(scope.workspace(), OIDC_CONNECTION),
            client_secret,
        )
        .await?;
    let connection = OidcConnection {
        issuer: issuer.to_owned(),
        client_id: client_id.to_owned(),
        sealed_secret,
        domains,
        updated_at: at,
    };
    store.put_oidc_connection(scope, &connection, at).await
}

/// Starts a customer session bound to `scope.workspace()` for the scope's member, with its
/// `sso.login_succeeded` record naming `protocol`: what an identity provider's successful login
/// ends with. The
/// scope is the member's own ([`Action::WorkspaceRead`]). Returns the token for the cookie (shown
/// once) and the session; it has not passed a second factor.
///
/// # Errors
/// [`Denied::WrongScope`] for a scope that is not a member's; store errors.
pub async fn start_sso_session(
    store: &dyn crate::store::Store,
    hasher: &crate::auth::tokens::TokenHasher,
    scope: &Scope,
    protocol: SsoProtocol,
    now: OffsetDateTime,
) -> Result<(
    crate::auth::tokens::SplitToken,
    crate::auth::session::Session,
)> {
    let Actor::Member(user) = scope.actor() else {
        return Err(Denied::WrongScope.into());
    };
    let subject = crate::auth::totp::Subject::User(user);
    let token = crate::auth::tokens::SplitToken::generate();
    let record = SessionRecord {
        selector: token.selector(),
        digest: hasher.digest(token.verifier()),
        subject,
        second_factor: false,
        created_at: now,
        last_seen_at: now,
    };
    store
        .insert_sso_session(scope, &record, protocol, now)
        .await?;
    let (absolute, idle) = crate::auth::session::Realm::Customer.session_lifetimes();
    let session = crate::auth::session::Session {
        selector: record.selector,
        subject,
        second_factor: false,
        expires_at: now + absolute.min(idle),
    };
    Ok((token, session))
}

/// A member signed in through a workspace's identity provider ([`sign_in_member`]).
#[derive(Debug)]
pub struct MemberSignIn {
    /// The member.
    pub user: crate::tenancy::UserId,
    /// The session token for the cookie (shown once).
    pub token: crate::auth::tokens::SplitToken,
    /// The session, bound to the workspace.
    pub session: crate::auth::session::Session,
}

/// What every identity provider's successful login ends with, once the provider's assertion
/// and the address's domain are checked: the user with `address`, if they are a member of
/// `workspace`, gets a session bound to it ([`start_sso_session`], recorded with `protocol`).
/// `None` when no user has the address or they are not a member there.
///
/// # Errors
/// Store errors.
pub async fn sign_in_member(
    store: &dyn crate::store::Store,
    hasher: &crate::auth::tokens::TokenHasher,
    gate: &crate::tenancy::Gate,
    workspace: WorkspaceId,
    address: &crate::mail::Address,
    protocol: SsoProtocol,
    now: OffsetDateTime,
) -> Result<Option<MemberSignIn>> {
    let Some(user) = store.user_by_email(address).await? else {
        return Ok(None);
    };
    let Some(membership) = store
        .memberships(user.id)
        .await?
        .into_iter()
        .find(|m| m.workspace == workspace)
    else {
        return Ok(None);
    };
    // The member's own scope: the login record names them.
    let member = crate::tenancy::Principal::member(user.id, [(workspace, membership.role)]);
    let Ok(scope) = gate.authorize(&member, workspace, Action::WorkspaceRead) else {
        return Ok(None);
    };
    let (token, session) = start_sso_session(store, hasher, &scope, protocol, now).await?;
    Ok(Some(MemberSignIn {
        user: user.id,
        token,
        session,
    }))
}

/// Opens a connection's client secret (any scope of the workspace that the vault admits).
///
/// # Errors
/// [`Error::Decrypt`] when it does not open.
pub async fn open_client_secret(
    vault: &crate::crypto::Vault,
    scope: &Scope,
    connection: &OidcConnection,
) -> Result<crate::crypto::SecretBytes> {
    vault
        .open(
            scope,
            &crate::crypto::SecretContext::oidc_client_secret(scope.workspace(), OIDC_CONNECTION),
            &connection.sealed_secret,
        )
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenancy::Role;

    #[test]
    fn bound_sessions_keep_their_workspace_and_unbound_lose_enforced_ones() {
        let (a, b, c) = (WorkspaceId::new(), WorkspaceId::new(), WorkspaceId::new());
        let ms: Vec<Membership> = [a, b, c]
            .into_iter()
            .map(|workspace| Membership {
                workspace,
                role: Role::Admin,
                require_totp: false,
            })
            .collect();
        let ws = |v: Vec<Membership>| v.into_iter().map(|m| m.workspace).collect::<Vec<_>>();
        assert_eq!(ws(admitted_memberships(ms.clone(), None, &[])), [a, b, c]);
        assert_eq!(ws(admitted_memberships(ms.clone(), None, &[b])), [a, c]);
        assert_eq!(ws(admitted_memberships(ms.clone(), Some(b), &[])), [b]);
        assert_eq!(
            ws(admitted_memberships(ms, Some(WorkspaceId::new()), &[])),
            Vec::<WorkspaceId>::new()
        );
    }

    #[test]
    fn connections_are_checked() {
        let ok = OidcConnection {
            issuer: "https://idp.example.com".into(),
            client_id: "leadmaps".into(),
            sealed_secret: vec![1],
            domains: vec!["example.com".into()],
            updated_at: OffsetDateTime::UNIX_EPOCH,
        };
        assert!(ok.validate().is_ok());
        assert!(!ok.to_json().to_string().contains("sealed"));
        for bad in [
            OidcConnection {
                issuer: "http://idp.example.com".into(),
                ..ok.clone()
            },
            OidcConnection {
                client_id: " ".into(),
                ..ok.clone()
            },
            OidcConnection {
                domains: vec![],
                ..ok.clone()
            },
            OidcConnection {
                domains: vec!["Example.COM".into()],
                ..ok.clone()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let local = OidcConnection {
            issuer: "http://127.0.0.1:8080/".into(),
            ..ok
        };
        assert!(local.validate().is_ok());
    }
}
