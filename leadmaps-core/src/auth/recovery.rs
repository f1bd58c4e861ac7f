//! Recovery codes: the way back in when the authenticator is lost.
//!
//! Ten codes of 80 bits, shown once, stored as Argon2id hashes ([`super::tokens::recovery`]),
//! each good for one sign-in. A set is only ever issued in the same call that accepts a TOTP
//! code — when an enrolment is confirmed, or on regeneration — so a session that did not just
//! pass a second factor cannot mint codes. A new set replaces the old one entirely.

use std::sync::Arc;

use async_trait::async_trait;
use zeroize::Zeroizing;

use super::tokens::recovery::{self, RecoveryHash};
use super::totp::{Subject, TotpFactors, TotpOutcome};
use crate::audit::{AuditAction, AuditStore};
use crate::error::{Error, Result};

/// Storage of recovery codes: one set per subject, slots `0..10`, each used at most once.
#[async_trait]
pub trait RecoveryStore: Send + Sync {
    /// Replaces the subject's set (all slots unused).
    async fn put_recovery_codes(&self, subject: Subject, codes: &[RecoveryHash]) -> Result<()>;
    /// The unused codes of the subject, with their slots.
    async fn recovery_codes(&self, subject: Subject) -> Result<Vec<(u32, RecoveryHash)>>;
    /// Marks a slot used if it is unused; whether this call did it. MUST be atomic, so a code
    /// is redeemed once even under parallel requests.
    async fn use_recovery_code(&self, subject: Subject, slot: u32) -> Result<bool>;
}

/// A freshly issued set, or why none was issued.
#[derive(Debug)]
pub enum Issued {
    /// The codes, to show once.
    Codes(Vec<Zeroizing<String>>),
    /// The TOTP code was not accepted; nothing changed.
    Refused(TotpOutcome),
}

/// Issues and redeems recovery codes.
pub struct RecoveryCodes {
    store: Arc<dyn RecoveryStore>,
}

impl std::fmt::Debug for RecoveryCodes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecoveryCodes").finish_non_exhaustive()
    }
}

/// Argon2id work off the async threads (each hash is ~20 MiB and tens of milliseconds).
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(Error::backend)
}

impl RecoveryCodes {
    /// The service over a store.
    pub fn new(store: Arc<dyn RecoveryStore>) -> Self {
        Self { store }
    }

    /// A fresh set for `subject`, replacing the old one. With `regenerated`, the replacement is
    /// first recorded as `recovery_codes.regenerated` (after: the count) through those factors.
    async fn issue(
        &self,
        subject: Subject,
        regenerated: Option<(&TotpFactors, &dyn AuditStore)>,
    ) -> Result<Vec<Zeroizing<String>>> {
        let (shown, hashes) = blocking(recovery::generate).await?;
        if let Some((factors, audit)) = regenerated {
            let after = serde_json::json!({ "count": hashes.len() });
            factors
                .record(
                    audit,
                    subject,
                    AuditAction::RecoveryCodesRegenerated,
                    Some(after),
                )
                .await?;
        }
        self.store.put_recovery_codes(subject, &hashes).await?;
        Ok(shown)
    }

    /// Confirms a pending TOTP enrolment with its first code and, if accepted, issues the first
    /// set of recovery codes. The enrolment is audited as [`TotpFactors::confirm`] says.
    ///
    /// # Errors
    /// [`Error::NotFound`] without a factor; vault, store and audit errors.
    pub async fn confirm_enrolment(
        &self,
        factors: &TotpFactors,
        subject: Subject,
        code: &str,
        audit: &dyn AuditStore,
    ) -> Result<Issued> {
        match factors.confirm(subject, code, audit).await? {
            TotpOutcome::Accepted => Ok(Issued::Codes(self.issue(subject, None).await?)),
            refused => Ok(Issued::Refused(refused)),
        }
    }

    /// Replaces the subject's codes after checking a current TOTP code: the fresh second factor
    /// regeneration requires. `recovery_codes.regenerated` (after: how many codes, never the
    /// codes) is appended to the instance tenant's audit log before the codes are replaced; if
    /// it cannot be, the old codes stay and the error is returned.
    ///
    /// # Errors
    /// [`Error::NotFound`] without an active factor; vault, store and audit errors.
    pub async fn regenerate(
        &self,
        factors: &TotpFactors,
        subject: Subject,
        code: &str,
        audit: &dyn AuditStore,
    ) -> Result<Issued> {
        match factors.check(subject, code).await? {
            TotpOutcome::Accepted => Ok(Issued::Codes(
                self.issue(subject, Some((factors, audit))).await?,
            )),
            refused => Ok(Issued::Refused(refused)),
        }
    }

