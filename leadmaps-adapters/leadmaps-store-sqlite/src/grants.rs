//! [`GrantStore`] on the `impersonation_grants` table.

use async_trait::async_trait;
use leadmaps_core::audit::AuditRecord;
use leadmaps_core::auth::impersonation::{GrantStore, StoredGrant};
use leadmaps_core::tenancy::{GrantId, ImpersonationGrant, Scope, StaffId};
use leadmaps_core::{Error, Result};
use rusqlite::{OptionalExtension, Row, TransactionBehavior, params};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::SqliteStore;
use crate::codec::{get_flag, get_id, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

fn read_grant(row: &Row<'_>) -> rusqlite::Result<StoredGrant> {
    Ok(StoredGrant {
        grant: ImpersonationGrant {
            id: GrantId::from_uuid(Uuid::from_bytes(row.get(1)?)),
            workspace: get_id(row, 0)?,
            expires_at: get_time(row, 6)?,
            write: get_flag(row, 4)?,
        },
        staff: StaffId::from_uuid(Uuid::from_bytes(row.get(2)?)),
        reason: row.get(3)?,
        opened_at: get_time(row, 5)?,
        closed_at: row
            .get::<_, Option<i64>>(7)?
            .map(|_| get_time(row, 7))
            .transpose()?,
    })
}

#[async_trait]
impl GrantStore for SqliteStore {
    async fn open_grant(
        &self,
        scope: &Scope,
        grant: &StoredGrant,
        at: OffsetDateTime,
    ) -> Result<AuditRecord> {
        grant.check_scope(scope)?;
        let draft = grant.started_draft(scope);
        let (scope, grant) = (scope.clone(), grant.clone());
        let (opened, expires) = (
            unix_nanos(grant.opened_at)?,
            unix_nanos(grant.grant.expires_at)?,
        );
        self.conn
            .run(move |conn| {
                // The grant exists only together with its record in the customer's log.
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                tx.prepare_cached(sql::INSERT_GRANT)
                    .map_err(db)?
                    .execute(params![
                        id_bytes(scope.workspace()),
                        grant.grant.id.as_uuid().as_bytes(),
                        grant.staff.as_uuid().as_bytes(),
                        grant.reason,
                        i64::from(grant.grant.write),
                        opened,
                        expires,
                    ])
                    .map_err(|e| classify(e, "grant exists"))?;
                let record = crate::audit::append_in(&tx, scope.workspace(), draft, at)?;
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await
    }

    async fn grant(&self, id: GrantId) -> Result<Option<StoredGrant>> {
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_GRANT).map_err(db)?;
                select
                    .query_row([id.as_uuid().as_bytes()], read_grant)
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn close_grant(&self, scope: &Scope, at: OffsetDateTime) -> Result<AuditRecord> {
        let id = scope.grant().ok_or(Error::NotFound)?;
        let grant = self.grant(id).await?.ok_or(Error::NotFound)?;
        grant.check_scope(scope)?;
        let draft = grant.ended_draft(scope, at);
        let (scope, closed) = (scope.clone(), unix_nanos(at)?);
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let changed = tx
                    .prepare_cached(sql::CLOSE_GRANT)
                    .map_err(db)?
                    .execute(params![
                        id_bytes(scope.workspace()),
                        id.as_uuid().as_bytes(),
                        closed
                    ])
                    .map_err(db)?;
                if changed == 0 {
                    return Err(Error::Conflict("grant already closed"));
                }
                let record = crate::audit::append_in(&tx, scope.workspace(), draft, at)?;
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await
    }
}
