//! The store: every scoped method runs in its own transaction that first sets
//! `leadmaps.workspace_id` (transaction-local, so safe under transaction pooling) and then also
//! filters by `workspace_id` itself. Row-level security makes the setting binding; the filter keeps
//! the query correct and index-driven on its own.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::AtomicU32;
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime, Transaction};
use leadmaps_core::audit::{AuditRecord, drafts};
use leadmaps_core::crypto::Purpose;
use leadmaps_core::policy::IpAllowlist;
use leadmaps_core::store::{
    Capabilities, KeyStore, MAX_SECRET_BLOB, PolicyChange, SecretStore, Store, StoredSecret,
    Workspace, WorkspacePolicy, WorkspaceStore, WrappedTenantKey, require_secret_read,
    validate_secret_name, validate_workspace_name,
};
use leadmaps_core::tenancy::{Action, Denied, Region, Scope, WorkspaceId};
use leadmaps_core::{Error, Result};
use time::{Date, OffsetDateTime};
use tokio_postgres::error::SqlState;
use uuid::Uuid;

use crate::config::{LOOKUP_ROLE, OWNER_ROLE, PostgresConfig};
use crate::error::{internal, pg, pg_conflict, pool, unavailable};
use crate::migrate::{LATEST_VERSION, migrate};

const CREATE_TIMEOUT: Duration = Duration::from_secs(10);
const NOT_MIGRATED: &str =
    "the database schema is missing or older than this build: run the migrations";

/// The PostgreSQL store. Cheap to share: hold it in an `Arc<dyn Store>`.
pub struct PostgresStore {
    pool: Pool,
    pub(crate) region: Region,
    /// First days of the months whose `leadmaps.events` partition this store knows to exist.
    pub(crate) months: Mutex<BTreeSet<Date>>,
    /// How many more event batches to write carefully (claiming ids with `ON CONFLICT`) rather
    /// than optimistically, since one met an id that was stored already.
    pub(crate) careful_batches: AtomicU32,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = self.pool.status();
        f.debug_struct("PostgresStore")
            .field("pool_size", &status.size)
            .field("pool_max_size", &status.max_size)
            .field("region", &self.region)
            .finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects the pool as the app role, after running the migrations when the configuration
    /// says so (the default).
    ///
    /// Before returning it checks, on a pooled connection, that the app role is not a superuser,
    /// does not bypass row-level security, is not a member of the owner or lookup role, may create
    /// temporary tables (event batches are staged in one), and that the schema is at least at
    /// [`LATEST_VERSION`](crate::LATEST_VERSION): a store that would run without its second gate,
    /// or on an older schema, is never handed out. Then it makes sure this month's and the next
    /// month's event partitions exist.
    ///
    /// # Errors
    /// [`Error::Unavailable`] when the database cannot be reached or is not migrated yet;
    /// [`Error::Invalid`] for a configuration that would weaken tenancy; the errors of
    /// [`migrate`](crate::migrate).
    pub async fn connect(config: &PostgresConfig) -> Result<Self> {
        config.validated_app_role()?;
        if config.migrate_on_connect() {
            migrate(config).await?;
        }
        let manager = Manager::from_config(
            config.app_config(),
            tokio_postgres::NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size())
            .wait_timeout(Some(config.wait_timeout()))
            .create_timeout(Some(CREATE_TIMEOUT))
            .runtime(Runtime::Tokio1)
            .build()
            .map_err(|_| internal("the connection pool could not be built"))?;
        let store = Self {
            pool,
            region: config.region(),
            months: Mutex::default(),
            careful_batches: AtomicU32::new(0),
        };
        store.check_posture().await?;
        // This month's and the next month's partitions (by the database's clock), so the first
        // batches of a month rarely wait for one to be made.
        let client = store.client().await?;
        let row = client
            .query_one(
                "SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date,
                        (date_trunc('month', now() AT TIME ZONE 'UTC') + interval '1 month')::date",
                &[],
            )
            .await
            .map_err(pg)?;
        let months: BTreeSet<Date> =
            [row.try_get(0).map_err(pg)?, row.try_get(1).map_err(pg)?].into();
        store.ensure_months(&client, &months).await?;
        Ok(store)
    }

