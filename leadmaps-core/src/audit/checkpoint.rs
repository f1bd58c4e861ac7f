//! Signed checkpoints: "at time T, workspace W's log ended at seq S with hash H", MACed under a
//! key derived from a KEK, so whoever can write the database but does not hold the KEK cannot
//! make one. A checkpoint that covers a record which is later missing, or names a head the
//! records no longer have, shows the log was cut back.
//!
//! # MAC (v1)
//! `mac = HMAC-SHA256(K, "leadmaps/audit-checkpoint/v1" || encoding)`, where
//! `K = Kek::derive("leadmaps/audit-checkpoint-key/v1")` of the KEK `key_id`, and the encoding is,
//! as fields (8-byte big-endian length, then the bytes): the workspace's 16 UUID bytes, seq (u64
//! big-endian), head_hash (32 bytes), at (Unix nanoseconds, i128 big-endian; whole
//! microseconds) and key_id (u32 big-endian).
//!
//! # Cadence
//! Checkpoints are written every [`CheckpointPolicy::every_records`] records or
//! [`CheckpointPolicy::every`], whichever comes first, **also when nothing happened**: an
//! unchanged head re-signed at a later time is what lets a verifier tell "nothing was written"
//! from "what was written was removed". [`CheckpointPolicy::due`] decides.

use std::collections::BTreeMap;
use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use time::{Duration, OffsetDateTime};

use super::chain::{ChainHead, Encoder, audit_time};
use crate::crypto::KeyRing;
use crate::tenancy::WorkspaceId;

/// The HKDF label of the checkpoint MAC key.
pub const CHECKPOINT_KEY_LABEL: &str = "leadmaps/audit-checkpoint-key/v1";
/// The domain label MACed in front of every checkpoint encoding.
pub const CHECKPOINT_LABEL: &[u8] = b"leadmaps/audit-checkpoint/v1";

/// A signed statement of a workspace log's head at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Checkpoint {
    /// The workspace.
    pub workspace: WorkspaceId,
    /// The last record covered; 0 for an empty log.
    pub seq: u64,
    /// That record's hash; all zeros for an empty log.
    pub head_hash: [u8; 32],
    /// When it was made (UTC, whole microseconds).
    pub at: OffsetDateTime,
    /// The KEK the MAC key was derived from.
    pub key_id: u32,
    /// HMAC-SHA256 over the other fields (see the module docs).
    pub mac: [u8; 32],
}

impl Checkpoint {
    /// The head it names.
    pub const fn head(&self) -> ChainHead {
        ChainHead {
            seq: self.seq,
            hash: self.head_hash,
        }
    }

    /// The canonical encoding of every field except `mac`.
    pub fn encoding(&self) -> Vec<u8> {
        let mut e = Encoder::new();
        e.field(self.workspace.as_uuid().as_bytes());
        e.field(&self.seq.to_be_bytes());
        e.field(&self.head_hash);
        e.time(self.at);
        e.field(&self.key_id.to_be_bytes());
        e.finish()
    }
}

/// Signs checkpoints under the primary KEK's checkpoint key and verifies them under any KEK of
/// the ring. A checkpoint signed under a KEK that has left the ring no longer verifies: keep
/// retired KEKs in the ring for as long as their checkpoints must be checked.
#[derive(Clone)]
pub struct CheckpointSigner {
    primary: u32,
    keys: BTreeMap<u32, Hmac<Sha256>>,
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("primary", &self.primary)
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl CheckpointSigner {
    /// Keys for every KEK of `ring`; new checkpoints use the primary.
    pub fn new(ring: &KeyRing) -> Self {
        let keys = ring
            .ids()
            .map(|id| {
                let key = ring
                    .get(id)
                    .expect("id from ring")
                    .derive(CHECKPOINT_KEY_LABEL);
                (
                    id,
                    <Hmac<Sha256> as KeyInit>::new_from_slice(&key[..]).expect("any key length"),
                )
            })
            .collect();
        Self {
            primary: ring.primary().id(),
            keys,
        }
    }

    /// The KEK id new checkpoints are signed under.
    pub const fn key_id(&self) -> u32 {
        self.primary
    }

    fn mac(key: &Hmac<Sha256>, checkpoint: &Checkpoint) -> [u8; 32] {
        let mut mac = key.clone();
        mac.update(CHECKPOINT_LABEL);
        mac.update(&checkpoint.encoding());
        mac.finalize().into_bytes().into()
    }

    /// A checkpoint of `workspace`'s log ending at `head`, made at `at` (truncated like record
    /// times).
    pub fn sign(&self, workspace: WorkspaceId, head: ChainHead, at: OffsetDateTime) -> Checkpoint {
        let mut checkpoint = Checkpoint {
            workspace,
            seq: head.seq,
            head_hash: head.hash,
            at: audit_time(at),
            key_id: self.primary,
            mac: [0; 32],
        };
        checkpoint.mac = Self::mac(&self.keys[&self.primary], &checkpoint);
        checkpoint
    }

    /// Whether the MAC is right, in constant time. Checkpoints under a KEK the ring does not
    /// hold never verify.
    pub fn verify(&self, checkpoint: &Checkpoint) -> bool {
        self.keys
            .get(&checkpoint.key_id)
            .is_some_and(|key| bool::from(Self::mac(key, checkpoint).ct_eq(&checkpoint.mac)))
    }
}

/// When checkpoints are due: every `every_records` records or every `every`, whichever comes
/// first. Defaults: 100 records, 5 minutes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    /// Records between checkpoints (at least 1).
    pub every_records: u64,
    /// Time between checkpoints, also when no record was written.
    pub every: Duration,
}

