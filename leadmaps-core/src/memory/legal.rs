//! [`LegalStore`] in memory: each change and its audit record under the store's one lock.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::MemoryStore;
use crate::audit::{AuditActor, AuditDraft, AuditRecord, audit_time};
use crate::error::{Error, Result};
use crate::legal::{
    DpaAcceptance, LegalStore, SubprocessorNotice, dpa_draft, validate_dpa_version,
};
use crate::tenancy::{Action, Scope};

#[async_trait]
impl LegalStore for MemoryStore {
    async fn accept_dpa(
        &self,
        scope: &Scope,
        version: &str,
        at: OffsetDateTime,
    ) -> Result<(DpaAcceptance, AuditRecord)> {
        scope.require(Action::LegalAccept)?;
        validate_dpa_version(version)?;
        let at = audit_time(at);
        let mut state = self.state();
        if state
            .dpa
            .get(&scope.workspace())
            .is_some_and(|list| list.iter().any(|a| a.version == version))
        {
            return Err(Error::Conflict("this DPA version is accepted already"));
        }
        let record = state.append_audit(scope, dpa_draft(scope, version, at), at)?;
        let acceptance = DpaAcceptance {
            workspace: scope.workspace(),
            version: version.to_owned(),
            accepted_by: AuditActor::of(scope),
            accepted_at: at,
        };
        state
            .dpa
            .entry(scope.workspace())
            .or_default()
            .push(acceptance.clone());
        Ok((acceptance, record))
    }

    async fn dpa_acceptances(&self, scope: &Scope) -> Result<Vec<DpaAcceptance>> {
        scope.require(Action::LegalRead)?;
        Ok(self
            .state()
            .dpa
            .get(&scope.workspace())
            .cloned()
            .unwrap_or_default())
    }

    async fn record_subprocessor_notice(
        &self,
        scope: &Scope,
        notice: &SubprocessorNotice,
        audit: AuditDraft,
    ) -> Result<AuditRecord> {
        scope.require(Action::LegalRead)?;
        let at = audit_time(notice.notified_at);
        let mut state = self.state();
        if state
            .notices
            .get(&scope.workspace())
            .is_some_and(|list| list.iter().any(|n| n.version == notice.version))
        {
            return Err(Error::Conflict("the workspace was told about this version"));
        }
        let record = state.append_audit(scope, audit, at)?;
        let mut notice = notice.clone();
        notice.notified_at = at;
        state
            .notices
            .entry(scope.workspace())
            .or_default()
            .push(notice);
        Ok(record)
    }

    async fn subprocessor_notices(&self, scope: &Scope) -> Result<Vec<SubprocessorNotice>> {
        scope.require(Action::LegalRead)?;
        Ok(self
            .state()
            .notices
            .get(&scope.workspace())
            .cloned()
            .unwrap_or_default())
    }
}
