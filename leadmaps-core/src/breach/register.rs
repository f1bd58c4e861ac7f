//! The register of GDPR Art. 33(5): every incident and every change to it, one hash chain for
//! the instance.
//!
//! Each entry holds the whole incident as it stood after the change (so the register alone
//! documents the facts, effects and remedial action), what kind of change it was, who made it
//! and when. It is chained like the audit log ([`crate::audit`]): the entry's hash covers a
//! canonical encoding of its fields and the previous entry's hash.
//!
//! # Encoding (v1)
//! Fields written as in the audit chain (8-byte big-endian length, then the bytes):
//! seq (u64 BE), at (Unix nanoseconds, i128 BE, whole microseconds), incident id (16 bytes),
//! actor (`staff:<uuid>` or `system:<task>`), change (its dotted name), the incident snapshot as
//! [`canonical_json`], prev_hash (32 bytes).
//! `hash = SHA-256("leadmaps/breach-register/v1" || encoding)`.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::incident::{Incident, IncidentId, actor_name};
use crate::audit::{ChainHead, Encoder, GENESIS_HASH, audit_time, canonical_json};
use crate::error::{Error, Result};
use crate::tenancy::{BreachActor, BreachScope};

/// The domain label hashed in front of every entry encoding.
pub const REGISTER_LABEL: &[u8] = b"leadmaps/breach-register/v1";

/// What kind of change an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Change {
    /// The incident was opened.
    Opened,
    /// Severity, assessment, workspaces or data sets changed (obligations recomputed).
    Reassessed,
    /// The Art. 33(3) details changed.
    DetailsUpdated,
    /// The status moved forward.
    StatusChanged,
    /// An obligation was acknowledged done (an authority filing adds a phase).
    ObligationDone,
    /// The reason for a delay was stated.
    LateReasonStated,
    /// The notifier sent an automatic notice.
    NotificationSent,
    /// The incident was closed.
    Closed,
}

impl Change {
    /// Every kind.
    pub const ALL: [Change; 8] = [
        Change::Opened,
        Change::Reassessed,
        Change::DetailsUpdated,
        Change::StatusChanged,
        Change::ObligationDone,
        Change::LateReasonStated,
        Change::NotificationSent,
        Change::Closed,
    ];

    /// The stable dotted name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Change::Opened => "incident.opened",
            Change::Reassessed => "incident.reassessed",
            Change::DetailsUpdated => "incident.details_updated",
            Change::StatusChanged => "incident.status_changed",
            Change::ObligationDone => "obligation.done",
            Change::LateReasonStated => "obligation.late_reason",
            Change::NotificationSent => "notification.sent",
            Change::Closed => "incident.closed",
        }
    }

    /// Parses [`Change::as_str`].
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }
}

/// One register entry as stored.
#[derive(Debug, Clone, PartialEq)]
pub struct RegisterEntry {
    /// Position in the register, from 1, without gaps.
    pub seq: u64,
    /// When (the incident's `updated_at`), whole microseconds.
    pub at: OffsetDateTime,
    /// The incident.
    pub incident: IncidentId,
    /// Who made the change (the scope's holder).
    pub actor: BreachActor,
    /// What kind of change.
    pub change: Change,
    /// The incident after the change, as JSON.
    pub snapshot: Value,
    /// The previous entry's hash; zeros for the first.
    pub prev_hash: [u8; 32],
    /// SHA-256 over the entry's encoding.
    pub hash: [u8; 32],
}

impl RegisterEntry {
    /// This entry as a chain head.
    pub const fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.hash,
        }
    }

    /// The incident as recorded.
    ///
    /// # Errors
    /// [`Error::Invalid`] when the snapshot is not an incident.
    pub fn incident(&self) -> Result<Incident> {
        serde_json::from_value(self.snapshot.clone())
            .map_err(|_| Error::invalid("a register snapshot is not an incident"))
    }
}

