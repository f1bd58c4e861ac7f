//! Delivery records: the notifier's claim on sending one step of one obligation, so a step is
//! sent once across restarts and instances.
//!
//! The notifier claims `(obligation, step)` in the store before it calls the mailer and
//! completes the claim after. A claim holds a lease: if the process dies between claim and
//! completion, the lease runs out and the next run takes the claim over and sends again. That
//! makes delivery **at least once**, never silently lost; the window for a duplicate is a crash
//! between the mailer accepting a message and the completion committing, and every message of a
//! step carries the same idempotency key, so a mailer that honours keys sends it once anyway.

use serde::Serialize;
use time::OffsetDateTime;
use uuid::Uuid;

use super::engine::Step;
use super::incident::{IncidentId, ObligationId};
use crate::error::{Error, Result};

/// Longest step name, in bytes.
pub const MAX_STEP: usize = 64;

/// What is delivered: one step of one obligation.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct DeliveryKey {
    /// The incident.
    pub incident: IncidentId,
    /// The obligation.
    pub obligation: ObligationId,
    /// The step ([`Step::key`]).
    pub step: String,
}

impl DeliveryKey {
    /// The key of `step` of `obligation`.
    pub fn new(incident: IncidentId, obligation: ObligationId, step: Step) -> Self {
        Self {
            incident,
            obligation,
            step: step.key(),
        }
    }

    /// Checks the step name: 1 to [`MAX_STEP`] bytes of `a-z`, `0-9` and `-`.
    ///
    /// # Errors
    /// [`Error::Invalid`].
    pub fn validate(&self) -> Result<()> {
        if self.step.is_empty()
            || self.step.len() > MAX_STEP
            || !self
                .step
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        {
            return Err(Error::invalid(
                "a delivery step is 1 to 64 of a-z, 0-9 and -",
            ));
        }
        Ok(())
    }

    /// `<obligation>/<step>`: the idempotency key of the step's messages (with the recipient's
    /// position appended).
    pub fn name(&self) -> String {
        format!("{}/{}", self.obligation, self.step)
    }
}

/// A live claim on a delivery: whoever holds it sends, then completes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// What it claims.
    pub key: DeliveryKey,
    /// A fresh random token per claim: completing needs it, so a claim taken over after its
    /// lease ran out cannot be completed by the old holder.
    pub token: Uuid,
    /// The claim may be taken over from this instant.
    pub until: OffsetDateTime,
    /// 1 for the first claim, then one more with each take-over.
    pub attempt: u32,
}

/// What claiming a delivery found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller holds it now: send, then complete.
    Claimed(Lease),
    /// It was sent already.
    Sent {
        /// When.
        at: OffsetDateTime,
    },
    /// Someone else holds a live claim.
    Busy {
        /// Until when.
        until: OffsetDateTime,
    },
}

/// A delivery as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// What.
    pub key: DeliveryKey,
    /// How many claims it took.
    pub attempts: u32,
    /// When it was first claimed.
    #[serde(with = "time::serde::rfc3339")]
    pub claimed_at: OffsetDateTime,
    /// When it was sent, once it was.
    #[serde(with = "time::serde::rfc3339::option")]
    pub sent_at: Option<OffsetDateTime>,
}
