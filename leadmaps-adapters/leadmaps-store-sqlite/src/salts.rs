//! [`SaltStore`] on the `visitor_salts` and `salt_destructions` tables.

use async_trait::async_trait;
use leadmaps_core::Result;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{SaltDestruction, SaltStore, StoredSalt};
use leadmaps_core::tenancy::{Action, Scope, WorkspaceId};
use rusqlite::{OptionalExtension, TransactionBehavior, params};
use time::{Date, OffsetDateTime};

use crate::SqliteStore;
use crate::codec::{day_number, get_day, get_id, get_time, id_bytes, unix_nanos};
use crate::error::{classify, db};
use crate::sql;

#[async_trait]
impl SaltStore for SqliteStore {
    async fn salts(&self, scope: &Scope, days: &[Date]) -> Result<Vec<StoredSalt>> {
        let id = id_bytes(scope.workspace());
        let days = days.to_vec();
        self.conn
            .run(move |conn| {
                // In the order asked for, missing days left out: one key lookup per day.
                let mut select = conn.prepare_cached(sql::SELECT_SALT).map_err(db)?;
                let mut found = Vec::with_capacity(days.len());
                for day in days {
                    let blob: Option<Vec<u8>> = select
                        .query_row(params![id, day_number(day)], |row| row.get(0))
                        .optional()
                        .map_err(db)?;
                    if let Some(blob) = blob {
                        found.push(StoredSalt { day, blob });
                    }
                }
                Ok(found)
            })
            .await
    }

    async fn insert_salt(&self, scope: &Scope, salt: &StoredSalt) -> Result<()> {
        let (id, day, blob) = (
            id_bytes(scope.workspace()),
            day_number(salt.day),
            salt.blob.clone(),
        );
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_SALT).map_err(db)?;
                insert
                    .execute(params![id, day, blob])
                    .map_err(|e| classify(e, "salt for this day exists"))?;
                Ok(())
            })
            .await
    }

    async fn workspaces_with_salts_before(
        &self,
        before: Date,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let (before, after) = (day_number(before), after.map(id_bytes));
        self.conn
            .run(move |conn| {
                let read = |row: &rusqlite::Row<'_>| get_id(row, 0);
                let ids = match after {
                    None => {
                        let mut select =
                            conn.prepare_cached(sql::SALTS_BEFORE_FIRST).map_err(db)?;
                        select
                            .query_map(params![before, limit], read)
                            .map_err(db)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }
                    Some(after) => {
                        let mut select =
                            conn.prepare_cached(sql::SALTS_BEFORE_AFTER).map_err(db)?;
                        select
                            .query_map(params![before, after, limit], read)
                            .map_err(db)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }
                };
                ids.map_err(db)
            })
            .await
    }

    async fn destroy_salts_before(
        &self,
        scope: &Scope,
        before: Date,
        destroyed_at: OffsetDateTime,
    ) -> Result<Vec<Date>> {
        scope.require(Action::KeyManage)?;
        let (id, before, at) = (
            id_bytes(scope.workspace()),
            day_number(before),
            unix_nanos(destroyed_at)?,
        );
        let checkpoints = self.conn.checkpoints();
        let scope = scope.clone();
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let mut days = {
                    let mut delete = tx.prepare_cached(sql::DELETE_SALTS_BEFORE).map_err(db)?;
                    let days = delete
                        .query_map(params![id, before], |row| get_day(row, 0))
                        .map_err(db)?;
                    days.collect::<rusqlite::Result<Vec<Date>>>().map_err(db)?
                };
                days.sort_unstable();
                {
                    let mut record = tx
                        .prepare_cached(sql::INSERT_SALT_DESTRUCTION)
                        .map_err(db)?;
                    for day in &days {
                        record
                            .execute(params![id, day_number(*day), at])
                            .map_err(db)?;
                    }
                }
                if !days.is_empty() {
                    crate::audit::append_in(
                        &tx,
                        scope.workspace(),
                        drafts::salts_destroyed(&scope, &days),
                        destroyed_at,
                    )?;
                }
                tx.commit().map_err(db)?;
                if !days.is_empty() {
                    // As for shredded tenant keys: secure_delete zeroed the rows, but the WAL
                    // still holds the pages that carried the sealed salts until a checkpoint.
                    // Copy the zeroed pages home and truncate the WAL now. Best effort: the
                    // destruction has committed either way, and a reader in another process can
                    // only postpone it to the next checkpoint.
                    checkpoints.truncate(conn);
                }
                Ok(days)
            })
            .await
    }

    async fn salt_destructions(&self, scope: &Scope) -> Result<Vec<SaltDestruction>> {
        scope.require(Action::AuditRead)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn
                    .prepare_cached(sql::SELECT_SALT_DESTRUCTIONS)
                    .map_err(db)?;
                let records = select
                    .query_map([id], |row| {
                        Ok(SaltDestruction {
                            day: get_day(row, 0)?,
                            destroyed_at: get_time(row, 1)?,
                        })
                    })
                    .map_err(db)?;
                records.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }
}