    /// Redeems a code: true once per code. Malformed input is simply false.
    ///
    /// # Errors
    /// Store errors.
    pub async fn redeem(&self, subject: Subject, code: &str) -> Result<bool> {
        // 16 base32 characters with optional dashes and spaces; anything longer is not a code
        // and is not worth ten Argon2 runs.
        if code.len() > 40 {
            return Ok(false);
        }
        let stored = self.store.recovery_codes(subject).await?;
        if stored.is_empty() {
            return Ok(false);
        }
        let typed = Zeroizing::new(code.to_owned());
        let slot = blocking(move || {
            stored
                .iter()
                .find(|(_, hash)| recovery::matches(&typed, hash))
                .map(|(slot, _)| *slot)
        })
        .await?;
        match slot {
            Some(slot) => self.store.use_recovery_code(subject, slot).await,
            None => Ok(false),
        }
    }

    /// How many unused codes the subject has.
    ///
    /// # Errors
    /// Store errors.
    pub async fn remaining(&self, subject: Subject) -> Result<usize> {
        Ok(self.store.recovery_codes(subject).await?.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::{Clock, ManualClock};
    use crate::crypto::{Kek, KeyRing, Vault};
    use crate::memory::MemoryStore;
    use crate::tenancy::{Gate, UserId};
    use time::OffsetDateTime;

    async fn setup() -> (
        Arc<MemoryStore>,
        Arc<ManualClock>,
        TotpFactors,
        RecoveryCodes,
    ) {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        ));
        let kek: Vec<u8> = (0..32u8).map(|i| i ^ 0x5c).collect();
        let ring = KeyRing::new([Kek::new(1, &kek).unwrap()]).unwrap();
        let vault = Arc::new(
            Vault::start(ring, store.clone(), clock.clone())
                .await
                .unwrap(),
        );
        let factors = TotpFactors::new(
            store.clone(),
            vault,
            Gate::new(clock.clone()),
            clock.clone(),
            "leadmaps",
        );
        (store.clone(), clock, factors, RecoveryCodes::new(store))
    }

    fn code(uri: &str, clock: &ManualClock) -> String {
        let parsed = super::super::otp::OtpAuth::parse(uri).unwrap();
        let totp = super::super::otp::Totp::default();
        totp.format(totp.code_at(&parsed.secret, clock.now().unix_timestamp() as u64))
    }

