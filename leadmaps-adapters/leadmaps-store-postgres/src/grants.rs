//! [`GrantStore`] on `leadmaps.impersonation_grants`.

use async_trait::async_trait;
use leadmaps_core::audit::AuditRecord;
use leadmaps_core::auth::impersonation::{GrantStore, StoredGrant};
use leadmaps_core::tenancy::{GrantId, ImpersonationGrant, Scope, StaffId, WorkspaceId};
use leadmaps_core::{Error, Result};
use time::OffsetDateTime;

use crate::error::{pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

fn grant_from_row(row: &tokio_postgres::Row) -> Result<StoredGrant> {
    Ok(StoredGrant {
        grant: ImpersonationGrant {
            id: GrantId::from_uuid(row.try_get("grant_id").map_err(pg)?),
            workspace: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
            expires_at: row.try_get("expires_at").map_err(pg)?,
            write: row.try_get("can_write").map_err(pg)?,
        },
        staff: StaffId::from_uuid(row.try_get("staff_id").map_err(pg)?),
        reason: row.try_get("reason").map_err(pg)?,
        opened_at: row.try_get("opened_at").map_err(pg)?,
        closed_at: row.try_get("closed_at").map_err(pg)?,
    })
}

#[async_trait]
impl GrantStore for PostgresStore {
    async fn open_grant(
        &self,
        scope: &Scope,
        grant: &StoredGrant,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        grant.check_scope(scope)?;
        let mut client = self.client().await?;
        // The grant exists only together with its record in the customer's log.
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.impersonation_grants
                     (workspace_id, grant_id, staff_id, reason, can_write, opened_at, expires_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &id(scope.workspace()),
                grant.grant.id.as_uuid(),
                grant.staff.as_uuid(),
                &grant.reason,
                &grant.grant.write,
                &grant.opened_at,
                &grant.grant.expires_at,
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "grant exists"))?;
        let record =
            crate::audit::append_in(&tx, scope.workspace(), grant.started_draft(scope), at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn grant(&self, id: GrantId) -> Result<Option<StoredGrant>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT * FROM leadmaps.impersonation_grant($1)")
            .await
            .map_err(pg)?;
        client
            .query_opt(&select, &[id.as_uuid()])
            .await
            .map_err(pg)?
            .as_ref()
            .map(grant_from_row)
            .transpose()
    }

    async fn close_grant(&self, scope: &Scope, at: OffsetDateTime) -> Result<AuditRecord> {
        let grant_id = scope.grant().ok_or(Error::NotFound)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let close = tx
            .prepare_cached(
                "UPDATE leadmaps.impersonation_grants SET closed_at = $3
                 WHERE workspace_id = $1 AND grant_id = $2 AND closed_at IS NULL
                 RETURNING *",
            )
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(&close, &[&id(scope.workspace()), grant_id.as_uuid(), &at])
            .await
            .map_err(pg)?;
        let Some(row) = row else {
            // Unknown here (another workspace's, or none), or closed already.
            let exists = tx
                .prepare_cached(
                    "SELECT 1 FROM leadmaps.impersonation_grants
                     WHERE workspace_id = $1 AND grant_id = $2",
                )
                .await
                .map_err(pg)?;
            let found = tx
                .query_opt(&exists, &[&id(scope.workspace()), grant_id.as_uuid()])
                .await
                .map_err(pg)?;
            return Err(if found.is_some() {
                Error::Conflict("grant already closed")
            } else {
                Error::NotFound
            });
        };
        let grant = grant_from_row(&row)?;
        grant.check_scope(scope)?;
        let record =
            crate::audit::append_in(&tx, scope.workspace(), grant.ended_draft(scope, at), at)
                .await?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }
}
