//! TOTP as a second factor: single use, consecutive-failure lockout, reuse detection.
//!
//! A code is accepted once: the matched step is claimed in the store with a compare-and-set
//! (`last_step < step`), so of any number of parallel submissions of one code exactly one wins.
//! A valid code whose step was already used is reported as [`TotpOutcome::Reused`] so the caller
//! can audit it and tell the holder. Ten consecutive failures lock the factor for 15 minutes.

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use super::otp::{self, Totp};
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::tenancy::{StaffId, UserId, WorkspaceId};

/// Consecutive failures that lock a factor.
pub const LOCK_AFTER: u32 = 10;
/// How long a lock lasts.
pub const LOCK_FOR: Duration = Duration::minutes(15);

/// Whose second factor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A customer user.
    User(UserId),
    /// A staff member.
    Staff(StaffId),
}

/// A TOTP factor as stored. The seed is sealed (envelope encryption); the store never sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TotpFactor {
    /// Owner.
    pub subject: Subject,
    /// The sealed seed.
    pub sealed_seed: Vec<u8>,
    /// The last accepted step.
    pub last_step: Option<u64>,
    /// Consecutive failures.
    pub failures: u32,
    /// Refused until then.
    pub locked_until: Option<OffsetDateTime>,
    /// Whether enrolment was confirmed with a first code. Only a confirmed factor is a second
    /// factor; a pending one can only be confirmed.
    pub confirmed: bool,
}

/// Where a subject stands with TOTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FactorState {
    /// No factor.
    None,
    /// Enrolled, waiting for the first code.
    Pending,
    /// Confirmed: a second factor.
    Active,
}

/// Storage of TOTP factors. Every method is atomic on its own.
#[async_trait]
pub trait TotpStore: Send + Sync {
    /// Creates or replaces a subject's factor (enrolment).
    async fn put_totp(&self, factor: &TotpFactor) -> Result<()>;

    /// The subject's factor.
    async fn totp(&self, subject: Subject) -> Result<Option<TotpFactor>>;

    /// Sets `last_step = step` only if it is unset or lower, and resets failures; returns
    /// whether this call did it. MUST be a single atomic compare-and-set.
    async fn claim_totp_step(&self, subject: Subject, step: u64) -> Result<bool>;

    /// Counts one failure; from `lock_after` consecutive failures on, sets `locked_until` to
    /// `now + lock_for`. Returns the failure count.
    async fn record_totp_failure(
        &self,
        subject: Subject,
        now: OffsetDateTime,
        lock_after: u32,
        lock_for: Duration,
    ) -> Result<u32>;
}

/// What a submitted code did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotpOutcome {
    /// Accepted, and its step is now used.
    Accepted,
    /// Wrong code.
    Rejected {
        /// Failures left before the lock.
        remaining: u32,
    },
    /// A correct code whose step was already used: audit it and tell the holder.
    Reused,
    /// Too many failures; nothing is checked until then.
    Locked {
        /// When the lock ends.
        until: OffsetDateTime,
    },
}

/// Checks submitted codes against a subject's factor.
pub struct TotpVerifier {
    store: Arc<dyn TotpStore>,
    clock: Arc<dyn Clock>,
    totp: Totp,
}

impl std::fmt::Debug for TotpVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpVerifier")
            .field("totp", &self.totp)
            .finish_non_exhaustive()
    }
}

impl TotpVerifier {
    /// A verifier with leadmaps' parameters (SHA-1, 6 digits, 30 s).
    pub fn new(store: Arc<dyn TotpStore>, clock: Arc<dyn Clock>) -> Self {
        Self {
            store,
            clock,
            totp: Totp::default(),
        }
    }

    /// Checks `code` for `subject`, whose opened seed is `seed`.
    ///
    /// # Errors
    /// [`Error::NotFound`] when the subject has no factor; store errors.
    pub async fn verify(&self, subject: Subject, seed: &[u8], code: &str) -> Result<TotpOutcome> {
        let now = self.clock.now();
        let factor = self.store.totp(subject).await?.ok_or(Error::NotFound)?;
        if let Some(until) = factor.locked_until.filter(|until| *until > now) {
            return Ok(TotpOutcome::Locked { until });
        }
        let unix =
            u64::try_from(now.unix_timestamp()).map_err(|_| Error::invalid("clock before 1970"))?;
        // Match ignoring the last step first, so a replay is told apart from a wrong code.
        match otp::verify(&self.totp, seed, code, unix, None) {
            Some(step) if factor.last_step.is_some_and(|last| step <= last) => {
                self.fail(subject, now).await?;
                Ok(TotpOutcome::Reused)
            }
            Some(step) => {
                if self.store.claim_totp_step(subject, step).await? {
                    Ok(TotpOutcome::Accepted)
                } else {
                    // Another request claimed this step (or a later one) first.
                    self.fail(subject, now).await?;
                    Ok(TotpOutcome::Reused)
                }
            }
            None => {
                let failures = self.fail(subject, now).await?;
                if failures >= LOCK_AFTER {
                    Ok(TotpOutcome::Locked {
                        until: now + LOCK_FOR,
                    })
                } else {
                    Ok(TotpOutcome::Rejected {
                        remaining: LOCK_AFTER - failures,
                    })
                }
            }
        }
    }

