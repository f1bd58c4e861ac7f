//! [`SsoStore`] and [`ScimStore`] on `workspaces` (plan, enforcement), `oidc_connections`,
//! `sessions.sso_workspace` and `scim_resources`. Every change is one transaction scoped to the
//! workspace (row-level security holds it there) with its audit record; a SCIM deprovisioning
//! deletes the user's membership, sessions, pending links and recovery codes and revokes their
//! API keys in that same transaction.

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
use time::OffsetDateTime;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::auth::subject_key;
use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

fn settings_from(row: &Row) -> Result<SsoSettings> {
    let plan: String = row.try_get(0).map_err(pg)?;
    Ok(SsoSettings {
        plan: Plan::parse(&plan).ok_or_else(|| internal("a stored plan is unknown"))?,
        enforce_sso: row.try_get(1).map_err(pg)?,
    })
}

const SETTINGS: &str = "SELECT plan, enforce_sso FROM leadmaps.workspaces WHERE workspace_id = $1";

async fn settings_in(tx: &Tx<'_>, workspace: WorkspaceId, lock: bool) -> Result<SsoSettings> {
    let sql = if lock {
        format!("{SETTINGS} FOR UPDATE")
    } else {
        SETTINGS.to_owned()
    };
    let select = tx.prepare_cached(&sql).await.map_err(pg)?;
    let row = tx
        .query_opt(&select, &[&id(workspace)])
        .await
        .map_err(pg)?
        .ok_or(Error::NotFound)?;
    settings_from(&row)
}

const OIDC: &str = "SELECT issuer, client_id, sealed_secret, domains, updated_at \
     FROM leadmaps.oidc_connections WHERE workspace_id = $1";

fn oidc_from(row: &Row) -> Result<OidcConnection> {
    Ok(OidcConnection {
        issuer: row.try_get(0).map_err(pg)?,
        client_id: row.try_get(1).map_err(pg)?,
        sealed_secret: row.try_get(2).map_err(pg)?,
        domains: row.try_get(3).map_err(pg)?,
        updated_at: row.try_get(4).map_err(pg)?,
    })
}

async fn oidc_in(tx: &Tx<'_>, workspace: WorkspaceId) -> Result<Option<OidcConnection>> {
    let select = tx
        .prepare_cached(&format!("{OIDC} FOR UPDATE"))
        .await
        .map_err(pg)?;
    tx.query_opt(&select, &[&id(workspace)])
        .await
        .map_err(pg)?
        .as_ref()
        .map(oidc_from)
        .transpose()
}

const RESOURCE_COLUMNS: &str = "resource_id, kind, name, external_id, active, user_id, document, \
     created_at, updated_at, version";

fn resource_from(row: &Row) -> Result<ScimResource> {
    let kind: String = row.try_get(1).map_err(pg)?;
    let user: Option<Uuid> = row.try_get(5).map_err(pg)?;
    let document: String = row.try_get(6).map_err(pg)?;
    let version: i64 = row.try_get(9).map_err(pg)?;
    Ok(ScimResource {
        id: row.try_get(0).map_err(pg)?,
        kind: ScimKind::parse(&kind).ok_or_else(|| internal("a stored SCIM kind is unknown"))?,
        name: row.try_get(2).map_err(pg)?,
        external_id: row.try_get(3).map_err(pg)?,
        active: row.try_get(4).map_err(pg)?,
        user: user.map(UserId::from_uuid),
        document: serde_json::from_str(&document)
            .map_err(|_| internal("a stored SCIM document is not JSON"))?,
        created_at: row.try_get(7).map_err(pg)?,
        updated_at: row.try_get(8).map_err(pg)?,
        version: u64::try_from(version).map_err(|_| internal("a stored version is negative"))?,
    })
}

/// Appends `draft` in `tx` and commits.
async fn commit_with(
    tx: Tx<'_>,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
) -> Result<AuditRecord> {
    let record = crate::audit::append_in(&tx, workspace, draft, at).await?;
    tx.commit().await.map_err(pg)?;
    Ok(record)
}

async fn execute(
    tx: &Tx<'_>,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<u64> {
    let statement = tx.prepare_cached(sql).await.map_err(pg)?;
    tx.execute(&statement, params).await.map_err(pg)
}

