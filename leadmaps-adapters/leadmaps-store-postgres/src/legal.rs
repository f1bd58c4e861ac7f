//! [`LegalStore`] on `leadmaps.dpa_acceptances` and `leadmaps.subprocessor_notices` (migration
//! V13): customer data under forced row-level security; each row inserted in the scoped
//! transaction that first appends its audit record (log, then act).

use async_trait::async_trait;
use leadmaps_core::audit::{AuditActor, AuditDraft, AuditRecord, audit_time};
use leadmaps_core::legal::{
    DpaAcceptance, LegalStore, SubprocessorNotice, dpa_draft, validate_dpa_version,
};
use leadmaps_core::tenancy::{Action, Scope};
use leadmaps_core::{Error, Result};
use time::OffsetDateTime;

use crate::audit::append_in;
use crate::error::{internal, pg, pg_conflict};
use crate::store::{PostgresStore, id, scoped, to_u32};

#[async_trait]
impl LegalStore for PostgresStore {
    async fn accept_dpa(
        &self,
        scope: &Scope,
        version: &str,
        at: OffsetDateTime,
    ) -> Result<(DpaAcceptance, AuditRecord)> {
        scope.require(Action::LegalAccept)?;
        validate_dpa_version(version)?;
        let at = audit_time(at);
        let workspace = scope.workspace();
        let acceptance = DpaAcceptance {
            workspace,
            version: version.to_owned(),
            accepted_by: AuditActor::of(scope),
            accepted_at: at,
        };
        let mut client = self.client().await?;
        let tx = scoped(&mut client, workspace, false).await?;
        let record = append_in(&tx, workspace, dpa_draft(scope, version, at), at).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.dpa_acceptances
                     (workspace_id, version, actor_kind, actor_subject, accepted_at)
                 VALUES ($1, $2, $3, $4, $5)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[
                &id(workspace),
                &version,
                &acceptance.accepted_by.kind(),
                &acceptance.accepted_by.subject(),
                &at,
            ],
        )
        .await
        .map_err(|e| pg_conflict(e, "this DPA version is accepted already"))?;
        tx.commit().await.map_err(pg)?;
        Ok((acceptance, record))
    }

    async fn dpa_acceptances(&self, scope: &Scope) -> Result<Vec<DpaAcceptance>> {
        scope.require(Action::LegalRead)?;
        let workspace = scope.workspace();
        let rows = self
            .scoped_read(
                scope,
                "SELECT version, actor_kind, actor_subject, accepted_at
                 FROM leadmaps.dpa_acceptances WHERE workspace_id = $1
                 ORDER BY accepted_at, version",
                &[&id(workspace)],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let kind: String = row.try_get(1).map_err(pg)?;
                let subject: String = row.try_get(2).map_err(pg)?;
                Ok(DpaAcceptance {
                    workspace,
                    version: row.try_get(0).map_err(pg)?,
                    accepted_by: AuditActor::from_parts(&kind, &subject, None)
                        .map_err(|_| internal("a stored DPA actor does not parse"))?,
                    accepted_at: row.try_get(3).map_err(pg)?,
                })
            })
            .collect()
    }

    async fn record_subprocessor_notice(
        &self,
        scope: &Scope,
        notice: &SubprocessorNotice,
        audit: AuditDraft,
    ) -> Result<AuditRecord> {
        scope.require(Action::LegalRead)?;
        audit.check_scope(scope).map_err(Error::from)?;
        let workspace = scope.workspace();
        let at = audit_time(notice.notified_at);
        let recipients =
            i32::try_from(notice.recipients).map_err(|_| Error::invalid("too many recipients"))?;
        let mut client = self.client().await?;
        let tx = scoped(&mut client, workspace, false).await?;
        let record = append_in(&tx, workspace, audit, at).await?;
        let insert = tx
            .prepare_cached(
                "INSERT INTO leadmaps.subprocessor_notices
                     (workspace_id, version, notified_at, recipients)
                 VALUES ($1, $2, $3, $4)",
            )
            .await
            .map_err(pg)?;
        tx.execute(
            &insert,
            &[&id(workspace), &notice.version, &at, &recipients],
        )
        .await
        .map_err(|e| pg_conflict(e, "the workspace was told about this version"))?;
        tx.commit().await.map_err(pg)?;
        Ok(record)
    }

    async fn subprocessor_notices(&self, scope: &Scope) -> Result<Vec<SubprocessorNotice>> {
        scope.require(Action::LegalRead)?;
        let rows = self
            .scoped_read(
                scope,
                "SELECT version, notified_at, recipients
                 FROM leadmaps.subprocessor_notices WHERE workspace_id = $1
                 ORDER BY notified_at, version",
                &[&id(scope.workspace())],
            )
            .await?;
        rows.iter()
            .map(|row| {
                Ok(SubprocessorNotice {
                    version: row.try_get(0).map_err(pg)?,
                    notified_at: row.try_get(1).map_err(pg)?,
                    recipients: to_u32(i64::from(row.try_get::<_, i32>(2).map_err(pg)?))?,
                })
            })
            .collect()
    }
}