    async fn fail(&self, subject: Subject, now: OffsetDateTime) -> Result<u32> {
        self.store
            .record_totp_failure(subject, now, LOCK_AFTER, LOCK_FOR)
            .await
    }
}

/// Enrolment and checking of TOTP factors, with seeds sealed (envelope encryption) in the
/// instance tenant ([`WorkspaceId::INSTANCE`]) so a database dump holds no usable seed.
pub struct TotpFactors {
    store: Arc<dyn TotpStore>,
    vault: Arc<crate::crypto::Vault>,
    gate: crate::tenancy::Gate,
    clock: Arc<dyn Clock>,
    verifier: TotpVerifier,
    issuer: String,
}

impl std::fmt::Debug for TotpFactors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TotpFactors")
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

fn subject_row(subject: Subject) -> String {
    match subject {
        Subject::User(id) => format!("user:{id}"),
        Subject::Staff(id) => format!("staff:{id}"),
    }
}

impl TotpFactors {
    /// Factors over a store and the vault, issued as `issuer` in authenticator apps.
    pub fn new(
        store: Arc<dyn TotpStore>,
        vault: Arc<crate::crypto::Vault>,
        gate: crate::tenancy::Gate,
        clock: Arc<dyn Clock>,
        issuer: impl Into<String>,
    ) -> Self {
        let verifier = TotpVerifier::new(store.clone(), clock.clone());
        Self {
            store,
            vault,
            gate,
            clock,
            verifier,
            issuer: issuer.into(),
        }
    }

    fn scope(&self, action: crate::tenancy::Action) -> Result<crate::tenancy::Scope> {
        let identity = crate::tenancy::Principal::System(crate::tenancy::SystemTask::Identity);
        Ok(self
            .gate
            .authorize(&identity, WorkspaceId::INSTANCE, action)?)
    }

    /// Enrols (or re-enrols) a factor with a fresh 160-bit seed; returns the `otpauth://` URI to
    /// show once as a QR code. The seed is stored sealed; the previous factor, if any, is replaced
    /// by a pending one, which [`Self::confirm`] activates. Callers must only re-enrol a subject
    /// with an active factor right after checking a code of it.
    ///
    /// # Errors
    /// Vault and store errors.
    pub async fn enroll(
        &self,
        subject: Subject,
        account: &str,
    ) -> Result<zeroize::Zeroizing<String>> {
        let mut seed = zeroize::Zeroizing::new(vec![0u8; 20]);
        crate::crypto::random_bytes(&mut seed);
        let row = subject_row(subject);
        let scope = self.scope(crate::tenancy::Action::SecretWrite)?;
        let context = crate::crypto::SecretContext::totp_seed(WorkspaceId::INSTANCE, &row);
        let sealed_seed = self.vault.seal(&scope, &context, &seed).await?;
        let factor = TotpFactor {
            subject,
            sealed_seed,
            last_step: None,
            failures: 0,
            locked_until: None,
            confirmed: false,
        };
        self.store.put_totp(&factor).await?;
        let uri = otp::OtpAuth {
            issuer: self.issuer.clone(),
            account: account.to_owned(),
            secret: seed,
            totp: Totp::default(),
        };
        Ok(uri.to_uri())
    }

    /// Whether `subject` has a factor, pending or confirmed.
    ///
    /// # Errors
    /// Store errors.
    pub async fn state(&self, subject: Subject) -> Result<FactorState> {
        Ok(match self.store.totp(subject).await? {
            None => FactorState::None,
            Some(factor) if factor.confirmed => FactorState::Active,
            Some(_) => FactorState::Pending,
        })
    }

    /// Checks a code against a confirmed factor (see [`TotpVerifier::verify`]).
    ///
    /// # Errors
    /// [`Error::NotFound`] without a confirmed factor; [`Error::Decrypt`] if the sealed seed does
    /// not open.
    pub async fn check(&self, subject: Subject, code: &str) -> Result<TotpOutcome> {
        self.check_factor(subject, code, true).await
    }