#[async_trait]
impl SsoStore for PostgresStore {
    async fn sso_settings(&self, scope: &Scope) -> Result<SsoSettings> {
        let rows = self
            .scoped_read(scope, SETTINGS, &[&id(scope.workspace())])
            .await?;
        settings_from(rows.first().ok_or(Error::NotFound)?)
    }

    async fn set_plan(&self, scope: &Scope, plan: Plan, at: OffsetDateTime) -> Result<AuditRecord> {
        require_provisioning(scope)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let before = settings_in(&tx, scope.workspace(), true).await?;
        let draft = plan_draft(scope, before.plan, plan);
        draft.check_scope(scope)?;
        execute(
            &tx,
            "UPDATE leadmaps.workspaces SET plan = $2 WHERE workspace_id = $1",
            &[&id(scope.workspace()), &plan.as_str()],
        )
        .await?;
        commit_with(tx, scope.workspace(), draft, at).await
    }

    async fn set_sso_enforced(
        &self,
        scope: &Scope,
        enforce: bool,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::MemberManage)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let before = settings_in(&tx, scope.workspace(), true).await?;
        if enforce {
            require_feature(&before, Feature::Sso)?;
        }
        let draft = enforcement_draft(scope, before.enforce_sso, enforce);
        draft.check_scope(scope)?;
        execute(
            &tx,
            "UPDATE leadmaps.workspaces SET enforce_sso = $2 WHERE workspace_id = $1",
            &[&id(scope.workspace()), &enforce],
        )
        .await?;
        commit_with(tx, scope.workspace(), draft, at).await
    }

    async fn oidc_connection(&self, scope: &Scope) -> Result<Option<OidcConnection>> {
        require_sso_read(scope)?;
        self.scoped_read(scope, OIDC, &[&id(scope.workspace())])
            .await?
            .first()
            .map(oidc_from)
            .transpose()
    }

    async fn put_oidc_connection(
        &self,
        scope: &Scope,
        connection: &OidcConnection,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        scope.require(Action::SecretWrite)?;
        connection.validate()?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        // The plan is read under a row lock, so a concurrent downgrade waits for this change.
        require_feature(
            &settings_in(&tx, scope.workspace(), true).await?,
            Feature::Sso,
        )?;
        let before = oidc_in(&tx, scope.workspace()).await?;
        let draft = connection_draft(scope, before.as_ref(), connection);
        draft.check_scope(scope)?;
        execute(
            &tx,
            "INSERT INTO leadmaps.oidc_connections
                 (workspace_id, issuer, client_id, sealed_secret, domains, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (workspace_id) DO UPDATE SET issuer = excluded.issuer,
                 client_id = excluded.client_id, sealed_secret = excluded.sealed_secret,
                 domains = excluded.domains, updated_at = excluded.updated_at",
            &[
                &id(scope.workspace()),
                &connection.issuer,
                &connection.client_id,
                &connection.sealed_secret,
                &connection.domains,
                &connection.updated_at,
            ],
        )
        .await?;
        commit_with(tx, scope.workspace(), draft, at).await
    }

    async fn delete_oidc_connection(
        &self,
        scope: &Scope,
        at: OffsetDateTime,
    ) -> Result<Option<AuditRecord>> {
        scope.require(Action::SecretWrite)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let Some(before) = oidc_in(&tx, scope.workspace()).await? else {
            return Ok(None);
        };
        let draft = removal_draft(scope, &before);
        draft.check_scope(scope)?;
        execute(
            &tx,
            "DELETE FROM leadmaps.oidc_connections WHERE workspace_id = $1",
            &[&id(scope.workspace())],
        )
        .await?;
        commit_with(tx, scope.workspace(), draft, at)
            .await
            .map(Some)
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
        let (kind, subject) = subject_key(session.subject);
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let draft = login_draft(scope, user, protocol.as_str());
        draft.check_scope(scope)?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.sessions (selector, digest_key_id, digest_mac, subject_kind,
                     subject_id, second_factor, created_at, last_seen_at, sso_workspace)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &session.selector,
                &i64::from(session.digest.key_id),
                &&session.digest.mac[..],
                &kind,
                &subject,
                &session.second_factor,
                &session.created_at,
                &session.last_seen_at,
                &id(scope.workspace()),
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "session selector exists"))?;
        commit_with(tx, scope.workspace(), draft, at).await
    }

    async fn sso_session_workspace(&self, selector: &str) -> Result<Option<WorkspaceId>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT sso_workspace FROM leadmaps.sessions WHERE selector = $1")
            .await
            .map_err(pg)?;
        let row = client.query_opt(&select, &[&selector]).await.map_err(pg)?;
        let bound: Option<Uuid> = match row {
            Some(row) => row.try_get(0).map_err(pg)?,
            None => None,
        };
        Ok(bound.map(WorkspaceId::from_uuid))
    }
}

