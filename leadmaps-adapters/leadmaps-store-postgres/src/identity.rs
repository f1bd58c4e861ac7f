//! Users, memberships and API keys (migration V5), staff members (V8).
//!
//! `users` and `staff_members` are identity data (no `workspace_id`, no row-level security, gated
//! by privileges, as the V4 tables). `memberships` and `api_keys` are customer data under the forced policies: their
//! scoped methods run in a transaction that first sets `leadmaps.workspace_id`, and filter by
//! `workspace_id` themselves too. Three calls happen before any scope exists and go through
//! SECURITY DEFINER functions of the lookup role: `memberships` (building a member's principal,
//! with each workspace's TOTP policy), `api_key_for_auth` and `touch_api_key` (authenticating a
//! key).

use async_trait::async_trait;
use leadmaps_core::audit::drafts;
use leadmaps_core::auth::keys::{ApiKeyRecord, ApiKeyStore};
use leadmaps_core::auth::staff::{StaffMember, StaffStore};
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{
    Action, ApiKeyId, Denied, Membership, Role, Scope, StaffId, UserId, WorkspaceId,
};
use leadmaps_core::{Error, Result};
use time::OffsetDateTime;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;

use crate::auth::digest_from;
use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

fn role_str(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Editor => "editor",
        Role::Admin => "admin",
    }
}

fn role_from(text: &str) -> Result<Role> {
    match text {
        "viewer" => Ok(Role::Viewer),
        "editor" => Ok(Role::Editor),
        "admin" => Ok(Role::Admin),
        _ => Err(internal("a stored membership role is unknown")),
    }
}

/// The columns of an API key, as `key_from` reads them (the lookup function's output is renamed to
/// these).
const KEY_COLUMNS: &str = "id, workspace_id, name, actions, digest_key_id, digest_mac, sealed, created_at, last_used_at, revoked_at";

fn key_from(row: &Row) -> Result<ApiKeyRecord> {
    let actions: Vec<String> = row.try_get("actions").map_err(pg)?;
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(row.try_get("id").map_err(pg)?),
        workspace: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
        name: row.try_get("name").map_err(pg)?,
        actions: actions
            .iter()
            .map(|name| {
                Action::parse(name).ok_or_else(|| internal("a stored API key action is unknown"))
            })
            .collect::<Result<_>>()?,
        digest: digest_from(row)?,
        sealed: row.try_get("sealed").map_err(pg)?,
        created_at: row.try_get("created_at").map_err(pg)?,
        last_used_at: row.try_get("last_used_at").map_err(pg)?,
        revoked_at: row.try_get("revoked_at").map_err(pg)?,
    })
}

fn address_from(row: &Row) -> Result<Address> {
    Address::parse(row.try_get("email").map_err(pg)?)
        .map_err(|_| internal("a stored e-mail address does not parse"))
}

fn user_from(row: &Row) -> Result<User> {
    Ok(User {
        id: UserId::from_uuid(row.try_get("id").map_err(pg)?),
        email: address_from(row)?,
        created_at: row.try_get("created_at").map_err(pg)?,
    })
}

fn staff_from(row: &Row) -> Result<StaffMember> {
    Ok(StaffMember {
        id: StaffId::from_uuid(row.try_get("id").map_err(pg)?),
        email: address_from(row)?,
        created_at: row.try_get("created_at").map_err(pg)?,
    })
}

impl PostgresStore {
    /// One row of an identity table (no scope, no row-level security) by one key.
    async fn identity_row(
        &self,
        sql: &str,
        key: &(dyn tokio_postgres::types::ToSql + Sync),
    ) -> Result<Option<Row>> {
        let client = self.client().await?;
        let select = client.prepare_cached(sql).await.map_err(pg)?;
        client.query_opt(&select, &[key]).await.map_err(pg)
    }
}

