//! [`UserStore`], [`StaffStore`] and [`ApiKeyStore`] on the `users`, `memberships`, `staff` and
//! `api_keys` tables.
//!
//! Users and staff are instance-wide, separate identities (one address may be both). Memberships
//! and API keys belong to a workspace: setting a membership and listing, adding or revoking keys
//! need the member-management action and filter on the scope's workspace, like every scoped
//! statement. Authentication finds a key by its id, and a user's memberships by the user, before
//! any scope exists; each membership carries its workspace's TOTP policy, the one column of
//! `workspaces` read without a scope.

use async_trait::async_trait;
use leadmaps_core::Result;
use leadmaps_core::audit::drafts;
use leadmaps_core::auth::keys::{ApiKeyRecord, ApiKeyStore};
use leadmaps_core::auth::staff::{StaffMember, StaffStore};
use leadmaps_core::auth::users::{User, UserStore};
use leadmaps_core::mail::Address;
use leadmaps_core::tenancy::{Action, ApiKeyId, Denied, Membership, Role, Scope, StaffId, UserId};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, params};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::auth::{get_address, get_digest, get_opt_time, opt_nanos};
use crate::codec::{corrupt, get_flag, get_id, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

const fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Editor => "editor",
        Role::Admin => "admin",
    }
}

fn get_role(row: &Row<'_>, column: usize) -> rusqlite::Result<Role> {
    let name: String = row.get(column)?;
    [Role::Viewer, Role::Editor, Role::Admin]
        .into_iter()
        .find(|role| role_name(*role) == name)
        .ok_or_else(|| corrupt(column, Type::Text, "role"))
}

/// Actions as their stable names, separated by single spaces, in order.
fn actions_text(actions: &[Action]) -> String {
    actions
        .iter()
        .map(|action| action.as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

fn get_actions(row: &Row<'_>, column: usize) -> rusqlite::Result<Vec<Action>> {
    let text: String = row.get(column)?;
    if text.is_empty() {
        return Ok(Vec::new());
    }
    text.split(' ')
        .map(|name| Action::parse(name).ok_or_else(|| corrupt(column, Type::Text, "action")))
        .collect()
}

fn uuid_bytes(uuid: &Uuid) -> [u8; 16] {
    *uuid.as_bytes()
}

fn read_user(row: &Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: UserId::from_uuid(Uuid::from_bytes(row.get(0)?)),
        email: get_address(row, 1)?,
        created_at: get_time(row, 2)?,
    })
}

fn read_membership(row: &Row<'_>) -> rusqlite::Result<Membership> {
    Ok(Membership {
        workspace: get_id(row, 0)?,
        role: get_role(row, 1)?,
        require_totp: get_flag(row, 2)?,
    })
}

fn read_staff(row: &Row<'_>) -> rusqlite::Result<StaffMember> {
    Ok(StaffMember {
        id: StaffId::from_uuid(Uuid::from_bytes(row.get(0)?)),
        email: get_address(row, 1)?,
        created_at: get_time(row, 2)?,
    })
}

fn read_key(row: &Row<'_>) -> rusqlite::Result<ApiKeyRecord> {
    Ok(ApiKeyRecord {
        id: ApiKeyId::from_uuid(Uuid::from_bytes(row.get(0)?)),
        workspace: get_id(row, 1)?,
        name: row.get(2)?,
        actions: get_actions(row, 3)?,
        digest: get_digest(row, 4, 5)?,
        sealed: row.get(6)?,
        created_at: get_time(row, 7)?,
        last_used_at: get_opt_time(row, 8)?,
        revoked_at: get_opt_time(row, 9)?,
    })
}

#[async_trait]
impl UserStore for SqliteStore {
    async fn create_user(&self, user: &User) -> Result<()> {
        let id = uuid_bytes(user.id.as_uuid());
        let (email, created_at) = (user.email.as_str().to_owned(), unix_nanos(user.created_at)?);
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_USER).map_err(db)?;
                insert
                    .execute(params![id, email, created_at])
                    .map_err(|e| classify(e, "user exists"))?;
                Ok(())
            })
            .await
    }

    async fn user(&self, id: UserId) -> Result<Option<User>> {
        let id = uuid_bytes(id.as_uuid());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_USER).map_err(db)?;
                select.query_row([id], read_user).optional().map_err(db)
            })
            .await
    }

    async fn user_by_email(&self, email: &Address) -> Result<Option<User>> {
        let email = email.as_str().to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_USER_BY_EMAIL).map_err(db)?;
                select.query_row([email], read_user).optional().map_err(db)
            })
            .await
    }

    async fn set_membership(
        &self,
        scope: &Scope,
        user: UserId,
        role: Role,
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::MemberManage)?;
        let (workspace, user_id) = (id_bytes(scope.workspace()), uuid_bytes(user.as_uuid()));
        let scope = scope.clone();
        self.logged(scope.workspace(), at, move |tx| {
            let before = tx
                .prepare_cached(sql::SELECT_MEMBER_ROLE)
                .map_err(db)?
                .query_row(params![workspace, user_id], |row| get_role(row, 0))
                .optional()
                .map_err(db)?;
            let mut upsert = tx.prepare_cached(sql::UPSERT_MEMBERSHIP).map_err(db)?;
            // A missing user fails the foreign key to `users`: NotFound.
            upsert
                .execute(params![workspace, user_id, role_name(role)])
                .map_err(db)?;
            let draft = drafts::member_role_changed(&scope, user, before, role);
            Ok(((), Some(draft)))
        })
        .await
    }

    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>> {
        let user = uuid_bytes(user.as_uuid());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_MEMBERSHIPS).map_err(db)?;
                select
                    .query_map([user], read_membership)
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)
            })
            .await
    }
}