    async fn check_posture(&self) -> Result<()> {
        let client = self.pool.get().await.map_err(pool)?;
        let row = client
            .query_one(
                "SELECT r.rolsuper, r.rolbypassrls,
                        pg_has_role(current_user, $1::text, 'MEMBER'),
                        pg_has_role(current_user, $2::text, 'MEMBER'),
                        (SELECT max(version) FROM leadmaps.schema_migrations),
                        has_database_privilege(current_database(), 'TEMPORARY')
                 FROM pg_catalog.pg_roles AS r WHERE r.rolname = current_user",
                &[&OWNER_ROLE, &LOOKUP_ROLE],
            )
            .await
            .map_err(|error| {
                let missing = [
                    SqlState::UNDEFINED_TABLE,
                    SqlState::INVALID_SCHEMA_NAME,
                    SqlState::UNDEFINED_OBJECT,
                ];
                if error.code().is_some_and(|code| missing.contains(code)) {
                    unavailable(NOT_MIGRATED)
                } else {
                    pg(error)
                }
            })?;
        let (superuser, bypass, owner, lookup): (bool, bool, bool, bool) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        if superuser || bypass || owner || lookup {
            return Err(Error::invalid(
                "refusing to serve: the app role is a superuser, bypasses row-level security, or is a member of the owner or lookup role",
            ));
        }
        let version: Option<i32> = row.get(4);
        if version.unwrap_or(0) < i32::try_from(LATEST_VERSION).unwrap_or(i32::MAX) {
            return Err(unavailable(NOT_MIGRATED));
        }
        let temporary: bool = row.get(5);
        if !temporary {
            return Err(Error::invalid(
                "the app role needs the TEMPORARY privilege on the database: event batches are staged in a temporary table",
            ));
        }
        Ok(())
    }

    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Client> {
        self.pool.get().await.map_err(pool)
    }

    /// Runs one read in a read-only transaction scoped to `scope`'s workspace (see [`scoped`]).
    pub(crate) async fn scoped_read(
        &self,
        scope: &Scope,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), true).await?;
        let statement = tx.prepare_cached(sql).await.map_err(pg)?;
        let rows = tx.query(&statement, params).await.map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(rows)
    }

    /// Closes the pool: idle connections are dropped now, busy ones when they are returned.
    pub fn close(&self) {
        self.pool.close();
    }
}

/// Opens a transaction bound to one workspace: `leadmaps.workspace_id` is set for this
/// transaction only, so it cannot leak to the next user of the pooled connection.
pub(crate) async fn scoped<'a>(
    client: &'a mut deadpool_postgres::Client,
    workspace: WorkspaceId,
    read_only: bool,
) -> Result<Transaction<'a>> {
    let tx = client
        .build_transaction()
        .read_only(read_only)
        .start()
        .await
        .map_err(pg)?;
    let set = tx
        .prepare_cached("SELECT set_config('leadmaps.workspace_id', $1, true)")
        .await
        .map_err(pg)?;
    tx.execute(&set, &[&workspace.to_string()])
        .await
        .map_err(pg)?;
    Ok(tx)
}

pub(crate) fn id(workspace: WorkspaceId) -> Uuid {
    *workspace.as_uuid()
}

pub(crate) fn to_u32(value: i64) -> Result<u32> {
    u32::try_from(value).map_err(|_| internal("a stored number is out of range"))
}

/// The columns `workspace_from_row` reads.
const WORKSPACE_COLUMNS: &str =
    "workspace_id, name, region, created_at, require_totp, ip_allowlist, retention_days";

fn workspace_from_row(row: &tokio_postgres::Row) -> Result<Workspace> {
    let region: String = row.try_get("region").map_err(pg)?;
    Ok(Workspace {
        id: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
        name: row.try_get("name").map_err(pg)?,
        region: region
            .parse()
            .map_err(|_| internal("a stored region is unknown"))?,
        created_at: row.try_get("created_at").map_err(pg)?,
        policy: policy_from_row(row)?,
    })
}

