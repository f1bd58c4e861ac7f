//! The assertion-id replay cache: a bearer assertion is good for one login only.
//!
//! [`SamlSp::consume`](crate::SamlSp::consume) records each accepted assertion's id (with its
//! issuer) until the moment the assertion would be refused as expired anyway
//! (`NotOnOrAfter` plus [`CLOCK_SKEW`](crate::CLOCK_SKEW)); a second use inside that window is
//! [`SamlError::Replayed`]. Past it, the entry can go: the time checks refuse the assertion.
//!
//! [`MemoryReplayCache`] keeps the ids in this process. That is enough for one instance; **a
//! deployment with several instances behind a load balancer needs one shared cache** (the
//! database or Redis, implementing [`ReplayCache`]), or an assertion refused here could still be
//! replayed against the instance next door.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use time::OffsetDateTime;

use crate::SamlError;

/// What a [`ReplayCache`] found when recording an assertion id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayVerdict {
    /// First use: the id is now recorded.
    Fresh,
    /// The id was recorded before and has not expired: refuse the assertion.
    Replayed,
}

/// Remembers accepted assertion ids until they expire.
///
/// Dyn-safe and async so that a shared, persistent implementation (a table, Redis `SET NX PX`)
/// can come later; [`MemoryReplayCache`] is the in-process one.
#[async_trait]
pub trait ReplayCache: Send + Sync {
    /// Records that the assertion `assertion_id` from the IdP `issuer` is being used, to be
    /// remembered until `until`.
    ///
    /// MUST be atomic: of any number of concurrent calls with the same `(issuer, assertion_id)`,
    /// exactly one returns [`ReplayVerdict::Fresh`]. An entry whose `until` is at or before `now`
    /// counts as absent and may be evicted.
    ///
    /// # Errors
    ///
    /// [`SamlError::ReplayCache`] when the id could not be recorded (backend down, cache full).
    /// The caller then refuses the login: failing open would allow replays.
    async fn record(
        &self,
        issuer: &str,
        assertion_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<ReplayVerdict, SamlError>;
}

/// The default bound on [`MemoryReplayCache`]'s live entries.
pub const DEFAULT_REPLAY_CAPACITY: usize = 100_000;

type Key = (String, String);

/// An in-process [`ReplayCache`]: ids in a map, evicted once expired, with a bound on the number
/// of live entries. One instance only (see the [module docs](self)).
pub struct MemoryReplayCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    until: HashMap<Key, OffsetDateTime>,
    by_expiry: BTreeSet<(OffsetDateTime, Key)>,
}

impl Inner {
    fn evict_expired(&mut self, now: OffsetDateTime) {
        while let Some(first) = self.by_expiry.first() {
            if first.0 > now {
                break;
            }
            let (_, key) = self.by_expiry.pop_first().expect("first exists");
            self.until.remove(&key);
        }
    }
}

impl MemoryReplayCache {
    /// An empty cache holding at most [`DEFAULT_REPLAY_CAPACITY`] live entries.
    pub fn new() -> Self {
        Self::with_capacity(DEFAULT_REPLAY_CAPACITY)
    }

    /// An empty cache holding at most `capacity` live entries; when full of unexpired entries,
    /// [`record`](ReplayCache::record) fails (and the login is refused) rather than forgetting.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            capacity,
        }
    }

    /// How many entries are held (expired ones included until the next eviction).
    pub fn len(&self) -> usize {
        self.inner.lock().expect("replay cache lock").until.len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry that has expired at `now`. [`record`](ReplayCache::record) does this
    /// too, so calling it is optional.
    pub fn evict_expired(&self, now: OffsetDateTime) {
        self.inner
            .lock()
            .expect("replay cache lock")
            .evict_expired(now);
    }
}

impl Default for MemoryReplayCache {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for MemoryReplayCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryReplayCache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The in-memory cache is full of unexpired entries.
#[derive(Debug, thiserror::Error)]
#[error("replay cache full")]
struct CacheFull;

#[async_trait]
impl ReplayCache for MemoryReplayCache {
    async fn record(
        &self,
        issuer: &str,
        assertion_id: &str,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<ReplayVerdict, SamlError> {
        let mut inner = self.inner.lock().expect("replay cache lock");
        inner.evict_expired(now);
        let key = (issuer.to_owned(), assertion_id.to_owned());
        if inner.until.contains_key(&key) {
            return Ok(ReplayVerdict::Replayed);
        }
        if until <= now {
            // Already expired: nothing to remember (the time checks refuse such an assertion).
            return Ok(ReplayVerdict::Fresh);
        }
        if inner.until.len() >= self.capacity {
            return Err(SamlError::replay_cache(CacheFull));
        }
        inner.by_expiry.insert((until, key.clone()));
        inner.until.insert(key, until);
        Ok(ReplayVerdict::Fresh)
    }
}
