//! [`SsoStore`] and [`ScimStore`] on `workspaces` (plan, enforcement), `oidc_connections`,
//! `sessions.sso_workspace` and `scim_resources`. Every change runs in one IMMEDIATE transaction
//! with its audit record; a SCIM deprovisioning deletes the user's membership, sessions, pending
//! links and recovery codes and revokes their API keys in that same transaction.

use async_trait::async_trait;
use leadmaps_core::audit::{AuditDraft, AuditRecord};
use leadmaps_core::auth::session::SessionRecord;
use leadmaps_core::auth::totp::Subject;
use leadmaps_core::policy::{Feature, Plan};
use leadmaps_core::scim::{
    Provisioning, Revoked, ScimKind, ScimOp, ScimOutcome, ScimResource, ScimStore, ScimWrite,
    require_directory, write_draft,
};
use leadmaps_core::sso::{
    OidcConnection, SsoProtocol, SsoSettings, SsoStore, check_session_scope, connection_draft,
    enforcement_draft, login_draft, plan_draft, removal_draft, require_feature,
    require_provisioning, require_sso_read,
};
use leadmaps_core::tenancy::{Action, Scope, UserId, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, Transaction, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::auth::subject_key;
use crate::codec::{corrupt, get_flag, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

fn read_settings(row: &Row<'_>) -> rusqlite::Result<SsoSettings> {
    let plan: String = row.get(0)?;
    Ok(SsoSettings {
        plan: Plan::parse(&plan).ok_or_else(|| corrupt(0, Type::Text, "plan"))?,
        enforce_sso: get_flag(row, 1)?,
    })
}

fn settings_in(tx: &Transaction<'_>, workspace: [u8; 16]) -> Result<SsoSettings> {
    let mut select = tx.prepare_cached(sql::SELECT_SSO_SETTINGS).map_err(db)?;
    select
        .query_row([workspace], read_settings)
        .optional()
        .map_err(db)?
        .ok_or(Error::NotFound)
}

fn read_oidc(row: &Row<'_>) -> rusqlite::Result<OidcConnection> {
    let domains: String = row.get(3)?;
    Ok(OidcConnection {
        issuer: row.get(0)?,
        client_id: row.get(1)?,
        sealed_secret: row.get(2)?,
        domains: serde_json::from_str(&domains).map_err(|_| corrupt(3, Type::Text, "domains"))?,
        updated_at: get_time(row, 4)?,
    })
}

fn oidc_in(tx: &Transaction<'_>, workspace: [u8; 16]) -> Result<Option<OidcConnection>> {
    let mut select = tx.prepare_cached(sql::SELECT_OIDC).map_err(db)?;
    select
        .query_row([workspace], read_oidc)
        .optional()
        .map_err(db)
}

fn read_resource(row: &Row<'_>) -> rusqlite::Result<ScimResource> {
    let kind: String = row.get(1)?;
    let user: Option<[u8; 16]> = row.get(5)?;
    let document: String = row.get(6)?;
    let version: i64 = row.get(9)?;
    Ok(ScimResource {
        id: Uuid::from_bytes(row.get(0)?),
        kind: ScimKind::parse(&kind).ok_or_else(|| corrupt(1, Type::Text, "SCIM kind"))?,
        name: row.get(2)?,
        external_id: row.get(3)?,
        active: get_flag(row, 4)?,
        user: user.map(|b| UserId::from_uuid(Uuid::from_bytes(b))),
        document: serde_json::from_str(&document)
            .map_err(|_| corrupt(6, Type::Text, "SCIM document"))?,
        created_at: get_time(row, 7)?,
        updated_at: get_time(row, 8)?,
        version: u64::try_from(version).map_err(|_| corrupt(9, Type::Integer, "version"))?,
    })
}

fn immediate(conn: &mut rusqlite::Connection) -> Result<Transaction<'_>> {
    conn.transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(db)
}

/// Appends `draft` in `tx` and commits.
fn commit_with(
    tx: Transaction<'_>,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
) -> Result<AuditRecord> {
    let record = crate::audit::append_in(&tx, workspace, draft, at)?;
    tx.commit().map_err(db)?;
    Ok(record)
}

#[async_trait]
impl SsoStore for SqliteStore {
    async fn sso_settings(&self, scope: &Scope) -> Result<SsoSettings> {
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SSO_SETTINGS).map_err(db)?;
                select
                    .query_row([id], read_settings)
                    .optional()
                    .map_err(db)?
                    .ok_or(Error::NotFound)
            })
            .await
    }

    async fn set_plan(&self, scope: &Scope, plan: Plan, at: OffsetDateTime) -> Result<AuditRecord> {
        require_provisioning(scope)?;
        let scope = scope.clone();
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                let before = settings_in(&tx, id)?;
                let draft = plan_draft(&scope, before.plan, plan);
                draft.check_scope(&scope)?;
                tx.prepare_cached(sql::SET_PLAN)
                    .map_err(db)?
                    .execute(params![id, plan.as_str()])
                    .map_err(db)?;
                commit_with(tx, scope.workspace(), draft, at)
            })
            .await
    }

    async fn set_sso_enforced(
        &self,
        scope: &Scope,
        enforce: bool,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::MemberManage)?;
        let scope = scope.clone();
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                let before = settings_in(&tx, id)?;
                if enforce {
                    require_feature(&before, Feature::Sso)?;
                }
                let draft = enforcement_draft(&scope, before.enforce_sso, enforce);
                draft.check_scope(&scope)?;
                tx.prepare_cached(sql::SET_ENFORCE_SSO)
                    .map_err(db)?
                    .execute(params![id, i64::from(enforce)])
                    .map_err(db)?;
                commit_with(tx, scope.workspace(), draft, at)
            })
            .await
    }

    async fn oidc_connection(&self, scope: &Scope) -> Result<Option<OidcConnection>> {
        require_sso_read(scope)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_OIDC).map_err(db)?;
                select.query_row([id], read_oidc).optional().map_err(db)
            })
            .await
    }

    async fn put_oidc_connection(
        &self,
        scope: &Scope,
        connection: &OidcConnection,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::SecretWrite)?;
        connection.validate()?;
        let (scope, connection) = (scope.clone(), connection.clone());
        let id = id_bytes(scope.workspace());
        let updated_at = unix_nanos(connection.updated_at)?;
        let domains = serde_json::to_string(&connection.domains).map_err(Error::backend)?;
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                require_feature(&settings_in(&tx, id)?, Feature::Sso)?;
                let before = oidc_in(&tx, id)?;
                let draft = connection_draft(&scope, before.as_ref(), &connection);
                draft.check_scope(&scope)?;
                tx.prepare_cached(sql::UPSERT_OIDC)
                    .map_err(db)?
                    .execute(params![
                        id,
                        connection.issuer,
                        connection.client_id,
                        connection.sealed_secret,
                        domains,
                        updated_at
                    ])
                    .map_err(db)?;
                commit_with(tx, scope.workspace(), draft, at)
            })
            .await
    }

    async fn delete_oidc_connection(
        &self,
        scope: &Scope,
        at: OffsetDateTime,
    ) -> Result<Option<AuditRecord>> {
        scope.require(Action::SecretWrite)?;
        let scope = scope.clone();
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                let Some(before) = oidc_in(&tx, id)? else {
                    return Ok(None);
                };
                let draft = removal_draft(&scope, &before);
                draft.check_scope(&scope)?;
                tx.prepare_cached(sql::DELETE_OIDC)
                    .map_err(db)?
                    .execute([id])
                    .map_err(db)?;
                commit_with(tx, scope.workspace(), draft, at).map(Some)
            })
            .await
    }

    async fn insert_sso_session(
        &self,
        scope: &Scope,
        session: &SessionRecord,
        protocol: SsoProtocol,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        check_session_scope(scope, session)?;
        let Subject::User(user) = session.subject else {
            return Err(Error::invalid("SSO sessions are customer sessions"));
        };
        let (scope, session) = (scope.clone(), session.clone());
        let (kind, subject) = subject_key(session.subject);
        let created_at = unix_nanos(session.created_at)?;
        let last_seen_at = unix_nanos(session.last_seen_at)?;
        let workspace = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                let draft = login_draft(&scope, user, protocol.as_str());
                draft.check_scope(&scope)?;
                tx.prepare_cached(sql::INSERT_SSO_SESSION)
                    .map_err(db)?
                    .execute(params![
                        session.selector,
                        session.digest.key_id,
                        session.digest.mac,
                        kind,
                        subject,
                        i64::from(session.second_factor),
                        created_at,
                        last_seen_at,
                        workspace
                    ])
                    .map_err(|e| classify(e, "session selector exists"))?;
                commit_with(tx, scope.workspace(), draft, at)
            })
            .await
    }

    async fn sso_session_workspace(&self, selector: &str) -> Result<Option<WorkspaceId>> {
        let selector = selector.to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SSO_SESSION).map_err(db)?;
                let bound: Option<Option<[u8; 16]>> = select
                    .query_row([selector], |row| row.get(0))
                    .optional()
                    .map_err(db)?;
                Ok(bound
                    .flatten()
                    .map(|b| WorkspaceId::from_uuid(Uuid::from_bytes(b))))
            })
            .await
    }
}

