//! The staff realm: separate identities, a second factor on every request, and step-up grants.
//!
//! A staff session that has not passed a second factor is worth nothing: [`staff_principal`]
//! refuses it, so a magic link alone never reaches anything. Sensitive actions additionally need
//! a step-up grant: a fresh second factor buys one grant for one named action, valid 10 minutes,
//! consumed by its first use.

use std::sync::Arc;

use async_trait::async_trait;
use time::{Duration, OffsetDateTime};

use super::session::Session;
use super::totp::Subject;
use crate::clock::Clock;
use crate::error::Result;
use crate::mail::Address;
use crate::tenancy::{Denied, ImpersonationGrant, Principal, StaffId};

/// A leadmaps staff member: an identity apart from customer users (a staff address that is also
/// a customer's signs in to each realm separately, with separate sessions).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaffMember {
    /// Id.
    pub id: StaffId,
    /// Sign-in address (unique among staff).
    pub email: Address,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// Storage of staff identities.
#[async_trait]
pub trait StaffStore: Send + Sync {
    /// Adds a staff member. [`crate::Error::Conflict`] if the id or address exists.
    async fn create_staff(&self, staff: &StaffMember) -> Result<()>;
    /// A staff member by address.
    async fn staff_by_email(&self, email: &Address) -> Result<Option<StaffMember>>;
    /// A staff member by id.
    async fn staff(&self, id: StaffId) -> Result<Option<StaffMember>>;
    /// Every staff member, oldest first (ties by id): what `server verify` walks to show each
    /// has a second factor.
    async fn list_staff(&self) -> Result<Vec<StaffMember>>;
}

/// How long a step-up grant lasts.
pub const STEP_UP_TTL: Duration = Duration::minutes(10);

/// Staff actions that need a step-up grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum SensitiveAction {
    /// Opening an impersonation grant on a customer workspace.
    StartImpersonation,
    /// Rotating or rewrapping keys.
    RotateKeys,
    /// Closing a breach incident.
    CloseIncident,
    /// Changing another staff member's access.
    ManageStaff,
}

impl SensitiveAction {
    /// Stable name for storage.
    pub const fn as_str(self) -> &'static str {
        match self {
            SensitiveAction::StartImpersonation => "impersonation.start",
            SensitiveAction::RotateKeys => "keys.rotate",
            SensitiveAction::CloseIncident => "incident.close",
            SensitiveAction::ManageStaff => "staff.manage",
        }
    }
}

/// The principal of a staff request. Refuses customer sessions and staff sessions without a
/// second factor.
///
/// # Errors
/// [`Denied::StaffNeedsGrant`].
pub fn staff_principal(
    session: &Session,
    grant: Option<ImpersonationGrant>,
) -> Result<Principal, Denied> {
    match session.subject {
        Subject::Staff(staff) if session.second_factor => Ok(Principal::Staff {
            staff,
            mfa: true,
            grant,
        }),
        _ => Err(Denied::StaffNeedsGrant),
    }
}

/// Storage of step-up grants. `take` MUST be atomic: a grant is used once.
#[async_trait]
pub trait StepUpStore: Send + Sync {
    /// Records a grant for `staff` to do `action` until `expires_at`.
    async fn grant_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        expires_at: OffsetDateTime,
    ) -> Result<()>;
    /// Consumes a live grant; whether there was one.
    async fn take_step_up(
        &self,
        staff: StaffId,
        action: SensitiveAction,
        now: OffsetDateTime,
    ) -> Result<bool>;
}

/// Issues and spends step-up grants.
pub struct StepUp {
    store: Arc<dyn StepUpStore>,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for StepUp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StepUp").finish_non_exhaustive()
    }
}

impl StepUp {
    /// The service.
    pub fn new(store: Arc<dyn StepUpStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Grants one `action` for 10 minutes. Call only right after a second factor was checked
    /// (a TOTP code accepted in this request).
    ///
    /// # Errors
    /// Store errors.
    pub async fn grant(&self, staff: StaffId, action: SensitiveAction) -> Result<()> {
        self.store
            .grant_step_up(staff, action, self.clock.now() + STEP_UP_TTL)
            .await
    }

    /// Spends the grant for `action`.
    ///
    /// # Errors
    /// [`crate::Error::Denied`] when there is no live grant.
    pub async fn spend(&self, staff: StaffId, action: SensitiveAction) -> Result<()> {
        if self
            .store
            .take_step_up(staff, action, self.clock.now())
            .await?
        {
            Ok(())
        } else {
            Err(Denied::ActionNotPermitted.into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::memory::MemoryStore;
    use crate::tenancy::UserId;

    fn session(subject: Subject, second_factor: bool) -> Session {
        Session {
            selector: "s".into(),
            subject,
            second_factor,
            expires_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn staff_requests_need_a_second_factor_and_customers_are_not_staff() {
        let staff = StaffId::new();
        assert_eq!(
            staff_principal(&session(Subject::Staff(staff), false), None),
            Err(Denied::StaffNeedsGrant),
            "a magic link alone"
        );
        assert_eq!(
            staff_principal(&session(Subject::User(UserId::new()), true), None),
            Err(Denied::StaffNeedsGrant)
        );
        assert_eq!(
            staff_principal(&session(Subject::Staff(staff), true), None),
            Ok(Principal::Staff {
                staff,
                mfa: true,
                grant: None
            })
        );
    }

    #[tokio::test]
    async fn a_step_up_grant_is_single_use_single_action_and_expires() {
        let clock = Arc::new(ManualClock::new(
            OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap(),
        ));
        let step_up = StepUp::new(Arc::new(MemoryStore::new()), clock.clone());
        let staff = StaffId::new();
        assert!(
            step_up
                .spend(staff, SensitiveAction::RotateKeys)
                .await
                .is_err(),
            "nothing granted"
        );
        step_up
            .grant(staff, SensitiveAction::RotateKeys)
            .await
            .unwrap();
        assert!(
            step_up
                .spend(staff, SensitiveAction::CloseIncident)
                .await
                .is_err(),
            "another action"
        );
        assert!(
            step_up
                .spend(StaffId::new(), SensitiveAction::RotateKeys)
                .await
                .is_err(),
            "another person"
        );
        step_up
            .spend(staff, SensitiveAction::RotateKeys)
            .await
            .unwrap();
        assert!(
            step_up
                .spend(staff, SensitiveAction::RotateKeys)
                .await
                .is_err(),
            "single use"
        );
        step_up
            .grant(staff, SensitiveAction::StartImpersonation)
            .await
            .unwrap();
        clock.advance(STEP_UP_TTL);
        assert!(
            step_up
                .spend(staff, SensitiveAction::StartImpersonation)
                .await
                .is_err(),
            "10 minutes"
        );
    }
}