fn policy_from_row(row: &tokio_postgres::Row) -> Result<WorkspacePolicy> {
    let ranges: Vec<String> = row.try_get("ip_allowlist").map_err(pg)?;
    let days: Option<i32> = row.try_get("retention_days").map_err(pg)?;
    Ok(WorkspacePolicy {
        require_totp: row.try_get("require_totp").map_err(pg)?,
        ip_allowlist: IpAllowlist::parse(&ranges)
            .map_err(|_| internal("a stored IP allowlist does not parse"))?,
        retention_days: days
            .map(|days| u32::try_from(days).map_err(|_| internal("negative retention days")))
            .transpose()?,
    })
}

#[async_trait]
impl WorkspaceStore for PostgresStore {
    async fn create_workspace(
        &self,
        scope: &Scope,
        name: &str,
        region: Region,
        created_at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceCreate)?;
        validate_workspace_name(name)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(&format!(
                "INSERT INTO leadmaps.workspaces (workspace_id, name, region, created_at) VALUES ($1, $2, $3, $4)
                 RETURNING {WORKSPACE_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_one(
                &insert,
                &[&id(scope.workspace()), &name, &region.as_str(), &created_at],
            )
            .await
            .map_err(|e| pg_conflict(e, "workspace exists"))?;
        let workspace = workspace_from_row(&row)?;
        let draft = drafts::workspace_created(scope, name, region);
        crate::audit::append_in(&tx, scope.workspace(), draft, created_at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(workspace)
    }

    async fn workspace(&self, scope: &Scope) -> Result<Workspace> {
        let row = self
            .scoped_read(
                scope,
                &format!(
                    "SELECT {WORKSPACE_COLUMNS} FROM leadmaps.workspaces WHERE workspace_id = $1"
                ),
                &[&id(scope.workspace())],
            )
            .await?
            .into_iter()
            .next();
        workspace_from_row(&row.ok_or(Error::NotFound)?)
    }

    async fn rename_workspace(
        &self,
        scope: &Scope,
        name: &str,
        at: OffsetDateTime,
    ) -> Result<Workspace> {
        scope.require(Action::WorkspaceUpdate)?;
        validate_workspace_name(name)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        // The old name under a row lock, so the record's "before" is the name replaced.
        let current = tx
            .prepare_cached(
                "SELECT name FROM leadmaps.workspaces WHERE workspace_id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let old: String = tx
            .query_opt(&current, &[&id(scope.workspace())])
            .await
            .map_err(pg)?
            .ok_or(Error::NotFound)?
            .try_get(0)
            .map_err(pg)?;
        let update = tx
            .prepare_cached(&format!(
                "UPDATE leadmaps.workspaces SET name = $2 WHERE workspace_id = $1
                 RETURNING {WORKSPACE_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let row = tx
            .query_opt(&update, &[&id(scope.workspace()), &name])
            .await
            .map_err(pg)?
            .ok_or(Error::NotFound)?;
        let workspace = workspace_from_row(&row)?;
        let draft = drafts::workspace_renamed(scope, &old, name);
        crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(workspace)
    }

    async fn set_workspace_policy(
        &self,
        scope: &Scope,
        change: &PolicyChange,
        at: OffsetDateTime,
    ) -> Result<(Workspace, AuditRecord)> {
        scope.require(Action::WorkspaceUpdate)?;
        change.validate()?;
        let mut client = self.client().await?;
        // Read (locked), change and record in one transaction: a concurrent change of another
        // part waits and is not undone, and the change commits with its record or not at all.
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let current = tx
            .prepare_cached(
                "SELECT require_totp, ip_allowlist, retention_days FROM leadmaps.workspaces
                 WHERE workspace_id = $1 FOR UPDATE",
            )
            .await
            .map_err(pg)?;
        let before = policy_from_row(
            &tx.query_opt(&current, &[&id(scope.workspace())])
                .await
                .map_err(pg)?
                .ok_or(Error::NotFound)?,
        )?;
        let after = change.apply(&before);
        let draft = change.audit_draft(scope, &before, &after);
        draft.check_scope(scope)?;
        let update = tx
            .prepare_cached(&format!(
                "UPDATE leadmaps.workspaces
                 SET require_totp = $2, ip_allowlist = $3, retention_days = $4
                 WHERE workspace_id = $1 RETURNING {WORKSPACE_COLUMNS}"
            ))
            .await
            .map_err(pg)?;
        let days = after
            .retention_days
            .map(|days| i32::try_from(days).map_err(|_| Error::invalid("retention too long")))
            .transpose()?;
        let row = tx
            .query_opt(
                &update,
                &[
                    &id(scope.workspace()),
                    &after.require_totp,
                    &after.ip_allowlist.to_strings(),
                    &days,
                ],
            )
            .await
            .map_err(pg)?;
        let workspace = workspace_from_row(&row.ok_or(Error::NotFound)?)?;
        let record = crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok((workspace, record))
    }

    async fn workspace_ids(
        &self,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT w FROM leadmaps.workspace_ids($1, $2) AS w")
            .await
            .map_err(pg)?;
        let rows = client
            .query(&select, &[&after.map(id), &i64::from(limit)])
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| Ok(WorkspaceId::from_uuid(row.try_get(0).map_err(pg)?)))
            .collect()
    }
}

#[async_trait]
impl SecretStore for PostgresStore {
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let upsert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.secrets (workspace_id, name, purpose, blob) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (workspace_id, name) DO UPDATE SET purpose = EXCLUDED.purpose, blob = EXCLUDED.blob",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &upsert,
            &[
                &id(scope.workspace()),
                &secret.name,
                &secret.purpose.as_str(),
                &secret.blob,
            ],
        )
        .await
        .map_err(pg)?;
        let draft = drafts::secret_written(scope, &secret.name);
        crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)
    }

    async fn secret(&self, scope: &Scope, name: &str) -> Result<Option<StoredSecret>> {
        require_secret_read(scope)?;
        let row = self.scoped_read(scope, "SELECT name, purpose, blob FROM leadmaps.secrets WHERE workspace_id = $1 AND name = $2", &[&id(scope.workspace()), &name]).await?.into_iter().next();
        row.map(|row| {
            let purpose: String = row.try_get("purpose").map_err(pg)?;
            Ok(StoredSecret {
                name: row.try_get("name").map_err(pg)?,
                purpose: Purpose::parse(&purpose)
                    .ok_or_else(|| internal("a stored secret purpose is unknown"))?,
                blob: row.try_get("blob").map_err(pg)?,
            })
        })
        .transpose()
    }

    async fn delete_secret(&self, scope: &Scope, name: &str, at: OffsetDateTime) -> Result<bool> {
        scope.require(Action::SecretWrite)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let delete = tx
            .prepare_cached("DELETE FROM leadmaps.secrets WHERE workspace_id = $1 AND name = $2")
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute(&delete, &[&id(scope.workspace()), &name])
            .await
            .map_err(pg)?;
        if deleted > 0 {
            let draft = drafts::secret_deleted(scope, name);
            crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(deleted > 0)
    }

    async fn secret_names(&self, scope: &Scope) -> Result<Vec<String>> {
        require_secret_read(scope)?;
        let rows = self
            .scoped_read(
                scope,
                "SELECT name FROM leadmaps.secrets WHERE workspace_id = $1 ORDER BY name",
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter().map(|row| row.try_get(0).map_err(pg)).collect()
    }
}

#[async_trait]
impl KeyStore for PostgresStore {
    async fn tenant_keys(&self, scope: &Scope) -> Result<Vec<WrappedTenantKey>> {
        let rows = self
            .scoped_read(
                scope,
                "SELECT workspace_id, version, kek_id, blob, created_at FROM leadmaps.tenant_keys
                 WHERE workspace_id = $1 ORDER BY version",
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(WrappedTenantKey {
                    workspace: WorkspaceId::from_uuid(row.try_get("workspace_id").map_err(pg)?),
                    version: to_u32(row.try_get("version").map_err(pg)?)?,
                    kek_id: to_u32(row.try_get("kek_id").map_err(pg)?)?,
                    blob: row.try_get("blob").map_err(pg)?,
                    created_at: row.try_get("created_at").map_err(pg)?,
                })
            })
            .collect()
    }

    async fn insert_tenant_key(&self, scope: &Scope, key: &WrappedTenantKey) -> Result<()> {
        if key.workspace != scope.workspace() {
            return Err(Denied::WrongScope.into());
        }
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.tenant_keys (workspace_id, version, kek_id, blob, created_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &id(scope.workspace()),
                &i64::from(key.version),
                &i64::from(key.kek_id),
                &key.blob,
                &key.created_at,
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "tenant key version exists"))?;
        let draft = drafts::tenant_key_created(scope, key.version, key.kek_id);
        crate::audit::append_in(&tx, scope.workspace(), draft, key.created_at).await?;
        tx.commit().await.map_err(pg)
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
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let update = tx
            .prepare_cached(
                "UPDATE leadmaps.tenant_keys SET kek_id = $4, blob = $5
                 WHERE workspace_id = $1 AND version = $2 AND kek_id = $3",
            )
            .await
            .map_err(pg)?;
        let updated = tx
            .execute(
                &update,
                &[
                    &id(scope.workspace()),
                    &i64::from(version),
                    &i64::from(from_kek),
                    &i64::from(to_kek),
                    &blob,
                ],
            )
            .await
            .map_err(pg)?;
        if updated == 1 {
            let draft = drafts::tenant_key_rewrapped(scope, version, from_kek, to_kek);
            crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(updated == 1)
    }

    async fn delete_tenant_keys(&self, scope: &Scope, at: OffsetDateTime) -> Result<u64> {
        scope.require(Action::KeyManage)?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, scope.workspace(), false).await?;
        let delete = tx
            .prepare_cached("DELETE FROM leadmaps.tenant_keys WHERE workspace_id = $1")
            .await
            .map_err(pg)?;
        let deleted = tx
            .execute(&delete, &[&id(scope.workspace())])
            .await
            .map_err(pg)?;
        let draft = drafts::tenant_keys_destroyed(scope, deleted);
        crate::audit::append_in(&tx, scope.workspace(), draft, at).await?;
        tx.commit().await.map_err(pg)?;
        Ok(deleted)
    }

    async fn workspaces_needing_rewrap(
        &self,
        primary: u32,
        after: Option<WorkspaceId>,
        limit: u32,
    ) -> Result<Vec<WorkspaceId>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT w FROM leadmaps.workspaces_needing_rewrap($1, $2, $3) AS w")
            .await
            .map_err(pg)?;
        let rows = client
            .query(
                &select,
                &[&i64::from(primary), &after.map(id), &i64::from(limit)],
            )
            .await
            .map_err(pg)?;
        rows.iter()
            .map(|row| row.try_get(0).map(WorkspaceId::from_uuid).map_err(pg))
            .collect()
    }

    async fn count_needing_rewrap(&self, primary: u32) -> Result<u64> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT leadmaps.count_needing_rewrap($1)")
            .await
            .map_err(pg)?;
        let count: i64 = client
            .query_one(&select, &[&i64::from(primary)])
            .await
            .map_err(pg)?
            .try_get(0)
            .map_err(pg)?;
        u64::try_from(count).map_err(|_| internal("a negative count"))
    }

    async fn kek_ids_in_use(&self) -> Result<Vec<u32>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT k FROM leadmaps.kek_ids_in_use() AS k")
            .await
            .map_err(pg)?;
        let rows = client.query(&select, &[]).await.map_err(pg)?;
        rows.iter()
            .map(|row| to_u32(row.try_get(0).map_err(pg)?))
            .collect()
    }

    async fn key_check(&self, kek_id: u32) -> Result<Option<Vec<u8>>> {
        let client = self.client().await?;
        let select = client
            .prepare_cached("SELECT blob FROM leadmaps.key_checks WHERE kek_id = $1")
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&select, &[&i64::from(kek_id)])
            .await
            .map_err(pg)?;
        row.map(|row| row.try_get(0).map_err(pg)).transpose()
    }

    async fn put_key_check(&self, kek_id: u32, blob: &[u8]) -> Result<bool> {
        let client = self.client().await?;
        let insert = client
            .prepare_cached("INSERT INTO leadmaps.key_checks (kek_id, blob) VALUES ($1, $2) ON CONFLICT (kek_id) DO NOTHING")
            .await
            .map_err(pg)?;
        let inserted = client
            .execute(&insert, &[&i64::from(kek_id), &blob])
            .await
            .map_err(pg)?;
        Ok(inserted == 1)
    }
}

impl Store for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        let mut capabilities = Capabilities::default();
        capabilities.native_row_level_security = true;
        capabilities.bulk_copy = true;
        capabilities
    }
}
