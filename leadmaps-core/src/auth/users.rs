//! Customer users and their workspace memberships.

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::error::Result;
use crate::mail::Address;
use crate::tenancy::{Membership, Role, Scope, UserId};

/// A customer user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Sign-in address (unique).
    pub email: Address,
    /// Creation time.
    pub created_at: OffsetDateTime,
}

/// Storage of users and memberships.
#[async_trait]
pub trait UserStore: Send + Sync {
    /// Adds a user.
    ///
    /// # Errors
    /// [`crate::Error::Conflict`] when the address is taken.
    async fn create_user(&self, user: &User) -> Result<()>;
    /// A user by sign-in address.
    async fn user_by_email(&self, email: &Address) -> Result<Option<User>>;
    /// A user by id (where security notices go).
    async fn user(&self, id: UserId) -> Result<Option<User>>;
    /// Makes `user` a member of the scope's workspace with `role` (or changes the role), with
    /// the `member.role_changed` record sealed at `at`. Requires
    /// [`crate::tenancy::Action::MemberManage`].
    async fn set_membership(
        &self,
        scope: &Scope,
        user: UserId,
        role: Role,
        at: time::OffsetDateTime,
    ) -> Result<()>;
    /// The user's memberships, by workspace, each with its workspace's TOTP policy.
    async fn memberships(&self, user: UserId) -> Result<Vec<Membership>>;
}
