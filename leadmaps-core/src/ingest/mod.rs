//! Event ingestion: what the collector accepts, how it strips personal data, and how batches
//! reach the store durably.
//!
//! The flow: [`event::parse`] (wire format and limits) -> site routing and region check ->
//! [`bot::BotFilter`] -> the gate (a collector [`Scope`] per workspace) -> the visitor hash under
//! the daily salt ([`privacy`]) -> the [`batcher`] (group commit) -> [`crate::store::EventSink`].
//! IP addresses and user agents are inputs to the hash and the filter and go nowhere else.

pub mod batcher;
pub mod bot;
mod collector;
pub mod event;
pub mod limits;
pub mod privacy;

pub use collector::{ClientInfo, CollectError, Collector, CollectorConfig, IngestStats, Outcome};
pub use event::{Event, EventId, Incoming, RejectReason, Revenue, VisitorId};

use time::Date;

use crate::error::{Error, Result};
use crate::tenancy::{Action, Denied, Region, Scope};

/// What the sink did with one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Stored now.
    Accepted,
    /// The workspace already had this event id; nothing stored.
    Duplicate,
}

/// A batch for one region's sink. Events of a workspace in another region cannot be added, so a
/// sink is never handed one.
#[derive(Debug, Clone)]
pub struct EventBatch {
    region: Region,
    events: Vec<(Scope, Event)>,
    drops: Vec<(Scope, Date, RejectReason, u64)>,
}

impl EventBatch {
    /// An empty batch for `region`.
    pub fn new(region: Region) -> Self {
        Self {
            region,
            events: Vec::new(),
            drops: Vec::new(),
        }
    }

    /// The batch's region.
    pub fn region(&self) -> Region {
        self.region
    }

    fn check(&self, workspace_region: Region, scope: &Scope) -> Result<()> {
        if workspace_region != self.region {
            return Err(Error::invalid("event of a workspace in another region"));
        }
        scope.require(Action::EventIngest)?;
        Ok(())
    }

    /// Adds an event of a workspace in `workspace_region`, under a collector scope.
    ///
    /// # Errors
    /// [`Error::Invalid`] for another region; [`Error::Denied`] for a scope that is not an
    /// ingest scope of the event's workspace.
    pub fn push(&mut self, workspace_region: Region, scope: Scope, event: Event) -> Result<()> {
        self.check(workspace_region, &scope)?;
        if scope.workspace() != event.workspace {
            return Err(Denied::WrongScope.into());
        }
        self.events.push((scope, event));
        Ok(())
    }

    /// Counts filtered events of a workspace for a day.
    ///
    /// # Errors
    /// As [`EventBatch::push`].
    pub fn push_drop(
        &mut self,
        workspace_region: Region,
        scope: Scope,
        day: Date,
        reason: RejectReason,
        count: u64,
    ) -> Result<()> {
        self.check(workspace_region, &scope)?;
        match self
            .drops
            .iter_mut()
            .find(|(s, d, r, _)| s.workspace() == scope.workspace() && *d == day && *r == reason)
        {
            Some(entry) => entry.3 += count,
            None => self.drops.push((scope, day, reason, count)),
        }
        Ok(())
    }

    /// Moves everything from `other` (same region) into this batch.
    pub fn append(&mut self, other: EventBatch) {
        debug_assert_eq!(self.region, other.region);
        self.events.extend(other.events);
        for (scope, day, reason, count) in other.drops {
            let region = self.region;
            let _ = self.push_drop(region, scope, day, reason, count);
        }
    }

    /// The events, in order.
    pub fn events(&self) -> &[(Scope, Event)] {
        &self.events
    }

    /// Drop counts: scope, day, reason, count.
    pub fn drops(&self) -> &[(Scope, Date, RejectReason, u64)] {
        &self.drops
    }

    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.drops.is_empty()
    }
}