/// Deprovisions `user` in `tx`; see [`Provisioning::Revoke`].
async fn revoke_in(
    tx: &Tx<'_>,
    workspace: WorkspaceId,
    user: UserId,
    at: OffsetDateTime,
) -> Result<Revoked> {
    let user_id = *user.as_uuid();
    let membership = execute(
        tx,
        "DELETE FROM leadmaps.memberships WHERE workspace_id = $1 AND user_id = $2",
        &[&id(workspace), &user_id],
    )
    .await?
        > 0;
    let (kind, subject) = subject_key(Subject::User(user));
    let sessions = execute(
        tx,
        "DELETE FROM leadmaps.sessions WHERE subject_kind = $1 AND subject_id = $2",
        &[&kind, &subject],
    )
    .await?;
    let recovery_codes = execute(
        tx,
        "DELETE FROM leadmaps.recovery_codes WHERE subject_kind = $1 AND subject_id = $2",
        &[&kind, &subject],
    )
    .await?;
    let select = tx
        .prepare_cached("SELECT email FROM leadmaps.users WHERE id = $1")
        .await
        .map_err(pg)?;
    let email: Option<String> = match tx.query_opt(&select, &[&user_id]).await.map_err(pg)? {
        Some(row) => Some(row.try_get(0).map_err(pg)?),
        None => None,
    };
    let links = match email {
        Some(email) => {
            execute(
                tx,
                "DELETE FROM leadmaps.magic_links WHERE email = $1 AND realm = 'customer'",
                &[&email],
            )
            .await?
        }
        None => 0,
    };
    let api_keys = execute(
        tx,
        "UPDATE leadmaps.api_keys SET revoked_at = $3
         WHERE workspace_id = $1 AND created_by = $2 AND revoked_at IS NULL",
        &[&id(workspace), &user_id, &at],
    )
    .await?;
    Ok(Revoked {
        membership,
        sessions,
        api_keys,
        links,
        recovery_codes,
    })
}

/// Admits the user of `email` (created if new) as a viewer unless they have a role.
async fn admit_in(
    tx: &Tx<'_>,
    workspace: WorkspaceId,
    email: &str,
    at: OffsetDateTime,
) -> Result<UserId> {
    let select = tx
        .prepare_cached("SELECT id FROM leadmaps.users WHERE email = $1")
        .await
        .map_err(pg)?;
    let user = match tx.query_opt(&select, &[&email]).await.map_err(pg)? {
        Some(row) => UserId::from_uuid(row.try_get(0).map_err(pg)?),
        None => {
            let user = UserId::new();
            let insert = tx
                .prepare_cached(
                    "INSERT INTO leadmaps.users (id, email, created_at) VALUES ($1, $2, $3)",
                )
                .await
                .map_err(pg)?;
            tx.execute(&insert, &[user.as_uuid(), &email, &at])
                .await
                .map_err(|e| pg_conflict(e, "user exists"))?;
            user
        }
    };
    execute(
        tx,
        "INSERT INTO leadmaps.memberships (workspace_id, user_id, role) VALUES ($1, $2, 'viewer')
         ON CONFLICT (workspace_id, user_id) DO NOTHING",
        &[&id(workspace), user.as_uuid()],
    )
    .await?;
    Ok(user)
}

