//! Proving who is asking, without passwords: one-time codes, and (in their modules) magic links,
//! sessions, recovery codes, API keys and the staff realm.

pub mod impersonation;
pub mod keys;
pub mod otp;
pub mod recovery;
pub mod session;
pub mod staff;
pub mod tokens;
pub mod totp;
pub mod users;

/// Every auth store trait, for `Arc<dyn AuthStore>`.
pub trait AuthStore:
    totp::TotpStore + session::SessionStore + staff::StepUpStore + recovery::RecoveryStore
{
}

impl<
    T: totp::TotpStore + session::SessionStore + staff::StepUpStore + recovery::RecoveryStore + ?Sized,
> AuthStore for T
{
}

/// Users, memberships, staff and API keys, for `Arc<dyn IdentityStore>`.
pub trait IdentityStore: users::UserStore + keys::ApiKeyStore + staff::StaffStore {}

impl<T: users::UserStore + keys::ApiKeyStore + staff::StaffStore + ?Sized> IdentityStore for T {}