/// Deprovisions `user` in `tx`; see [`Provisioning::Revoke`].
fn revoke_in(tx: &Transaction<'_>, workspace: [u8; 16], user: UserId, at: i64) -> Result<Revoked> {
    let user_bytes = *user.as_uuid().as_bytes();
    let count = |sql: &str, params: &[&dyn rusqlite::ToSql]| -> Result<u64> {
        let n = tx
            .prepare_cached(sql)
            .map_err(db)?
            .execute(params)
            .map_err(db)?;
        Ok(n as u64)
    };
    let membership = count(sql::DELETE_MEMBERSHIP, &[&workspace, &user_bytes])? > 0;
    let (kind, id) = subject_key(Subject::User(user));
    let sessions = count(sql::DELETE_SUBJECT_SESSIONS, &[&kind, &id])?;
    let recovery_codes = count(sql::DELETE_RECOVERY_CODES, &[&kind, &id])?;
    let email: Option<String> = tx
        .prepare_cached(sql::SELECT_USER)
        .map_err(db)?
        .query_row([user_bytes], |row| row.get(1))
        .optional()
        .map_err(db)?;
    let links = match email {
        Some(email) => count(sql::DELETE_CUSTOMER_LINKS, &[&email])?,
        None => 0,
    };
    let api_keys = count(sql::REVOKE_CREATED_KEYS, &[&workspace, &user_bytes, &at])?;
    Ok(Revoked {
        membership,
        sessions,
        api_keys,
        links,
        recovery_codes,
    })
}

