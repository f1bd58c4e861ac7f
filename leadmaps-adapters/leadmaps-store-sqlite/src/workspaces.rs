//! [`WorkspaceStore`] on the `workspaces` table.

use async_trait::async_trait;
use leadmaps_core::audit::{AuditRecord, drafts};
use leadmaps_core::policy::{IpAllowlist, validate_retention_days};
use leadmaps_core::store::{
    PolicyChange, Workspace, WorkspacePolicy, WorkspaceStore, validate_workspace_name,
};
use leadmaps_core::tenancy::{Action, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::codec::{corrupt, get_flag, get_id, get_region, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

fn read_workspace(row: &Row<'_>) -> rusqlite::Result<Workspace> {
    Ok(Workspace {
        id: get_id(row, 0)?,
        name: row.get(1)?,
        region: get_region(row, 2)?,
        created_at: get_time(row, 3)?,
        policy: WorkspacePolicy {
            require_totp: get_flag(row, 4)?,
            ip_allowlist: get_allowlist(row, 5)?,
            retention_days: row
                .get::<_, Option<i64>>(6)?
                .map(|days| {
                    u32::try_from(days)
                        .ok()
                        .filter(|days| validate_retention_days(*days).is_ok())
                        .ok_or_else(|| corrupt(6, Type::Integer, "retention days"))
                })
                .transpose()?,
        },
    })
}

fn get_allowlist(row: &Row<'_>, column: usize) -> rusqlite::Result<IpAllowlist> {
    let text: String = row.get(column)?;
    IpAllowlist::parse(text.split(' ').filter(|range| !range.is_empty()))
        .map_err(|_| corrupt(column, Type::Text, "IP allowlist"))
}

#[async_trait]
impl WorkspaceStore for SqliteStore {
    async fn create_workspace(
        &self,
        scope: &Scope,
        name: &str,
        region: Region,
        created_at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceCreate)?;
        validate_workspace_name(name)?;
        let workspace = Workspace {
            id: scope.workspace(),
            name: name.to_owned(),
            region,
            created_at,
            // The column's default.
            policy: WorkspacePolicy::default(),
        };
        let nanos = unix_nanos(created_at)?;
        let (id, name) = (id_bytes(workspace.id), workspace.name.clone());
        let draft = drafts::workspace_created(scope, &name, region);
        self.logged(workspace.id, created_at, move |tx| {
            let mut insert = tx.prepare_cached(sql::INSERT_WORKSPACE).map_err(db)?;
            insert
                .execute(params![id, name, region.as_str(), nanos])
                .map_err(|e| classify(e, "workspace exists"))?;
            Ok(((), Some(draft)))
        })
        .await?;
        Ok(workspace)
    }

    async fn workspace(&self, scope: &Scope) -> Result<Workspace> {
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_WORKSPACE).map_err(db)?;
                select
                    .query_row([id], read_workspace)
                    .optional()
                    .map_err(db)?
                    .ok_or(Error::NotFound)
            })
            .await
    }

    async fn rename_workspace(
        &self,
        scope: &Scope,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceUpdate)?;
        validate_workspace_name(name)?;
        let (id, name, scope) = (id_bytes(scope.workspace()), name.to_owned(), scope.clone());
        self.logged(scope.workspace(), at, move |tx| {
            let before = tx
                .prepare_cached(sql::SELECT_WORKSPACE)
                .map_err(db)?
                .query_row([&id], read_workspace)
                .optional()
                .map_err(db)?
                .ok_or(Error::NotFound)?;
            let workspace = tx
                .prepare_cached(sql::RENAME_WORKSPACE)
                .map_err(db)?
                .query_row(params![id, name], read_workspace)
                .map_err(db)?;
            let draft = drafts::workspace_renamed(&scope, &before.name, &name);
            Ok((workspace, Some(draft)))
        })
        .await
    }

    async fn set_workspace_policy(
        &self,
        scope: &Scope,
        change: &PolicyChange,
        at: OffsetDateTime,
    ) -> Result<(Workspace, AuditRecord)> {
        scope.require(Action::WorkspaceUpdate)?;
        change.validate()?;
        let (scope, change) = (scope.clone(), change.clone());
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                // Read, change and record in one IMMEDIATE transaction: concurrent changes of
                // other parts are not undone, and the change commits with its record or not at
                // all.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let before = {
                    let mut select = tx.prepare_cached(sql::SELECT_WORKSPACE).map_err(db)?;
                    select
                        .query_row([&id], read_workspace)
                        .optional()
                        .map_err(db)?
                        .ok_or(Error::NotFound)?
                        .policy
                };
                let after = change.apply(&before);
                let draft = change.audit_draft(&scope, &before, &after);
                draft.check_scope(&scope)?;
                let workspace = {
                    let mut update = tx.prepare_cached(sql::SET_WORKSPACE_POLICY).map_err(db)?;
                    update
                        .query_row(
                            params![
                                id,
                                i64::from(after.require_totp),
                                after.ip_allowlist.to_strings().join(" "),
                                after.retention_days.map(i64::from),
                            ],
                            read_workspace,
                        )
                        .optional()
                        .map_err(db)?
                        .ok_or(Error::NotFound)?
                };
                let record = crate::audit::append_in(&tx, scope.workspace(), draft, at)?;
                tx.commit().map_err(db)?;
                Ok((workspace, record))
            })
            .await
    }

    async fn workspace_ids(
        &self,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let after = after.map(id_bytes);
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::WORKSPACE_IDS).map_err(db)?;
                let rows = select
                    .query_map(params![after, limit], |row| get_id(row, 0))
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }
}
