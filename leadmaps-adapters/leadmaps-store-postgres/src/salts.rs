//! Daily visitor-hash salts, sealed by the caller; destroying one deletes its row and appends a
//! destruction record in the same transaction.

use std::collections::HashMap;

use async_trait::async_trait;
use leadmaps_core::Result;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{SaltDestruction, SaltStore, StoredSalt};
use leadmaps_core::tenancy::{Action, Scope, WorkspaceId};
use time::{Date, OffsetDateTime};

use crate::error::{pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped};

#[async_trait]
impl SaltStore for PostgresStore {
    async fn salts(&self, scope: &Scope, days: &[Date]) -> Result<Vec<StoredSalt>> {
        let rows = self
            .scoped_read(
                scope,
                "SELECT day, blob FROM leadmaps.salts WHERE workspace_id = $1 AND day = ANY($2)",
                &[&id(scope.workspace()), &days],
            )
            .await?;
        let mut found = HashMap::with_capacity(rows.len());
        for row in rows {
            found.insert(
                row.try_get::<_, Date>(0).map_err(pg)?,
                row.try_get::<_, Vec<u8>>(1).map_err(pg)?,
            );
        }
        // In the order asked for, as the other stores answer.
        Ok(days
            .iter()
            .filter_map(|day| {
                found.get(day).map(|blob| StoredSalt {
                    day: *day,
                    blob: blob.clone(),
                })
            })
            .collect())
    }

    async fn insert_salt(&self, scope: &Scope, salt: &StoredSalt) -> Result<()> {
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.salts (workspace_id, day, blob) VALUES ($1, $2, $3)",
            )
            .await
            .map_err(pg)?;
        tx.execute(&insert, &[&id(scope.workspace()), &salt.day, &salt.blob])
            .await
            .map_err(|e| pg_conflict(e, "salt for this day exists"))?;
        tx.commit().await.map_err(pg)
    }

    async fn workspaces_with_salts_before(
        &self,
        before: Date,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT w FROM leadmaps.workspaces_with_salts_before($1, $2, $3) AS w")
            .await
            .map_err(pg)?;
        let rows = client
            .query(&select, &[&before, &after.map(id), &i64::from(limit)])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| row.try_get(0).map(WorkspaceId::from_uuid).map_err(pg))
            .collect()
    }

    async fn destroy_salts_before(
        &self,
        scope: &Scope,
        before: Date,
        destroyed_at: OffsetDateTime,
    ) -> Result<Vec<Date>> {
        scope.require(Action::KeyManage)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let destroy = tx
            .prepare_cached(
                "WITH gone AS (
                     DELETE FROM leadmaps.salts WHERE workspace_id = $1 AND day < $2 RETURNING workspace_id, day
                 )
                 INSERT INTO leadmaps.salt_destructions (workspace_id, day, destroyed_at)
                 SELECT workspace_id, day, $3 FROM gone
                 RETURNING day",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(&destroy, &[&id(scope.workspace()), &before, &destroyed_at])
            .await
            .map_err(pg)?;
        let mut days = rows
            .iter()
            .map(|row| row.try_get(0).map_err(pg))
            .collect::<Result<Vec<Date>>>()?;
        days.sort();
        if !days.is_empty() {
            let draft = drafts::salts_destroyed(scope, &days);
            crate::audit::append_in(&tx, scope.workspace(), draft, destroyed_at).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(days)
    }

    async fn salt_destructions(&self, scope: &Scope) -> Result<Vec<SaltDestruction>> {
        scope.require(Action::AuditRead)?;
        let rows = self
            .scoped_read(
                scope,
                "SELECT day, destroyed_at FROM leadmaps.salt_destructions WHERE workspace_id = $1
                 ORDER BY destroyed_at, day",
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SaltDestruction {
                    day: row.try_get(0).map_err(pg)?,
                    destroyed_at: row.try_get(1).map_err(pg)?,
                })
            })
            .collect()
    }
}