/// Admits the user of `email` (created if new) as a viewer unless they have a role.
fn admit_in(tx: &Transaction<'_>, workspace: [u8; 16], email: &str, at: i64) -> Result<UserId> {
    let existing: Option<[u8; 16]> = tx
        .prepare_cached(sql::SELECT_USER_BY_EMAIL)
        .map_err(db)?
        .query_row([email], |row| row.get(0))
        .optional()
        .map_err(db)?;
    let user = match existing {
        Some(bytes) => UserId::from_uuid(Uuid::from_bytes(bytes)),
        None => {
            let user = UserId::new();
            tx.prepare_cached(sql::INSERT_USER)
                .map_err(db)?
                .execute(params![user.as_uuid().as_bytes(), email, at])
                .map_err(|e| classify(e, "user exists"))?;
            user
        }
    };
    tx.prepare_cached(sql::ADMIT_MEMBER)
        .map_err(db)?
        .execute(params![workspace, user.as_uuid().as_bytes()])
        .map_err(db)?;
    Ok(user)
}

#[async_trait]
impl ScimStore for SqliteStore {
    async fn scim_resources(&self, scope: &Scope, kind: ScimKind) -> Result<Vec<ScimResource>> {
        require_directory(scope)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_SCIM_RESOURCES)
                    .map_err(db)?;
                select
                    .query_map(params![id, kind.as_str()], read_resource)
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)
            })
            .await
    }

    async fn scim_resource(
        &self,
        scope: &Scope,
        kind: ScimKind,
        resource: Uuid,
    ) -> Result<Option<ScimResource>> {
        require_directory(scope)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SCIM_RESOURCE).map_err(db)?;
                select
                    .query_row(
                        params![id, resource.as_bytes(), kind.as_str()],
                        read_resource,
                    )
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn scim_write(
        &self,
        scope: &Scope,
        write: &ScimWrite,
        at: OffsetDateTime,
    ) -> Result<ScimOutcome> {
        require_directory(scope)?;
        write.resource.validate()?;
        let (scope, write) = (scope.clone(), write.clone());
        let workspace = id_bytes(scope.workspace());
        let nanos = unix_nanos(at)?;
        let created_at = unix_nanos(write.resource.created_at)?;
        let updated_at = unix_nanos(write.resource.updated_at)?;
        let version = i64::try_from(write.resource.version)
            .map_err(|_| Error::invalid("version out of range"))?;
        self.conn
            .run(move |conn| {
                let tx = immediate(conn)?;
                let mut resource = write.resource.clone();
                let mut revoked = None;
                match &write.provisioning {
                    Provisioning::Keep => {}
                    Provisioning::Admit(email) => {
                        resource.user = Some(admit_in(&tx, workspace, email.as_str(), nanos)?);
                    }
                    Provisioning::Revoke(user) => {
                        revoked = Some(revoke_in(&tx, workspace, *user, nanos)?);
                        resource.user = None;
                    }
                }
                let rid = *resource.id.as_bytes();
                let kind = resource.kind.as_str();
                let user = resource.user.map(|u| *u.as_uuid().as_bytes());
                let document = resource.document.to_string();
                let changed = match write.op {
                    ScimOp::Create => tx
                        .prepare_cached(sql::INSERT_SCIM_RESOURCE)
                        .map_err(db)?
                        .execute(params![
                            workspace,
                            rid,
                            kind,
                            resource.name,
                            resource.name_key(),
                            resource.external_id,
                            i64::from(resource.active),
                            user,
                            document,
                            created_at,
                            updated_at,
                            version
                        ])
                        .map_err(|e| classify(e, "SCIM resource exists"))?,
                    ScimOp::Replace { expected } => tx
                        .prepare_cached(sql::UPDATE_SCIM_RESOURCE)
                        .map_err(db)?
                        .execute(params![
                            workspace,
                            rid,
                            kind,
                            resource.name,
                            resource.name_key(),
                            resource.external_id,
                            i64::from(resource.active),
                            user,
                            document,
                            updated_at,
                            version,
                            i64::try_from(expected).unwrap_or(-1)
                        ])
                        .map_err(|e| classify(e, "SCIM resource name exists"))?,
                    ScimOp::Delete { expected } => tx
                        .prepare_cached(sql::DELETE_SCIM_RESOURCE)
                        .map_err(db)?
                        .execute(params![
                            workspace,
                            rid,
                            kind,
                            i64::try_from(expected).unwrap_or(-1)
                        ])
                        .map_err(db)?,
                };
                if changed == 0 {
                    // Tell a missing resource from a moved version.
                    let exists = tx
                        .prepare_cached(sql::SELECT_SCIM_RESOURCE)
                        .map_err(db)?
                        .query_row(params![workspace, rid, kind], |_| Ok(()))
                        .optional()
                        .map_err(db)?
                        .is_some();
                    return Err(if exists {
                        Error::Conflict("SCIM resource changed")
                    } else {
                        Error::NotFound
                    });
                }
                let applied = ScimWrite {
                    resource: resource.clone(),
                    ..write.clone()
                };
                let draft = write_draft(&scope, &applied, revoked.as_ref());
                draft.check_scope(&scope)?;
                let record = commit_with(tx, scope.workspace(), draft, at)?;
                Ok(ScimOutcome {
                    resource,
                    record,
                    revoked,
                })
            })
            .await
    }
}