    /// Confirms a pending enrolment with its first code; on [`TotpOutcome::Accepted`] the
    /// factor is active from now on, and `totp.enrolled` naming the subject is in the instance
    /// tenant's audit log (people are not tenants: their security events live there, with the
    /// identity task as actor). The record is written first: an enrolment that cannot be audited
    /// stays pending and the error is returned. A confirmed factor is checked as by
    /// [`Self::check`], and nothing is recorded.
    ///
    /// # Errors
    /// [`Error::NotFound`] without a factor; vault, store and audit errors.
    pub async fn confirm(
        &self,
        subject: Subject,
        code: &str,
        audit: &dyn crate::audit::AuditStore,
    ) -> Result<TotpOutcome> {
        let outcome = self.check_factor(subject, code, false).await?;
        if outcome == TotpOutcome::Accepted {
            let mut factor = self.store.totp(subject).await?.ok_or(Error::NotFound)?;
            if !factor.confirmed {
                self.record(
                    audit,
                    subject,
                    crate::audit::AuditAction::TotpEnrolled,
                    None,
                )
                .await?;
                factor.confirmed = true;
                self.store.put_totp(&factor).await?;
            }
        }
        Ok(outcome)
    }

    /// Appends `action` about `subject` (with `after`, if any) to the instance tenant's audit
    /// log, with the identity task as actor: people are not tenants, so their security events
    /// (enrolment, recovery codes, a reused code) live there.
    ///
    /// # Errors
    /// The audit store's.
    pub async fn record(
        &self,
        audit: &dyn crate::audit::AuditStore,
        subject: Subject,
        action: crate::audit::AuditAction,
        after: Option<serde_json::Value>,
    ) -> Result<()> {
        let scope = self.scope(crate::tenancy::Action::SecretWrite)?;
        let target = match subject {
            Subject::User(id) => crate::audit::Target::user(id),
            Subject::Staff(id) => crate::audit::Target::staff(id),
        };
        let mut draft = crate::audit::AuditDraft::new(&scope, action, target);
        if let Some(after) = after {
            draft = draft.with_after(after);
        }
        audit
            .append_audit(&scope, draft, self.clock.now())
            .await
            .map(drop)
    }

