//! [`KeyStore`] on the `tenant_keys` and `key_checks` tables.

use async_trait::async_trait;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{KeyStore, WrappedTenantKey};
use leadmaps_core::tenancy::{Action, Denied, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::codec::{get_id, get_time, id_bytes, unix_nanos};
use crate::error::{Corrupt, classify, db};
use crate::sql;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn tenant_keys(&self, scope: &Scope) -> Result<Vec<WrappedTenantKey>> {
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_TENANT_KEYS).map_err(db)?;
                let keys = select
                    .query_map([id], |row| {
                        Ok(WrappedTenantKey {
                            workspace: get_id(row, 0)?,
                            version: row.get(1)?,
                            kek_id: row.get(2)?,
                            blob: row.get(3)?,
                            created_at: get_time(row, 4)?,
                        })
                    })
                    .map_err(db)?;
                keys.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }

    async fn insert_tenant_key(&self, scope: &Scope, key: &WrappedTenantKey) -> Result<()> {
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let nanos = unix_nanos(key.created_at)?;
        let id = id_bytes(scope.workspace());
        let (version, kek_id, blob) = (key.version, key.kek_id, key.blob.clone());
        let draft = drafts::tenant_key_created(scope, version, kek_id);
        self.logged(scope.workspace(), key.created_at, move |tx| {
            let mut insert = tx.prepare_cached(sql::INSERT_TENANT_KEY).map_err(db)?;
            insert
                .execute(params![id, version, kek_id, blob, nanos])
                .map_err(|e| classify(e, "tenant key version exists"))?;
            Ok(((), Some(draft)))
        })
        .await
    }

    async fn rewrap_tenant_key(
        &self,
        scope: &Scope,
        version: u32,
        from_kek: u32,
        to_kek: u32,
        blob: &[u8],
        at: OffsetDateTime,
    ) -> Result<bool> {
        scope.require(Action::KeyManage)?;
        let (id, blob) = (id_bytes(scope.workspace()), blob.to_vec());
        let draft = drafts::tenant_key_rewrapped(scope, version, from_kek, to_kek);
        self.logged(scope.workspace(), at, move |tx| {
            // One conditional UPDATE is the compare-and-swap: the transaction holds the write
            // lock, so no other writer can slip between the check and the write.
            let mut rewrap = tx.prepare_cached(sql::REWRAP_TENANT_KEY).map_err(db)?;
            let swapped = rewrap
                .execute(params![id, version, from_kek, to_kek, blob])
                .map_err(db)?
                == 1;
            Ok((swapped, swapped.then_some(draft)))
        })
        .await
    }

    async fn delete_tenant_keys(&self, scope: &Scope, at: OffsetDateTime) -> Result<u64> {
        scope.require(Action::KeyManage)?;
        let (id, scope) = (id_bytes(scope.workspace()), scope.clone());
        let deleted = self
            .logged(scope.workspace(), at, move |tx| {
                let mut delete = tx.prepare_cached(sql::DELETE_TENANT_KEYS).map_err(db)?;
                let deleted = delete.execute([id]).map_err(db)? as u64;
                Ok((
                    deleted,
                    Some(drafts::tenant_keys_destroyed(&scope, deleted)),
                ))
            })
            .await?;
        if deleted > 0 {
            // secure_delete zeroed the pages, but in WAL mode the earlier page images (holding
            // the sealed keys) stay in the -wal file until a checkpoint. Copy the zeroed pages
            // home and truncate the WAL now, so shredding reaches the disk. Best effort: the
            // delete has committed either way, and a reader in another process can only
            // postpone it to the next checkpoint.
            let checkpoints = self.conn.checkpoints();
            self.conn
                .run(move |conn| {
                    checkpoints.truncate(conn);
                    Ok(())
                })
                .await?;
        }
        Ok(deleted)
    }

    async fn workspaces_needing_rewrap(
        &self,
        primary: u32,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let after = after.map(id_bytes);
        self.conn
            .run(move |conn| {
                let read = |row: &rusqlite::Row<'_>| get_id(row, 0);
                let ids = match after {
                    None => {
                        let mut select =
                            conn.prepare_cached(sql::NEEDING_REWRAP_FIRST).map_err(db)?;
                        select
                            .query_map(params![primary, limit], read)
                            .map_err(db)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }
                    Some(after) => {
                        let mut select =
                            conn.prepare_cached(sql::NEEDING_REWRAP_AFTER).map_err(db)?;
                        select
                            .query_map(params![primary, after, limit], read)
                            .map_err(db)?
                            .collect::<rusqlite::Result<Vec<_>>>()
                    }
                };
                ids.map_err(db)
            })
            .await
    }

    async fn count_needing_rewrap(&self, primary: u32) -> Result<u64> {
        self.conn
            .run(move |conn| {
                let mut count = conn.prepare_cached(sql::COUNT_NEEDING_REWRAP).map_err(db)?;
                let n: i64 = count.query_row([primary], |row| row.get(0)).map_err(db)?;
                u64::try_from(n).map_err(|_| Error::backend(Corrupt("count")))
            })
            .await
    }

    async fn kek_ids_in_use(&self) -> Result<Vec<u32>> {
        self.conn
            .run(|conn| {
                let mut select = conn.prepare_cached(sql::KEK_IDS_IN_USE).map_err(db)?;
                let ids = select.query_map([], |row| row.get(0)).map_err(db)?;
                ids.collect::<rusqlite::Result<Vec<u32>>>().map_err(db)
            })
            .await
    }

    async fn key_check(&self, kek_id: u32) -> Result<Option<Vec<u8>>> {
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_KEY_CHECK).map_err(db)?;
                select
                    .query_row([kek_id], |row| row.get(0))
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn put_key_check(&self, kek_id: u32, blob: &[u8]) -> Result<bool> {
        let blob = blob.to_vec();
        self.conn
            .run(move |conn| {
                let mut insert = conn.prepare_cached(sql::INSERT_KEY_CHECK).map_err(db)?;
                Ok(insert.execute(params![kek_id, blob]).map_err(db)? == 1)
            })
            .await
    }
}