#[async_trait]
impl UserStore for PostgresStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO leadmaps.users (id, email, created_at) VALUES ($1, $2, $3)",
            )
            .await
            .map_err(pg)?;
        // A taken id or a taken address: one answer, naming neither.
        client
            .execute(
                &insert,
                &[user.id.as_uuid(), &user.email.as_str(), &user.created_at],
            )
            .await
            .map_err(|e| pg_conflict(e, "user exists"))?;
        Ok(())
    }

    async fn user_by_email(&self, email: &Address) -> Result<Option<User>> {
        let row = self
            .identity_row(
                "SELECT id, email, created_at FROM leadmaps.users WHERE email = $1",
                &email.as_str(),
            )
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let row = self
            .identity_row(
                "SELECT id, email, created_at FROM leadmaps.users WHERE id = $1",
                id.as_uuid(),
            )
            .await?;
        row.as_ref().map(user_from).transpose()
    }

    async fn set_membership(
        &self,
        scope: &Scope,
        user: UserId,
        role: Role,
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::MemberManage)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        // The role being replaced, locked, for the record's "before".
        let current = tx
            .prepare_cached(
                "SELECT role FROM leadmaps.memberships WHERE workspace_id = $1 AND user_id = $2
                 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let before = tx
            .query_opt(&current, &[&id(scope.workspace()), user.as_uuid()])
            .await
            .map_err(pg)?
            .map(|row| role_from(&row.try_get::<_, String>(0).map_err(pg)?))
            .transpose()?;
        // The user's existence is checked by the statement that writes the membership (and the
        // foreign key holds it): no row means no such user.
        let upsert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.memberships (workspace_id, user_id, role)
                 SELECT $1::uuid, u.id, $3::text FROM leadmaps.users AS u WHERE u.id = $2::uuid
                 ON CONFLICT (workspace_id, user_id) DO UPDATE SET role = EXCLUDED.role
                 RETURNING 1",
            )
            .await
            .map_err(pg)?;
        let written = tx
            .query_opt(
                &upsert,
                &[&id(scope.workspace()), user.as_uuid(), &role_str(role)],
            )
            .await
            .map_err(|e| {
                if e.code() == Some(&SqlState::FOREIGN_KEY_VIOLATION) {
                    Error::NotFound
                } else {
                    pg(e)
                }
            })?;
        if written.is_none() {
            return Err(Error::NotFound);
        }
        let draft = drafts::member_role_changed(scope, user, before, role);
        crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT member_workspace, member_role, member_require_totp
                 FROM leadmaps.memberships_of_user($1)",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&select, &[user.as_uuid()]).await.map_err(pg)?;
        rows.iter()
            .map(|row| {
                Ok(Membership {
                    workspace: WorkspaceId::from_uuid(row.try_get(0).map_err(pg)?),
                    role: role_from(row.try_get(1).map_err(pg)?)?,
                    require_totp: row.try_get(2).map_err(pg)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl StaffStore for PostgresStore {
    async fn create_staff(&self, staff: &StaffMember) -> Result<()> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO leadmaps.staff_members (id, email, created_at) VALUES ($1, $2, $3)",
            )
            .await
            .map_err(pg)?;
        // A taken id or a taken address: one answer, naming neither.
        client
            .execute(
                &insert,
                &[staff.id.as_uuid(), &staff.email.as_str(), &staff.created_at],
            )
            .await
            .map_err(|e| pg_conflict(e, "staff member exists"))?;
        Ok(())
    }

    async fn staff_by_email(&self, email: &Address) -> Result<Option<StaffMember>> {
        let row = self
            .identity_row(
                "SELECT id, email, created_at FROM leadmaps.staff_members WHERE email = $1",
                &email.as_str(),
            )
            .await?;
        row.as_ref().map(staff_from).transpose()
    }

    async fn staff(&self, id: StaffId) -> Result<Option<StaffMember>> {
        let row = self
            .identity_row(
                "SELECT id, email, created_at FROM leadmaps.staff_members WHERE id = $1",
                id.as_uuid(),
            )
            .await?;
        row.as_ref().map(staff_from).transpose()
    }

    async fn list_staff(&self) -> Result<Vec<StaffMember>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT id, email, created_at FROM leadmaps.staff_members ORDER BY created_at, id",
            )
            .await
            .map_err(pg)?;
        let rows = client.query(&select, &[]).await.map_err(pg)?;
        rows.iter().map(staff_from).collect()
    }
}

#[async_trait]
impl ApiKeyStore for PostgresStore {
    async fn insert_api_key(&self, scope: &Scope, key: &ApiKeyRecord) -> Result<()> {
        scope.require(Action::MemberManage)?;
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let actions: Vec<&str> = key.actions.iter().map(|a| a.as_str()).collect();
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.api_keys ({KEY_COLUMNS}, created_by)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
            ))
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                key.id.as_uuid(),
                &id(scope.workspace()),
                &key.name,
                &actions,
                &i64::from(key.digest.key_id),
                &&key.digest.mac[..],
                &key.sealed,
                &key.created_at,
                &key.last_used_at,
                &key.revoked_at,
                &leadmaps_core::scim::key_owner(scope, key).map(|user| *user.as_uuid()),
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "API key id exists"))?;
        let draft = drafts::api_key_created(scope, key);
        crate::audit::append_in(&tx, scope.workspace(), draft, key.created_at).await?;
        tx.commit().await.map_err(pg)
    }

    async fn api_keys(&self, scope: &Scope) -> Result<Vec<ApiKeyRecord>> {
        scope.require(Action::MemberManage)?;
        let rows = self
            .scoped_read(
                scope,
                &format!(
                    "SELECT {KEY_COLUMNS} FROM leadmaps.api_keys WHERE workspace_id = $1
                 ORDER BY created_at, id"
                ),
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter().map(key_from).collect()
    }

    async fn revoke_api_key(
        &self,
        scope: &Scope,
        key: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        scope.require(Action::MemberManage)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        // Another workspace's key is invisible here (the filter, and the policies): not revoked.
        let update = tx
            .prepare_cached(
                "UPDATE leadmaps.api_keys SET revoked_at = $3
                 WHERE workspace_id = $1 AND id = $2 AND revoked_at IS NULL",
            )
            .await
            .map_err(pg)?;
        let updated = tx
            .execute(&update, &[&id(scope.workspace()), key.as_uuid(), &at])
            .await
            .map_err(pg)?;
        if updated == 1 {
            let draft = drafts::api_key_revoked(scope, key);
            crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(updated == 1)
    }

    async fn api_key_for_auth(&self, key: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached(
                "SELECT key_id AS id, key_workspace AS workspace_id, key_name AS name,
                        key_actions AS actions, key_digest_key_id AS digest_key_id,
                        key_digest_mac AS digest_mac, key_sealed AS sealed,
                        key_created_at AS created_at, key_last_used_at AS last_used_at,
                        key_revoked_at AS revoked_at
                 FROM leadmaps.api_key_for_auth($1)",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&select, &[key.as_uuid()])
            .await
            .map_err(pg)?;
        row.as_ref().map(key_from).transpose()
    }

    async fn touch_api_key(&self, key: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let client = self.client().await?;
        let touch = client
            .prepare_cached("SELECT leadmaps.touch_api_key($1, $2)")
            .await
            .map_err(pg)?;
        client
            .execute(&touch, &[key.as_uuid(), &at])
            .await
            .map_err(pg)?;
        Ok(())
    }
}