    #[tokio::test]
    async fn codes_come_only_with_an_accepted_totp_code_and_work_once() {
        let (store, clock, factors, recovery) = setup().await;
        let subject = Subject::User(UserId::new());
        let uri = factors.enroll(subject, "a@example.com").await.unwrap();
        assert!(matches!(
            recovery
                .confirm_enrolment(&factors, subject, "000000", store.as_ref())
                .await
                .unwrap(),
            Issued::Refused(TotpOutcome::Rejected { .. })
        ));
        assert_eq!(recovery.remaining(subject).await.unwrap(), 0);
        let Issued::Codes(codes) = recovery
            .confirm_enrolment(&factors, subject, &code(&uri, &clock), store.as_ref())
            .await
            .unwrap()
        else {
            panic!("the first code confirms");
        };
        assert_eq!(codes.len(), 10);
        assert!(recovery.redeem(subject, &codes[3]).await.unwrap());
        assert!(
            !recovery.redeem(subject, &codes[3]).await.unwrap(),
            "single use"
        );
        assert!(
            recovery
                .redeem(subject, &codes[4].to_lowercase().replace('-', " "))
                .await
                .unwrap(),
            "case and separators do not matter"
        );
        assert!(
            !recovery
                .redeem(subject, "AAAA-AAAA-AAAA-AAAA")
                .await
                .unwrap()
        );
        assert!(!recovery.redeem(subject, &"A".repeat(4096)).await.unwrap());
        assert_eq!(recovery.remaining(subject).await.unwrap(), 8);

        // Regeneration needs a current code; the reused confirmation code is refused.
        assert!(matches!(
            recovery
                .regenerate(&factors, subject, &code(&uri, &clock), store.as_ref())
                .await
                .unwrap(),
            Issued::Refused(TotpOutcome::Reused)
        ));
        clock.advance(time::Duration::seconds(30));
        let Issued::Codes(fresh) = recovery
            .regenerate(&factors, subject, &code(&uri, &clock), store.as_ref())
            .await
            .unwrap()
        else {
            panic!("a current code regenerates");
        };
        assert_eq!(recovery.remaining(subject).await.unwrap(), 10);
        assert!(
            !recovery.redeem(subject, &codes[0]).await.unwrap(),
            "old set gone"
        );
        assert!(recovery.redeem(subject, &fresh[0]).await.unwrap());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn parallel_redemptions_of_one_code_succeed_once() {
        let (store, _, _, _) = setup().await;
        let recovery = Arc::new(RecoveryCodes::new(store));
        let subject = Subject::User(UserId::new());
        let codes = recovery.issue(subject, None).await.unwrap();
        let code = codes[0].to_string();
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (recovery, code) = (recovery.clone(), code.clone());
                tokio::spawn(async move { recovery.redeem(subject, &code).await.unwrap() })
            })
            .collect();
        let mut won = 0;
        for task in tasks {
            won += usize::from(task.await.unwrap());
        }
        assert_eq!(won, 1);
    }

    /// The instance tenant's records of `action`.
    async fn recorded(store: &MemoryStore, action: AuditAction) -> Vec<crate::audit::AuditRecord> {
        let clock = Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH));
        let auditor = Gate::new(clock)
            .authorize(
                &crate::tenancy::Principal::System(crate::tenancy::SystemTask::Audit),
                crate::tenancy::WorkspaceId::INSTANCE,
                crate::tenancy::Action::AuditRead,
            )
            .unwrap();
        let records = store.audit_records(&auditor, 0, 1000).await.unwrap();
        records.into_iter().filter(|r| r.action == action).collect()
    }

    /// Enrolment and regeneration are in the instance tenant's audit log, naming the person and
    /// never a code; each is written before the change, so a log that refuses the record
    /// leaves the factor pending or the old codes in place.
    #[tokio::test]
    async fn enrolment_and_regeneration_are_audited_first() {
        let (store, clock, factors, recovery) = setup().await;
        let user = UserId::new();
        let subject = Subject::User(user);
        let uri = factors.enroll(subject, "a@example.com").await.unwrap();

        let refused = recovery
            .confirm_enrolment(
                &factors,
                subject,
                &code(&uri, &clock),
                &crate::audit::Refusing,
            )
            .await;
        assert_eq!(refused.unwrap_err().kind(), crate::ErrorKind::Unavailable);
        assert_eq!(
            factors.state(subject).await.unwrap(),
            super::super::totp::FactorState::Pending,
            "not audited, not enrolled"
        );
        assert_eq!(recovery.remaining(subject).await.unwrap(), 0);

        clock.advance(time::Duration::seconds(30));
        let Issued::Codes(first) = recovery
            .confirm_enrolment(&factors, subject, &code(&uri, &clock), store.as_ref())
            .await
            .unwrap()
        else {
            panic!("a fresh code confirms");
        };
        let enrolled = recorded(&store, AuditAction::TotpEnrolled).await;
        assert_eq!(enrolled.len(), 1);
        assert_eq!(enrolled[0].target, crate::audit::Target::user(user));

        clock.advance(time::Duration::seconds(30));
        let refused = recovery
            .regenerate(
                &factors,
                subject,
                &code(&uri, &clock),
                &crate::audit::Refusing,
            )
            .await;
        assert_eq!(refused.unwrap_err().kind(), crate::ErrorKind::Unavailable);
        assert!(
            recovery.redeem(subject, &first[0]).await.unwrap(),
            "the old codes stay when the regeneration could not be audited"
        );
        assert!(
            recorded(&store, AuditAction::RecoveryCodesRegenerated)
                .await
                .is_empty()
        );

        clock.advance(time::Duration::seconds(30));
        let Issued::Codes(fresh) = recovery
            .regenerate(&factors, subject, &code(&uri, &clock), store.as_ref())
            .await
            .unwrap()
        else {
            panic!("a fresh code regenerates");
        };
        let regenerated = recorded(&store, AuditAction::RecoveryCodesRegenerated).await;
        assert_eq!(regenerated.len(), 1);
        assert_eq!(
            regenerated[0].after,
            Some(serde_json::json!({ "count": 10 }))
        );
        let text = regenerated[0].to_json().to_string();
        assert!(
            fresh.iter().all(|c| !text.contains(c.as_str())),
            "never a code"
        );
        assert_eq!(
            recorded(&store, AuditAction::TotpEnrolled).await.len(),
            1,
            "regeneration does not enrol again"
        );
    }
}