/// The canonical encoding of every field of `entry` but `hash`.
pub fn entry_encoding(entry: &RegisterEntry) -> Vec<u8> {
    let mut e = Encoder::new();
    e.field(&entry.seq.to_be_bytes());
    e.time(entry.at);
    e.field(entry.incident.as_uuid().as_bytes());
    e.field(actor_name(entry.actor).as_bytes());
    e.field(entry.change.as_str().as_bytes());
    e.field(&canonical_json(&entry.snapshot));
    e.field(&entry.prev_hash);
    e.finish()
}

/// `SHA-256(REGISTER_LABEL || entry_encoding(entry))`.
pub fn entry_hash(entry: &RegisterEntry) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(REGISTER_LABEL);
    hasher.update(entry_encoding(entry));
    hasher.finalize().into()
}

/// Seals the entry that follows `head` for `incident` as it stands after `change` by the holder
/// of `scope`, at the incident's `updated_at`. Stores call it while holding whatever makes "read
/// the head, append" atomic.
///
/// # Errors
/// [`Error::Invalid`] once seq would overflow.
pub fn seal_entry(
    head: ChainHead,
    scope: &BreachScope,
    change: Change,
    incident: &Incident,
) -> Result<RegisterEntry> {
    let seq = head
        .seq
        .checked_add(1)
        .ok_or_else(|| Error::invalid("register sequence exhausted"))?;
    let snapshot = serde_json::to_value(incident)
        .map_err(|_| Error::invalid("an incident did not serialise"))?;
    let mut entry = RegisterEntry {
        seq,
        at: audit_time(incident.updated_at),
        incident: incident.id,
        actor: scope.actor(),
        change,
        snapshot,
        prev_hash: head.hash,
        hash: [0; 32],
    };
    entry.hash = entry_hash(&entry);
    Ok(entry)
}

/// The first thing wrong with a register.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegisterProblem {
    /// A seq is missing or out of order.
    #[error("entry {seq}: expected seq {expected}")]
    Gap {
        /// The seq found.
        seq: u64,
        /// The seq expected.
        expected: u64,
    },
    /// An entry's hash does not match its fields.
    #[error("entry {seq}: hash does not match its contents")]
    BadHash {
        /// The entry.
        seq: u64,
    },
    /// An entry is not chained to the one before.
    #[error("entry {seq}: not chained to the previous entry")]
    BrokenChain {
        /// The entry.
        seq: u64,
    },
    /// An entry's snapshot does not read as its incident.
    #[error("entry {seq}: the snapshot is not the entry's incident")]
    BadSnapshot {
        /// The entry.
        seq: u64,
    },
    /// An incident's awareness time moved, or its versions do not follow each other.
    #[error("entry {seq}: the incident's awareness time moved or its version skipped")]
    Rewritten {
        /// The entry.
        seq: u64,
    },
}

/// Walks a whole register from seq 1: seqs without gaps, every hash, every link, every snapshot
/// its incident, each incident opened once at version 1 and then following its versions, and
/// its awareness time never moving.
///
/// # Errors
/// The first [`RegisterProblem`].
pub fn verify_register(entries: &[RegisterEntry]) -> Result<(), RegisterProblem> {
    let mut prev = GENESIS_HASH;
    let mut seen: std::collections::HashMap<IncidentId, (u64, OffsetDateTime)> =
        std::collections::HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let expected = i as u64 + 1;
        let seq = entry.seq;
        if seq != expected {
            return Err(RegisterProblem::Gap { seq, expected });
        }
        if entry_hash(entry) != entry.hash {
            return Err(RegisterProblem::BadHash { seq });
        }
        if entry.prev_hash != prev {
            return Err(RegisterProblem::BrokenChain { seq });
        }
        let incident = entry
            .incident()
            .ok()
            .filter(|i| i.id == entry.incident)
            .ok_or(RegisterProblem::BadSnapshot { seq })?;
        let follows = match seen.get(&incident.id) {
            None => entry.change == Change::Opened && incident.version == 1,
            Some((version, aware_at)) => {
                entry.change != Change::Opened
                    && incident.version == version + 1
                    && incident.aware_at == *aware_at
            }
        };
        if !follows {
            return Err(RegisterProblem::Rewritten { seq });
        }
        seen.insert(incident.id, (incident.version, incident.aware_at));
        prev = entry.hash;
    }
    Ok(())
}