impl Default for CheckpointPolicy {
    fn default() -> Self {
        Self {
            every_records: 100,
            every: Duration::minutes(5),
        }
    }
}

impl CheckpointPolicy {
    /// Whether a checkpoint is due now: there is none yet, or `records_since` records were
    /// appended after `last`, or `every` has passed since it.
    pub fn due(&self, last: Option<&Checkpoint>, records_since: u64, now: OffsetDateTime) -> bool {
        match last {
            None => true,
            Some(last) => records_since >= self.every_records.max(1) || now - last.at >= self.every,
        }
    }

    /// The longest gap between checkpoints a verifier accepts: twice [`CheckpointPolicy::every`],
    /// so one late or missed run of the writer is not an alarm.
    pub fn max_gap(&self) -> Duration {
        self.every * 2
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::Kek;

    fn ring(ids: &[(u32, u8)]) -> KeyRing {
        KeyRing::new(ids.iter().map(|(id, seed)| {
            Kek::new(*id, &(0..32u8).map(|i| i ^ seed).collect::<Vec<_>>()).unwrap()
        }))
        .unwrap()
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000) + Duration::nanoseconds(999)
    }

    #[test]
    fn checkpoints_verify_and_every_field_is_covered() {
        let signer = CheckpointSigner::new(&ring(&[(1, 1)]));
        let ws = WorkspaceId::new();
        let cp = signer.sign(
            ws,
            ChainHead {
                seq: 7,
                hash: [3; 32],
            },
            now(),
        );
        assert_eq!((cp.key_id, cp.at.nanosecond() % 1_000), (1, 0));
        assert!(signer.verify(&cp));
        let edits: [fn(&mut Checkpoint); 6] = [
            |c| c.workspace = WorkspaceId::new(),
            |c| c.seq += 1,
            |c| c.head_hash[0] ^= 1,
            |c| c.at += Duration::microseconds(1),
            |c| c.key_id = 2,
            |c| c.mac[5] ^= 1,
        ];
        for edit in edits {
            let mut forged = cp;
            edit(&mut forged);
            assert!(!signer.verify(&forged), "{forged:?}");
        }
        let empty = signer.sign(ws, ChainHead::GENESIS, now());
        assert!(signer.verify(&empty));
        assert_eq!(empty.seq, 0);
    }

    #[test]
    fn checkpoints_follow_the_kek_they_were_made_under() {
        let old = CheckpointSigner::new(&ring(&[(1, 1)]));
        let cp = old.sign(WorkspaceId::new(), ChainHead::GENESIS, now());
        let both = CheckpointSigner::new(&ring(&[(1, 1), (2, 2)]));
        assert!(both.verify(&cp), "old checkpoints verify during rotation");
        assert_eq!(both.sign(cp.workspace, cp.head(), now()).key_id, 2);
        assert!(!CheckpointSigner::new(&ring(&[(2, 2)])).verify(&cp));
        assert!(
            !CheckpointSigner::new(&ring(&[(1, 9)])).verify(&cp),
            "a checkpoint is unforgeable without the KEK"
        );
        // The checkpoint key is not the token-digest key of the same KEK.
        let digest = crate::auth::tokens::TokenHasher::new(&ring(&[(1, 1)])).digest(b"x");
        assert_ne!(digest.mac, cp.mac);
        assert!(!format!("{both:?}").contains("key:"));
    }

    #[test]
    fn due_every_n_records_or_t_minutes_even_when_idle() {
        let policy = CheckpointPolicy::default();
        assert_eq!(
            (policy.every_records, policy.every),
            (100, Duration::minutes(5))
        );
        let signer = CheckpointSigner::new(&ring(&[(1, 1)]));
        let last = signer.sign(WorkspaceId::new(), ChainHead::GENESIS, now());
        assert!(policy.due(None, 0, now()), "the first one");
        assert!(!policy.due(Some(&last), 0, now()));
        assert!(!policy.due(Some(&last), 99, now() + Duration::minutes(4)));
        assert!(policy.due(Some(&last), 100, now()));
        assert!(
            policy.due(Some(&last), 0, now() + Duration::minutes(5)),
            "idle logs get checkpoints too"
        );
        let custom = CheckpointPolicy {
            every_records: 0,
            every: Duration::minutes(1),
        };
        assert!(
            custom.due(Some(&last), 1, now()),
            "0 records means every record"
        );
        assert!(!custom.due(Some(&last), 0, now()));
        assert_eq!(custom.max_gap(), Duration::minutes(2));
    }
}