#[async_trait]
impl StaffStore for SqliteStore {
    async fn create_staff(&self, staff: &StaffMember) -> Result<()> {
        let id = uuid_bytes(staff.id.as_uuid());
        let (email, created_at) = (
            staff.email.as_str().to_owned(),
            unix_nanos(staff.created_at)?,
        );
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_STAFF).map_err(db)?;
                insert
                    .execute(params![id, email, created_at])
                    .map_err(|e| classify(e, "staff member exists"))?;
                Ok(())
            })
            .await
    }

    async fn staff(&self, id: StaffId) -> Result<Option<StaffMember>> {
        let id = uuid_bytes(id.as_uuid());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_STAFF).map_err(db)?;
                select.query_row([id], read_staff).optional().map_err(db)
            })
            .await
    }

    async fn list_staff(&self) -> Result<Vec<StaffMember>> {
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::LIST_STAFF).map_err(db)?;
                let rows = select.query_map([], read_staff).map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn staff_by_email(&self, email: &Address) -> Result<Option<StaffMember>> {
        let email = email.as_str().to_owned();
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_STAFF_BY_EMAIL)
                    .map_err(db)?;
                select.query_row([email], read_staff).optional().map_err(db)
            })
            .await
    }
}

#[async_trait]
impl ApiKeyStore for SqliteStore {
    async fn insert_api_key(&self, scope: &Scope, key: &ApiKeyRecord) -> Result<()> {
        scope.require(Action::MemberManage)?;
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let workspace = id_bytes(scope.workspace());
        let id = uuid_bytes(key.id.as_uuid());
        let actions = actions_text(&key.actions);
        let created_at = unix_nanos(key.created_at)?;
        let last_used_at = opt_nanos(key.last_used_at)?;
        let revoked_at = opt_nanos(key.revoked_at)?;
        let draft = drafts::api_key_created(scope, key);
        let created_by =
            leadmaps_core::scim::key_owner(scope, key).map(|user| uuid_bytes(user.as_uuid()));
        let key = key.clone();
        self.logged(scope.workspace(), key.created_at, move |tx| {
            let mut insert = tx.prepare_cached(sql::INSERT_API_KEY).map_err(db)?;
            insert
                .execute(params![
                    workspace,
                    id,
                    key.name,
                    actions,
                    key.digest.key_id,
                    key.digest.mac,
                    key.sealed,
                    created_at,
                    last_used_at,
                    revoked_at,
                    created_by
                ])
                .map_err(|e| classify(e, "API key id exists"))?;
            Ok(((), Some(draft)))
        })
        .await
    }

    async fn api_keys(&self, scope: &Scope) -> Result<Vec<ApiKeyRecord>> {
        scope.require(Action::MemberManage)?;
        let workspace = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_API_KEYS).map_err(db)?;
                select
                    .query_map([workspace], read_key)
                    .map_err(db)?
                    .collect::<rusqlite::Result<Vec<_>>>()
                    .map_err(db)
            })
            .await
    }

    async fn revoke_api_key(
        &self,
        scope: &Scope,
        id: ApiKeyId,
        at: OffsetDateTime,
    ) -> Result<bool> {
        scope.require(Action::MemberManage)?;
        let draft = drafts::api_key_revoked(scope, id);
        let (workspace, id) = (id_bytes(scope.workspace()), uuid_bytes(id.as_uuid()));
        let nanos = unix_nanos(at)?;
        self.logged(scope.workspace(), at, move |tx| {
            let mut revoke = tx.prepare_cached(sql::REVOKE_API_KEY).map_err(db)?;
            let revoked = revoke.execute(params![workspace, id, nanos]).map_err(db)? == 1;
            Ok((revoked, revoked.then_some(draft)))
        })
        .await
    }

    async fn api_key_for_auth(&self, id: ApiKeyId) -> Result<Option<ApiKeyRecord>> {
        let id = uuid_bytes(id.as_uuid());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_API_KEY).map_err(db)?;
                select.query_row([id], read_key).optional().map_err(db)
            })
            .await
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: OffsetDateTime) -> Result<()> {
        let (id, at) = (uuid_bytes(id.as_uuid()), unix_nanos(at)?);
        self.conn
            .run(move |conn| {
                let mut touch = conn.prepare_cached(sql::TOUCH_API_KEY).map_err(db)?;
                touch.execute(params![id, at]).map_err(db)?;
                Ok(())
            })
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_and_actions_round_trip_and_unknown_names_are_corrupt() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        for role in [Role::Viewer, Role::Editor, Role::Admin] {
            let back = conn
                .query_row("SELECT ?1", [role_name(role)], |row| get_role(row, 0))
                .unwrap();
            assert_eq!(back, role);
        }
        for actions in [Vec::new(), vec![Action::EventRead], Action::ALL.to_vec()] {
            let back = conn
                .query_row("SELECT ?1", [actions_text(&actions)], |row| {
                    get_actions(row, 0)
                })
                .unwrap();
            assert_eq!(back, actions);
        }
        for bad in ["Admin", "owner"] {
            assert!(
                conn.query_row("SELECT ?1", [bad], |row| get_role(row, 0))
                    .is_err()
            );
        }
        for bad in ["event.read  workspace.read", "event.read ", "root"] {
            assert!(
                conn.query_row("SELECT ?1", [bad], |row| get_actions(row, 0))
                    .is_err(),
                "{bad:?}"
            );
        }
    }
}
