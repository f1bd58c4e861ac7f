//! The per-workspace hash chain: one canonical encoding of a record, its hash, and [`seal`], the
//! one way every store turns a draft into the next record.
//!
//! # Encoding (v1)
//! A record's encoding is its fields in this order, each written as a **field**: an 8-byte
//! big-endian length, then that many bytes. An optional value is one byte `0x00` when absent,
//! or `0x01` followed by the field when present.
//!
//! | # | field | bytes |
//! |---|-------|-------|
//! | 1 | id | the 16 UUID bytes |
//! | 2 | workspace | the 16 UUID bytes |
//! | 3 | seq | u64, big-endian |
//! | 4 | at | Unix time in nanoseconds, i128 big-endian (records hold whole microseconds) |
//! | 5 | actor kind | UTF-8 ([`super::AuditActor::kind`]) |
//! | 6 | actor subject | UTF-8 ([`super::AuditActor::subject`]) |
//! | 7 | actor grant | optional; the 16 UUID bytes |
//! | 8 | action | UTF-8 dotted name |
//! | 9 | target kind | UTF-8 |
//! | 10 | target id | UTF-8 |
//! | 11 | before | optional; canonical JSON |
//! | 12 | after | optional; canonical JSON |
//! | 13 | patch | canonical JSON of the RFC 6902 array |
//! | 14 | request id | optional; UTF-8 |
//! | 15 | prev_hash | 32 bytes |
//!
//! `hash = SHA-256("leadmaps/audit-record/v1" || encoding)`. Everything but `hash` is covered,
//! including `prev_hash`, so changing, removing, reordering or inserting a record breaks the
//! chain from there on. The first record of a workspace has `prev_hash` all zeros.
//!
//! **Canonical JSON** ([`canonical_json`]) is JSON text without whitespace, object members
//! sorted by the UTF-8 bytes of their keys (by the encoder, whatever order the map keeps; so the
//! hash does not depend on serde_json's `preserve_order` feature), strings with `"` and `\`
//! escaped as `\"` and `\\`, U+0000 to U+001F as `\u00xx` (lower-case hex) and every other
//! character as its UTF-8 bytes, and numbers as serde_json writes them (integers in decimal,
//! floats in ryu's shortest round-trip form). A store may keep JSON in any form that reads back
//! as the same `serde_json::Value`.

use serde_json::Value;
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset};

use super::patch::{PatchOp, diff};
use super::record::{AuditDraft, AuditId, AuditRecord, validate_request_id};
use crate::error::{Error, Result};
use crate::tenancy::{Denied, WorkspaceId};

/// The domain label hashed in front of every record encoding.
pub const RECORD_LABEL: &[u8] = b"leadmaps/audit-record/v1";

/// The `prev_hash` of a workspace's first record.
pub const GENESIS_HASH: [u8; 32] = [0; 32];

/// Largest canonical JSON of a record's before, after or patch, in bytes.
pub const MAX_AUDIT_JSON: usize = 256 * 1024;

/// The end of a chain: the last record's seq and hash, or [`ChainHead::GENESIS`] for an empty
/// log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ChainHead {
    /// The last record's seq; 0 for an empty log.
    pub seq: u64,
    /// The last record's hash; [`GENESIS_HASH`] for an empty log.
    pub hash: [u8; 32],
}

impl ChainHead {
    /// The head of an empty log.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        hash: GENESIS_HASH,
    };
}

/// An audit time as records and checkpoints hold it: UTC, truncated to whole microseconds (what
/// every store keeps exactly, so the hash survives a round trip).
pub fn audit_time(at: OffsetDateTime) -> OffsetDateTime {
    let at = at.to_offset(UtcOffset::UTC);
    at.replace_nanosecond(at.nanosecond() / 1_000 * 1_000)
        .expect("a truncated nanosecond is in range")
}

/// Writes length-prefixed fields.
pub(crate) struct Encoder(Vec<u8>);

impl Encoder {
    pub(crate) fn new() -> Self {
        Self(Vec::with_capacity(512))
    }

    pub(crate) fn field(&mut self, bytes: &[u8]) {
        self.0
            .extend_from_slice(&(bytes.len() as u64).to_be_bytes());
        self.0.extend_from_slice(bytes);
    }

