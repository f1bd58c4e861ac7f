//! [`SecretStore`] on the `secrets` table.

use async_trait::async_trait;
use leadmaps_core::audit::drafts;
use leadmaps_core::store::{
    MAX_SECRET_BLOB, SecretStore, StoredSecret, require_secret_read, validate_secret_name,
};
use leadmaps_core::tenancy::{Action, Scope};
use leadmaps_core::{Error, Result};
use rusqlite::{OptionalExtension, params};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::codec::{get_purpose, id_bytes};
use crate::error::db;
use crate::sql;

#[async_trait]
impl SecretStore for SqliteStore {
    async fn put_secret(
        &self,
        scope: &Scope,
        secret: &StoredSecret,
        at: OffsetDateTime,
    ) -> Result<()> {
        scope.require(Action::SecretWrite)?;
        validate_secret_name(&secret.name)?;
        if secret.blob.len() > MAX_SECRET_BLOB {
            return Err(Error::invalid("sealed secret too large"));
        }
        let id = id_bytes(scope.workspace());
        let draft = drafts::secret_written(scope, &secret.name);
        let secret = secret.clone();
        self.logged(scope.workspace(), at, move |tx| {
            let mut upsert = tx.prepare_cached(sql::UPSERT_SECRET).map_err(db)?;
            upsert
                .execute(params![
                    id,
                    secret.name,
                    secret.purpose.as_str(),
                    secret.blob
                ])
                .map_err(db)?;
            Ok(((), Some(draft)))
        })
        .await
    }

    async fn secret(&self, scope: &Scope, name: &str) -> Result<Option<StoredSecret>> {
        require_secret_read(scope)?;
        let (id, name) = (id_bytes(scope.workspace()), name.to_owned());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SELECT_SECRET).map_err(db)?;
                select
                    .query_row(params![id, name], |row| {
                        Ok(StoredSecret {
                            name: row.get(0)?,
                            purpose: get_purpose(row, 1)?,
                            blob: row.get(2)?,
                        })
                    })
                    .optional()
                    .map_err(db)
            })
            .await
    }

    async fn delete_secret(&self, scope: &Scope, name: &str, at: OffsetDateTime) -> Result<bool> {
        scope.require(Action::SecretWrite)?;
        let (id, draft) = (
            id_bytes(scope.workspace()),
            drafts::secret_deleted(scope, name),
        );
        let name = name.to_owned();
        self.logged(scope.workspace(), at, move |tx| {
            let mut delete = tx.prepare_cached(sql::DELETE_SECRET).map_err(db)?;
            let deleted = delete.execute(params![id, name]).map_err(db)? > 0;
            Ok((deleted, deleted.then_some(draft)))
        })
        .await
    }

    async fn secret_names(&self, scope: &Scope) -> Result<Vec<String>> {
        require_secret_read(scope)?;
        let id = id_bytes(scope.workspace());
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(sql::SECRET_NAMES).map_err(db)?;
                let names = select.query_map([id], |row| row.get(0)).map_err(db)?;
                names.collect::<rusqlite::Result<Vec<String>>>().map_err(db)
            })
            .await
    }
}