    async fn check_factor(
        &self,
        subject: Subject,
        code: &str,
        confirmed_only: bool,
    ) -> Result<TotpOutcome> {
        let factor = self
            .store
            .totp(subject)
            .await?
            .filter(|factor| factor.confirmed || !confirmed_only)
            .ok_or(Error::NotFound)?;
        let row = subject_row(subject);
        let scope = self.scope(crate::tenancy::Action::SecretRead)?;
        let context = crate::crypto::SecretContext::totp_seed(WorkspaceId::INSTANCE, &row);
        let seed = self
            .vault
            .open(&scope, &context, &factor.sealed_seed)
            .await?;
        self.verifier.verify(subject, seed.expose(), code).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::memory::MemoryStore;

    const SEED: &[u8] = b"12345678901234567890";

    async fn setup() -> (Arc<MemoryStore>, Arc<ManualClock>, TotpVerifier, Subject) {
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        ));
        let subject = Subject::User(UserId::new());
        let factor = TotpFactor {
            subject,
            sealed_seed: b"sealed".to_vec(),
            last_step: None,
            failures: 0,
            locked_until: None,
            confirmed: true,
        };
        store.put_totp(&factor).await.unwrap();
        let verifier = TotpVerifier::new(store.clone(), clock.clone());
        (store, clock, verifier, subject)
    }

    fn code_now(clock: &ManualClock) -> String {
        let totp = Totp::default();
        totp.format(totp.code_at(SEED, clock.now().unix_timestamp() as u64))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_parallel_submissions_of_one_code_accept_exactly_one() {
        let (_, clock, verifier, subject) = setup().await;
        let verifier = Arc::new(verifier);
        let code = code_now(&clock);
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (verifier, code) = (verifier.clone(), code.clone());
                tokio::spawn(async move { verifier.verify(subject, SEED, &code).await.unwrap() })
            })
            .collect();
        let mut accepted = 0;
        for task in tasks {
            match task.await.unwrap() {
                TotpOutcome::Accepted => accepted += 1,
                TotpOutcome::Reused | TotpOutcome::Locked { .. } => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(accepted, 1);
    }

    #[tokio::test]
    async fn a_used_code_is_reported_as_reuse() {
        let (_, clock, verifier, subject) = setup().await;
        let code = code_now(&clock);
        assert_eq!(
            verifier.verify(subject, SEED, &code).await.unwrap(),
            TotpOutcome::Accepted
        );
        assert_eq!(
            verifier.verify(subject, SEED, &code).await.unwrap(),
            TotpOutcome::Reused
        );
        clock.advance(Duration::seconds(30));
        assert_eq!(
            verifier
                .verify(subject, SEED, &code_now(&clock))
                .await
                .unwrap(),
            TotpOutcome::Accepted
        );
    }

    #[tokio::test]
    async fn ten_consecutive_failures_lock_for_fifteen_minutes() {
        let (store, clock, verifier, subject) = setup().await;
        for n in 1..LOCK_AFTER {
            assert_eq!(
                verifier.verify(subject, SEED, "000000").await.unwrap(),
                TotpOutcome::Rejected {
                    remaining: LOCK_AFTER - n
                }
            );
        }
        let until = clock.now() + LOCK_FOR;
        assert_eq!(
            verifier.verify(subject, SEED, "000000").await.unwrap(),
            TotpOutcome::Locked { until }
        );
        // While locked even the right code is not checked.
        assert_eq!(
            verifier
                .verify(subject, SEED, &code_now(&clock))
                .await
                .unwrap(),
            TotpOutcome::Locked { until }
        );
        clock.advance(LOCK_FOR);
        assert_eq!(
            verifier
                .verify(subject, SEED, &code_now(&clock))
                .await
                .unwrap(),
            TotpOutcome::Accepted
        );
        assert_eq!(
            store.totp(subject).await.unwrap().unwrap().failures,
            0,
            "success resets the count"
        );
    }

    #[tokio::test]
    async fn enrolment_seals_the_seed_and_codes_from_the_uri_work() {
        use crate::crypto::{Kek, KeyRing, Vault};
        let store = Arc::new(MemoryStore::new());
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap(),
        ));
        let ring =
            KeyRing::new([Kek::new(1, &(0..32u8).map(|i| i ^ 0x19).collect::<Vec<_>>()).unwrap()])
                .unwrap();
        let vault = Arc::new(
            Vault::start(ring, store.clone(), clock.clone())
                .await
                .unwrap(),
        );
        let gate = crate::tenancy::Gate::new(clock.clone());
        let factors = TotpFactors::new(store.clone(), vault, gate, clock.clone(), "leadmaps");
        let subject = Subject::User(UserId::new());
        let uri = factors.enroll(subject, "alice@example.com").await.unwrap();
        let parsed = otp::OtpAuth::parse(&uri).unwrap();
        let stored = store.totp(subject).await.unwrap().unwrap();
        assert!(
            !stored
                .sealed_seed
                .windows(parsed.secret.len())
                .any(|w| w == &parsed.secret[..]),
            "sealed at rest"
        );
        let totp = Totp::default();
        let code = totp.format(totp.code_at(&parsed.secret, clock.now().unix_timestamp() as u64));
        // A pending factor is no second factor until its first code confirms it.
        assert_eq!(factors.state(subject).await.unwrap(), FactorState::Pending);
        assert_eq!(
            factors.check(subject, &code).await.unwrap_err().kind(),
            crate::ErrorKind::NotFound
        );
        assert_eq!(
            factors
                .confirm(subject, &code, store.as_ref())
                .await
                .unwrap(),
            TotpOutcome::Accepted
        );
        assert_eq!(factors.state(subject).await.unwrap(), FactorState::Active);
        clock.advance(Duration::seconds(30));
        let code = totp.format(totp.code_at(&parsed.secret, clock.now().unix_timestamp() as u64));
        assert_eq!(
            factors.check(subject, &code).await.unwrap(),
            TotpOutcome::Accepted
        );
        assert_eq!(
            factors.check(subject, &code).await.unwrap(),
            TotpOutcome::Reused
        );
        // A sealed seed copied to another subject does not open there.
        let other = Subject::User(UserId::new());
        store
            .put_totp(&TotpFactor {
                subject: other,
                confirmed: true,
                ..stored
            })
            .await
            .unwrap();
        assert_eq!(
            factors.check(other, &code).await.unwrap_err().kind(),
            crate::ErrorKind::Decrypt
        );
    }

    #[tokio::test]
    async fn unknown_subjects_are_not_found() {
        let (_, _, verifier, _) = setup().await;
        let stranger = Subject::Staff(StaffId::new());
        assert_eq!(
            verifier
                .verify(stranger, SEED, "123456")
                .await
                .unwrap_err()
                .kind(),
            crate::ErrorKind::NotFound
        );
    }
}