    pub(crate) fn optional(&mut self, bytes: Option<&[u8]>) {
        match bytes {
            None => self.0.push(0),
            Some(bytes) => {
                self.0.push(1);
                self.field(bytes);
            }
        }
    }

    pub(crate) fn time(&mut self, at: OffsetDateTime) {
        self.field(&at.unix_timestamp_nanos().to_be_bytes());
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.0
    }
}

/// The canonical JSON text of a value (see the module docs).
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_json(value, &mut out);
    out
}

fn write_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => out.extend_from_slice(n.to_string().as_bytes()),
        Value::String(s) => write_string(s, out),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(item, out);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (i, (key, value)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(key, out);
                out.push(b':');
                write_json(value, out);
            }
            out.push(b'}');
        }
    }
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in s.as_bytes() {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x00..=0x1f => out.extend_from_slice(&[
                b'\\',
                b'u',
                b'0',
                b'0',
                HEX[usize::from(b >> 4)],
                HEX[usize::from(b & 0xf)],
            ]),
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

fn patch_json(patch: &[PatchOp]) -> Vec<u8> {
    canonical_json(&serde_json::to_value(patch).expect("a patch serialises"))
}

/// The canonical encoding of every field of `record` except `hash` (see the module docs).
pub fn record_encoding(record: &AuditRecord) -> Vec<u8> {
    let mut e = Encoder::new();
    e.field(record.id.as_uuid().as_bytes());
    e.field(record.workspace.as_uuid().as_bytes());
    e.field(&record.seq.to_be_bytes());
    e.time(record.at);
    e.field(record.actor.kind().as_bytes());
    e.field(record.actor.subject().as_bytes());
    e.optional(
        record
            .actor
            .grant()
            .as_ref()
            .map(|g| &g.as_uuid().as_bytes()[..]),
    );
    e.field(record.action.as_str().as_bytes());
    e.field(record.target.kind.as_bytes());
    e.field(record.target.id.as_bytes());
    e.optional(record.before.as_ref().map(canonical_json).as_deref());
    e.optional(record.after.as_ref().map(canonical_json).as_deref());
    e.field(&patch_json(&record.patch));
    e.optional(record.request_id.as_deref().map(str::as_bytes));
    e.field(&record.prev_hash);
    e.finish()
}

/// `SHA-256(RECORD_LABEL || record_encoding(record))`: what `record.hash` must be.
pub fn record_hash(record: &AuditRecord) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(RECORD_LABEL);
    hasher.update(record_encoding(record));
    hasher.finalize().into()
}

/// Seals `draft` into the record that follows `prev` (the workspace's last record, or `None` for
/// its first) in `workspace`'s log: seq `prev.seq + 1` (or 1), `prev_hash` `prev.hash` (or zeros),
/// time [`audit_time`]`(at)`, the patch from before to after, and the hash. Stores call it while
/// holding whatever makes "read the head, append" atomic per workspace.
///
/// # Errors
/// [`Error::Denied`] when the draft was built from a scope of another workspace;
/// [`Error::Invalid`] when `prev` belongs to another workspace, for a bad target or request id,
/// or a before, after or patch over [`MAX_AUDIT_JSON`].
pub fn seal(
    prev: Option<&AuditRecord>,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
    id: AuditId,
) -> Result<AuditRecord> {
    if prev.is_some_and(|p| p.workspace != workspace) {
        return Err(Error::invalid(
            "previous audit record is of another workspace",
        ));
    }
    seal_after(
        prev.map_or(ChainHead::GENESIS, AuditRecord::head),
        workspace,
        draft,
        at,
        id,
    )
}