#[async_trait]
impl ScimStore for PostgresStore {
    async fn scim_resources(&self, scope: &Scope, kind: ScimKind) -> Result<Vec<ScimResource>> {
        require_directory(scope)?;
        self.scoped_read(
            scope,
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM leadmaps.scim_resources
                 WHERE workspace_id = $1 AND kind = $2 ORDER BY created_at, resource_id"
            ),
            &[&id(scope.workspace()), &kind.as_str()],
        )
        .await?
        .iter()
        .map(resource_from)
        .collect()
    }

    async fn scim_resource(
        &self,
        scope: &Scope,
        kind: ScimKind,
        resource: Uuid,
    ) -> Result<Option<ScimResource>> {
        require_directory(scope)?;
        self.scoped_read(
            scope,
            &format!(
                "SELECT {RESOURCE_COLUMNS} FROM leadmaps.scim_resources
                 WHERE workspace_id = $1 AND resource_id = $2 AND kind = $3"
            ),
            &[&id(scope.workspace()), &resource, &kind.as_str()],
        )
        .await?
        .first()
        .map(resource_from)
        .transpose()
    }

    async fn scim_write(
        &self,
        scope: &Scope,
        write: &ScimWrite,
        at: OffsetDateTime,
    ) -> Result<ScimOutcome> {
        require_directory(scope)?;
        write.resource.validate()?;
        let workspace = scope.workspace();
        let version = i64::try_from(write.resource.version)
            .map_err(|_| Error::invalid("version out of range"))?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, workspace, false).await?;
        let mut resource = write.resource.clone();
        let mut revoked = None;
        match &write.provisioning {
            Provisioning::Keep => {}
            Provisioning::Admit(email) => {
                resource.user = Some(admit_in(&tx, workspace, email.as_str(), at).await?);
            }
            Provisioning::Revoke(user) => {
                revoked = Some(revoke_in(&tx, workspace, *user, at).await?);
                resource.user = None;
            }
        }
        let user = resource.user.map(|u| *u.as_uuid());
        let document = resource.document.to_string();
        let kind = resource.kind.as_str();
        let changed = match write.op {
            ScimOp::Create => {
                let insert = tx
                    .prepare_cached(&format!(
                        "INSERT INTO leadmaps.scim_resources (workspace_id, {RESOURCE_COLUMNS}, name_key)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
                    ))
                    .await
                    .map_err(pg)?;
                tx.execute(
                    &insert,
                    &[
                        &id(workspace),
                        &resource.id,
                        &kind,
                        &resource.name,
                        &resource.external_id,
                        &resource.active,
                        &user,
                        &document,
                        &resource.created_at,
                        &resource.updated_at,
                        &version,
                        &resource.name_key(),
                    ],
                )
                .await
                .map_err(|e| pg_conflict(e, "SCIM resource exists"))?
            }
            ScimOp::Replace { expected } => {
                let update = tx
                    .prepare_cached(
                        "UPDATE leadmaps.scim_resources SET name = $4, name_key = $5,
                             external_id = $6, active = $7, user_id = $8, document = $9,
                             updated_at = $10, version = $11
                         WHERE workspace_id = $1 AND resource_id = $2 AND kind = $3
                             AND version = $12",
                    )
                    .await
                    .map_err(pg)?;
                tx.execute(
                    &update,
                    &[
                        &id(workspace),
                        &resource.id,
                        &kind,
                        &resource.name,
                        &resource.name_key(),
                        &resource.external_id,
                        &resource.active,
                        &user,
                        &document,
                        &resource.updated_at,
                        &version,
                        &i64::try_from(expected).unwrap_or(-1),
                    ],
                )
                .await
                .map_err(|e| pg_conflict(e, "SCIM resource name exists"))?
            }
            ScimOp::Delete { expected } => {
                execute(
                    &tx,
                    "DELETE FROM leadmaps.scim_resources
                     WHERE workspace_id = $1 AND resource_id = $2 AND kind = $3 AND version = $4",
                    &[
                        &id(workspace),
                        &resource.id,
                        &kind,
                        &i64::try_from(expected).unwrap_or(-1),
                    ],
                )
                .await?
            }
        };
        if changed == 0 {
            let select = tx
                .prepare_cached(
                    "SELECT 1 FROM leadmaps.scim_resources
                     WHERE workspace_id = $1 AND resource_id = $2 AND kind = $3",
                )
                .await
                .map_err(pg)?;
            let exists = tx
                .query_opt(&select, &[&id(workspace), &resource.id, &kind])
                .await
                .map_err(pg)?
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
        let draft = write_draft(scope, &applied, revoked.as_ref());
        draft.check_scope(scope)?;
        let record = commit_with(tx, workspace, draft, at).await?;
        Ok(ScimOutcome {
            resource,
            record,
            revoked,
        })
    }
}
