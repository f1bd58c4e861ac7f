//! [`LegalStore`] on `dpa_acceptances` and `subprocessor_notices` (migration
//! `0009_vulnerabilities.sql`): each row stored in the IMMEDIATE transaction that appends its
//! audit record first (log, then act).

use async_trait::async_trait;
use leadmaps_core::audit::{AuditActor, AuditDraft, AuditRecord, audit_time};
use leadmaps_core::legal::{
    DpaAcceptance, LegalStore, SubprocessorNotice, dpa_draft, validate_dpa_version,
};
use leadmaps_core::tenancy::{Action, Scope};
use leadmaps_core::{Error, Result};
use rusqlite::types::Type;
use rusqlite::{TransactionBehavior, params};
use time::OffsetDateTime;

use crate::SqliteStore;
use crate::audit::append_in;
use crate::codec::{corrupt, get_micros, id_bytes, unix_micros};
use crate::error::{classify, db};

const INSERT_DPA: &str = "INSERT INTO dpa_acceptances \
     (workspace_id, version, actor_kind, actor_subject, accepted_at) VALUES (?1, ?2, ?3, ?4, ?5)";
const SELECT_DPA: &str = "SELECT version, actor_kind, actor_subject, accepted_at \
     FROM dpa_acceptances WHERE workspace_id = ?1 ORDER BY accepted_at, version";
const INSERT_NOTICE: &str = "INSERT INTO subprocessor_notices \
     (workspace_id, version, notified_at, recipients) VALUES (?1, ?2, ?3, ?4)";
const SELECT_NOTICES: &str = "SELECT version, notified_at, recipients \
     FROM subprocessor_notices WHERE workspace_id = ?1 ORDER BY notified_at, version";

#[async_trait]
impl LegalStore for SqliteStore {
    async fn accept_dpa(
        &self,
        scope: &Scope,
        version: &str,
        at: OffsetDateTime,
    ) -> Result<(DpaAcceptance, AuditRecord)> {
        scope.require(Action::LegalAccept)?;
        validate_dpa_version(version)?;
        let at = audit_time(at);
        let acceptance = DpaAcceptance {
            workspace: scope.workspace(),
            version: version.to_owned(),
            accepted_by: AuditActor::of(scope),
            accepted_at: at,
        };
        let draft = dpa_draft(scope, version, at);
        let row = acceptance.clone();
        let micros = unix_micros(at)?;
        let record = self
            .conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let record = append_in(&tx, row.workspace, draft, at)?;
                tx.prepare_cached(INSERT_DPA)
                    .map_err(db)?
                    .execute(params![
                        id_bytes(row.workspace),
                        row.version,
                        row.accepted_by.kind(),
                        row.accepted_by.subject(),
                        micros,
                    ])
                    .map_err(|e| classify(e, "this DPA version is accepted already"))?;
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await?;
        Ok((acceptance, record))
    }

    async fn dpa_acceptances(&self, scope: &Scope) -> Result<Vec<DpaAcceptance>> {
        scope.require(Action::LegalRead)?;
        let workspace = scope.workspace();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(SELECT_DPA).map_err(db)?;
                let rows = select
                    .query_map([id_bytes(workspace)], |row| {
                        let kind: String = row.get(1)?;
                        let subject: String = row.get(2)?;
                        Ok(DpaAcceptance {
                            workspace,
                            version: row.get(0)?,
                            accepted_by: AuditActor::from_parts(&kind, &subject, None)
                                .map_err(|_| corrupt(1, Type::Text, "actor"))?,
                            accepted_at: get_micros(row, 3)?,
                        })
                    })
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
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
        let (version, recipients, micros) =
            (notice.version.clone(), notice.recipients, unix_micros(at)?);
        self.conn
            .run(move |conn| {
                let tx = conn
                    .transaction_with_behavior(TransactionBehavior::Immediate)
                    .map_err(db)?;
                let record = append_in(&tx, workspace, audit, at)?;
                tx.prepare_cached(INSERT_NOTICE)
                    .map_err(db)?
                    .execute(params![id_bytes(workspace), version, micros, recipients])
                    .map_err(|e| classify(e, "the workspace was told about this version"))?;
                tx.commit().map_err(db)?;
                Ok(record)
            })
            .await
    }

    async fn subprocessor_notices(&self, scope: &Scope) -> Result<Vec<SubprocessorNotice>> {
        scope.require(Action::LegalRead)?;
        let workspace = scope.workspace();
        self.conn
            .run(move |conn| {
                let mut select = conn.prepare_cached(SELECT_NOTICES).map_err(db)?;
                let rows = select
                    .query_map([id_bytes(workspace)], |row| {
                        let recipients: i64 = row.get(2)?;
                        Ok(SubprocessorNotice {
                            version: row.get(0)?,
                            notified_at: get_micros(row, 1)?,
                            recipients: u32::try_from(recipients)
                                .map_err(|_| corrupt(2, Type::Integer, "recipients"))?,
                        })
                    })
                    .map_err(db)?;
                rows.collect::<rusqlite::Result<Vec<_>>>().map_err(db)
            })
            .await
    }
}