/// [`seal`] given only the head of the chain (for stores that read the last seq and hash, not
/// the whole previous record).
///
/// # Errors
/// As [`seal`], and [`Error::Invalid`] once seq would overflow.
pub fn seal_after(
    head: ChainHead,
    workspace: WorkspaceId,
    draft: AuditDraft,
    at: OffsetDateTime,
    id: AuditId,
) -> Result<AuditRecord> {
    if draft.workspace() != workspace {
        return Err(Denied::WrongScope.into());
    }
    let (actor, action, target, before, after, request_id) = draft.into_parts();
    target.validate()?;
    if let Some(request_id) = &request_id {
        validate_request_id(request_id)?;
    }
    let seq = head
        .seq
        .checked_add(1)
        .ok_or_else(|| Error::invalid("audit sequence exhausted"))?;
    let patch = diff(before.as_ref(), after.as_ref());
    let too_big = |value: &Value| canonical_json(value).len() > MAX_AUDIT_JSON;
    if before.as_ref().is_some_and(too_big)
        || after.as_ref().is_some_and(too_big)
        || patch_json(&patch).len() > MAX_AUDIT_JSON
    {
        return Err(Error::invalid("audit value larger than 256 KiB"));
    }
    let mut record = AuditRecord {
        id,
        workspace,
        seq,
        at: audit_time(at),
        actor,
        action,
        target,
        before,
        after,
        patch,
        request_id,
        prev_hash: head.hash,
        hash: [0; 32],
    };
    record.hash = record_hash(&record);
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::{AuditAction, Target, apply};
    use crate::clock::ManualClock;
    use crate::tenancy::{Action, Gate, Principal, Role, UserId};
    use serde_json::json;

    fn scope(ws: WorkspaceId) -> crate::tenancy::Scope {
        Gate::new(Arc::new(ManualClock::new(OffsetDateTime::UNIX_EPOCH)))
            .authorize(
                &Principal::member(UserId::new(), [(ws, Role::Admin)]),
                ws,
                Action::WorkspaceUpdate,
            )
            .unwrap()
    }

    fn at() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH
            + time::Duration::days(20_000)
            + time::Duration::nanoseconds(1_234_567)
    }

    #[test]
    fn canonical_json_sorts_keys_and_has_no_whitespace() {
        let value =
            json!({"b": [1, 2.5, -3, {"z": null, "a": true}], "a": "x\"\\\n\u{1}é", "": {}});
        assert_eq!(
            String::from_utf8(canonical_json(&value)).unwrap(),
            r#"{"":{},"a":"x\"\\\u000a\u0001é","b":[1,2.5,-3,{"a":true,"z":null}]}"#
        );
        // The text is JSON, and parses back to the same value.
        let back: Value = serde_json::from_slice(&canonical_json(&value)).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn sealing_chains_records() {
        let ws = WorkspaceId::new();
        let scope = scope(ws);
        let draft = |name: &str| {
            AuditDraft::new(&scope, AuditAction::WorkspaceRenamed, Target::workspace(ws))
                .with_before(json!({"name": "old"}))
                .with_after(json!({"name": name}))
                .with_request_id("req-1")
        };
        let first = seal(None, ws, draft("one"), at(), AuditId::new()).unwrap();
        assert_eq!((first.seq, first.prev_hash), (1, GENESIS_HASH));
        assert_eq!(first.at.nanosecond() % 1_000, 0, "whole microseconds");
        assert_eq!(first.at.offset(), UtcOffset::UTC);
        assert_eq!(first.hash, record_hash(&first));
        assert_eq!(
            apply(first.before.clone().unwrap(), &first.patch).unwrap(),
            first.after.clone().unwrap()
        );
        let second = seal(Some(&first), ws, draft("two"), at(), AuditId::new()).unwrap();
        assert_eq!((second.seq, second.prev_hash), (2, first.hash));
        assert_ne!(second.hash, first.hash);
        let via_head = seal_after(first.head(), ws, draft("two"), at(), second.id).unwrap();
        assert_eq!(via_head, second, "seal and seal_after agree");
    }

    #[test]
    fn every_field_is_covered() {
        let ws = WorkspaceId::new();
        let draft = AuditDraft::new(
            &scope(ws),
            AuditAction::RetentionPolicyUpdated,
            Target::workspace(ws),
        )
        .with_before(json!({"days": 30}))
        .with_after(json!({"days": 7}));
        let record = seal(None, ws, draft, at(), AuditId::new()).unwrap();
        let edits: [fn(&mut AuditRecord); 14] = [
            |r| r.id = AuditId::new(),
            |r| r.workspace = WorkspaceId::new(),
            |r| r.seq += 1,
            |r| r.at += time::Duration::microseconds(1),
            |r| r.actor = crate::audit::AuditActor::Collector,
            |r| r.action = AuditAction::IpAllowlistUpdated,
            |r| r.target.kind = "site".into(),
            |r| r.target.id = "x".into(),
            |r| r.before = None,
            |r| r.before = Some(Value::Null),
            |r| r.after = Some(json!({"days": 8})),
            |r| r.patch.clear(),
            |r| r.request_id = Some(String::new()),
            |r| r.prev_hash[31] ^= 1,
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut edited = record.clone();
            edit(&mut edited);
            assert_ne!(record_hash(&edited), record.hash, "edit {i} not covered");
        }
        // Offsets do not matter, the instant does.
        let mut moved = record.clone();
        moved.at = moved.at.to_offset(UtcOffset::from_hms(2, 0, 0).unwrap());
        assert_eq!(record_hash(&moved), record.hash);
    }

    #[test]
    fn seal_refuses_other_workspaces_and_bad_input() {
        let (a, b) = (WorkspaceId::new(), WorkspaceId::new());
        let draft = || {
            AuditDraft::new(
                &scope(a),
                AuditAction::WorkspaceRenamed,
                Target::workspace(a),
            )
        };
        assert_eq!(
            seal(None, b, draft(), at(), AuditId::new())
                .unwrap_err()
                .kind(),
            crate::ErrorKind::Denied
        );
        let first_b = seal(
            None,
            b,
            AuditDraft::new(
                &scope(b),
                AuditAction::WorkspaceRenamed,
                Target::workspace(b),
            ),
            at(),
            AuditId::new(),
        )
        .unwrap();
        assert!(seal(Some(&first_b), a, draft(), at(), AuditId::new()).is_err());
        assert!(
            seal(
                None,
                a,
                draft().with_request_id("bad id"),
                at(),
                AuditId::new()
            )
            .is_err()
        );
        let huge = json!({"blob": "x".repeat(MAX_AUDIT_JSON)});
        assert!(seal(None, a, draft().with_after(huge), at(), AuditId::new()).is_err());
        let bad_target =
            AuditDraft::new(&scope(a), AuditAction::SiteAdded, Target::new("Site", "x"));
        assert!(seal(None, a, bad_target, at(), AuditId::new()).is_err());
        let full = ChainHead {
            seq: u64::MAX,
            hash: [1; 32],
        };
        assert!(seal_after(full, a, draft(), at(), AuditId::new()).is_err());
    }

    const RECORD_HASH_V1: &str = "2f853c9e2fd7dc16b3d35442c12dc583db71ef786bbb8a919bb6941691527b5c";

    /// A fixed record and its hash: changing the encoding changes this, and needs a new label.
    #[test]
    fn the_encoding_is_stable() {
        let ws = WorkspaceId::from_uuid(uuid::Uuid::from_u128(
            0x0123_4567_89ab_cdef_0123_4567_89ab_cdef,
        ));
        let record = AuditRecord {
            id: AuditId::from_uuid(uuid::Uuid::from_u128(1)),
            workspace: ws,
            seq: 1,
            at: OffsetDateTime::UNIX_EPOCH + time::Duration::seconds(1_700_000_000),
            actor: crate::audit::AuditActor::System(crate::tenancy::SystemTask::Retention),
            action: AuditAction::RetentionEventsDeleted,
            target: Target::workspace(ws),
            before: None,
            after: Some(json!({"deleted": 3, "cutoff": "2023-11-14T22:13:20Z"})),
            patch: diff(
                None,
                Some(&json!({"deleted": 3, "cutoff": "2023-11-14T22:13:20Z"})),
            ),
            request_id: None,
            prev_hash: GENESIS_HASH,
            hash: [0; 32],
        };
        let encoding = record_encoding(&record);
        assert_eq!(&encoding[..8], &16u64.to_be_bytes(), "length-prefixed id");
        assert_eq!(hex::encode(record_hash(&record)), RECORD_HASH_V1);
    }
}
