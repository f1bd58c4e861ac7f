//! The verifier: walks a workspace's log and its checkpoints and names the first thing wrong.

use std::collections::HashSet;
use std::fmt;

use serde_json::Value;
use time::OffsetDateTime;

use super::chain::{ChainHead, GENESIS_HASH, record_hash};
use super::checkpoint::{Checkpoint, CheckpointPolicy, CheckpointSigner};
use super::patch::apply;
use super::record::{AuditId, AuditRecord};
use crate::tenancy::WorkspaceId;

/// What kind of tampering (or breakage) the verifier found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ProblemKind {
    /// A record of another workspace sits in this log.
    ForeignRecord,
    /// A record's hash does not match its fields: a field was edited after sealing.
    EditedRecord,
    /// A record's patch does not turn its before into its after (it was sealed wrongly).
    BadPatch,
    /// Records are missing: the next seq is absent and a later one follows.
    DeletedRecords,
    /// Records are out of order: the next seq is present, but further on.
    ReorderedRecords,
    /// The record does not chain to the one before it (its `prev_hash` differs, or it claims a
    /// seq already taken): two histories were spliced, or the record before was rewritten and
    /// rehashed.
    Fork,
    /// A valid checkpoint covers a seq beyond the last record: the tail was dropped.
    DroppedTail,
    /// A valid checkpoint names another hash than the record at its seq has: the log was cut
    /// back and regrown, or rewritten, after the checkpoint.
    CheckpointMismatch,
    /// A checkpoint's MAC is wrong, or it was made under a KEK the ring does not hold.
    BadCheckpointMac,
    /// A checkpoint of another workspace sits among this workspace's.
    ForeignCheckpoint,
    /// Two consecutive checkpoints are further apart than the policy allows: checkpoints were
    /// removed, or the writer stopped ([`verify_at`] only).
    CheckpointGap,
    /// No checkpoint within the allowed gap before now ([`verify_at`] only).
    StaleCheckpoints,
}

impl ProblemKind {
    /// A stable snake-case name, for reports and exit messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ProblemKind::ForeignRecord => "foreign_record",
            ProblemKind::EditedRecord => "edited_record",
            ProblemKind::BadPatch => "bad_patch",
            ProblemKind::DeletedRecords => "deleted_records",
            ProblemKind::ReorderedRecords => "reordered_records",
            ProblemKind::Fork => "fork",
            ProblemKind::DroppedTail => "dropped_tail",
            ProblemKind::CheckpointMismatch => "checkpoint_mismatch",
            ProblemKind::BadCheckpointMac => "bad_checkpoint_mac",
            ProblemKind::ForeignCheckpoint => "foreign_checkpoint",
            ProblemKind::CheckpointGap => "checkpoint_gap",
            ProblemKind::StaleCheckpoints => "stale_checkpoints",
        }
    }
}

/// The first problem found, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What is wrong.
    pub kind: ProblemKind,
    /// Where: for a record problem, the position in the log of the first bad record (the seq a
    /// sound log has there; for [`ProblemKind::DeletedRecords`] the first missing seq); for a
    /// checkpoint problem, the checkpoint's seq.
    pub seq: u64,
    /// The record found at that position, for record problems.
    pub record: Option<AuditId>,
    /// The seq that record claims, for record problems.
    pub record_seq: Option<u64>,
    /// The checkpoint's time, for checkpoint problems.
    pub checkpoint_at: Option<OffsetDateTime>,
}

impl Problem {
    fn record(kind: ProblemKind, seq: u64, record: &AuditRecord) -> Self {
        Self {
            kind,
            seq,
            record: Some(record.id),
            record_seq: Some(record.seq),
            checkpoint_at: None,
        }
    }

    fn checkpoint(kind: ProblemKind, checkpoint: &Checkpoint) -> Self {
        Self {
            kind,
            seq: checkpoint.seq,
            record: None,
            record_seq: None,
            checkpoint_at: Some(checkpoint.at),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.record, self.checkpoint_at) {
            (Some(id), _) => write!(
                f,
                "{} at seq {} (record {id}, claiming seq {})",
                self.kind.as_str(),
                self.seq,
                self.record_seq.unwrap_or_default()
            ),
            (None, Some(at)) => write!(
                f,
                "{} at checkpoint seq {} made {at}",
                self.kind.as_str(),
                self.seq
            ),
            (None, None) => write!(f, "{} at seq {}", self.kind.as_str(), self.seq),
        }
    }
}

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The workspace checked.
    pub workspace: WorkspaceId,
    /// Records given.
    pub records: u64,
    /// Checkpoints given.
    pub checkpoints: u64,
    /// The head of the longest sound prefix of the log.
    pub verified: ChainHead,
    /// The first problem, if any.
    pub problem: Option<Problem>,
}

impl Report {
    /// Whether nothing is wrong.
    pub const fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.problem {
            None => write!(
                f,
                "workspace {}: ok ({} records, {} checkpoints)",
                self.workspace, self.records, self.checkpoints
            ),
            Some(problem) => write!(
                f,
                "workspace {}: {problem}; sound up to seq {}",
                self.workspace, self.verified.seq
            ),
        }
    }
}

/// Verifies `workspace`'s whole log (`records`, from seq 1, in seq order as the store returns
/// them) against its `checkpoints` (any order).
///
/// Records are checked one by one, in this order, and the first failure is reported: the record
/// belongs to the workspace ([`ProblemKind::ForeignRecord`]); its hash matches its fields
/// ([`ProblemKind::EditedRecord`]); its seq is the next one ([`ProblemKind::DeletedRecords`]
/// when that seq is absent, [`ProblemKind::ReorderedRecords`] when it comes later,
/// [`ProblemKind::Fork`] when the seq was already taken); its `prev_hash` is the previous
/// record's hash ([`ProblemKind::Fork`]); its patch turns before into after
/// ([`ProblemKind::BadPatch`]). When every record passes, checkpoints are checked by seq:
/// workspace, MAC, and that the log still has the head each names
/// ([`ProblemKind::DroppedTail`], [`ProblemKind::CheckpointMismatch`]).
///
/// A tail dropped after the last checkpoint cannot show here; [`verify_at`] adds the cadence
/// checks that bound that window.
pub fn verify(
    workspace: WorkspaceId,
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    signer: &CheckpointSigner,
) -> Report {
    let mut verified = ChainHead::GENESIS;
    let problem = check_records(workspace, records, &mut verified)
        .or_else(|| check_checkpoints(workspace, records, checkpoints, signer, verified));
    Report {
        workspace,
        records: records.len() as u64,
        checkpoints: checkpoints.len() as u64,
        verified,
        problem,
    }
}

/// [`verify`], then the checkpoint cadence at `now`: consecutive checkpoints at most
/// [`CheckpointPolicy::max_gap`] apart ([`ProblemKind::CheckpointGap`]), and the last one, or
/// the first record when there is no checkpoint, at most that long ago
/// ([`ProblemKind::StaleCheckpoints`]). Together with checkpoints written when nothing
/// happened, this bounds how much of the tail can be dropped unseen.
pub fn verify_at(
    workspace: WorkspaceId,
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    signer: &CheckpointSigner,
    policy: &CheckpointPolicy,
    now: OffsetDateTime,
) -> Report {
    let mut report = verify(workspace, records, checkpoints, signer);
    if report.problem.is_none() {
        report.problem = check_cadence(records, checkpoints, policy, now);
    }
    report
}

fn check_records(
    workspace: WorkspaceId,
    records: &[AuditRecord],
    verified: &mut ChainHead,
) -> Option<Problem> {
    let present: HashSet<u64> = records
        .iter()
        .filter(|r| r.workspace == workspace)
        .map(|r| r.seq)
        .collect();
    for record in records {
        let expected = verified.seq + 1;
        let problem = |kind| Some(Problem::record(kind, expected, record));
        if record.workspace != workspace {
            return problem(ProblemKind::ForeignRecord);
        }
        if record_hash(record) != record.hash {
            return problem(ProblemKind::EditedRecord);
        }
        if record.seq < expected {
            return problem(ProblemKind::Fork);
        }
        if record.seq > expected {
            return problem(if present.contains(&expected) {
                ProblemKind::ReorderedRecords
            } else {
                ProblemKind::DeletedRecords
            });
        }
        if record.prev_hash != verified.hash {
            return problem(ProblemKind::Fork);
        }
        let before = record.before.clone().unwrap_or(Value::Null);
        let after = record.after.as_ref().unwrap_or(&Value::Null);
        if apply(before, &record.patch).ok().as_ref() != Some(after) {
            return problem(ProblemKind::BadPatch);
        }
        *verified = record.head();
    }
    None
}

fn check_checkpoints(
    workspace: WorkspaceId,
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    signer: &CheckpointSigner,
    head: ChainHead,
) -> Option<Problem> {
    let mut ordered: Vec<&Checkpoint> = checkpoints.iter().collect();
    ordered.sort_by_key(|c| (c.seq, c.at));
    for checkpoint in ordered {
        let problem = |kind| Some(Problem::checkpoint(kind, checkpoint));
        if checkpoint.workspace != workspace {
            return problem(ProblemKind::ForeignCheckpoint);
        }
        if !signer.verify(checkpoint) {
            return problem(ProblemKind::BadCheckpointMac);
        }
        if checkpoint.seq > head.seq {
            return problem(ProblemKind::DroppedTail);
        }
        // Every record passed, so record `seq` sits at index `seq - 1`.
        let hash = match checkpoint.seq {
            0 => GENESIS_HASH,
            seq => records[usize::try_from(seq - 1).expect("an index of the slice")].hash,
        };
        if hash != checkpoint.head_hash {
            return problem(ProblemKind::CheckpointMismatch);
        }
    }
    None
}

fn check_cadence(
    records: &[AuditRecord],
    checkpoints: &[Checkpoint],
    policy: &CheckpointPolicy,
    now: OffsetDateTime,
) -> Option<Problem> {
    let max_gap = policy.max_gap();
    let mut by_time: Vec<&Checkpoint> = checkpoints.iter().collect();
    by_time.sort_by_key(|c| (c.at, c.seq));
    for pair in by_time.windows(2) {
        if pair[1].at - pair[0].at > max_gap {
            return Some(Problem::checkpoint(ProblemKind::CheckpointGap, pair[1]));
        }
    }
    match by_time.last() {
        Some(last) if now - last.at > max_gap => {
            Some(Problem::checkpoint(ProblemKind::StaleCheckpoints, last))
        }
        None => records
            .first()
            .filter(|first| now - first.at > max_gap)
            .map(|first| Problem::record(ProblemKind::StaleCheckpoints, first.seq, first)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::audit::{AuditAction, AuditDraft, Target, seal};
    use crate::clock::ManualClock;
    use crate::crypto::{Kek, KeyRing};
    use crate::tenancy::{Action, Gate, Principal, Role, Scope, UserId};
    use serde_json::json;
    use time::Duration;

    struct Log {
        ws: WorkspaceId,
        scope: Scope,
        signer: CheckpointSigner,
        records: Vec<AuditRecord>,
    }

    fn t0() -> OffsetDateTime {
        OffsetDateTime::UNIX_EPOCH + Duration::days(20_000)
    }

    fn signer(seed: u8) -> CheckpointSigner {
        let key: Vec<u8> = (0..32u8).map(|i| i ^ seed).collect();
        CheckpointSigner::new(&KeyRing::new([Kek::new(1, &key).unwrap()]).unwrap())
    }

    impl Log {
        fn new() -> Self {
            let ws = WorkspaceId::new();
            let gate = Gate::new(Arc::new(ManualClock::new(t0())));
            let scope = gate
                .authorize(
                    &Principal::member(UserId::new(), [(ws, Role::Admin)]),
                    ws,
                    Action::WorkspaceUpdate,
                )
                .unwrap();
            Self {
                ws,
                scope,
                signer: signer(1),
                records: Vec::new(),
            }
        }

        fn with(n: u64) -> Self {
            let mut log = Self::new();
            for i in 0..n {
                log.append(i);
            }
            log
        }

        fn draft(&self, i: u64) -> AuditDraft {
            AuditDraft::new(
                &self.scope,
                AuditAction::RetentionPolicyUpdated,
                Target::workspace(self.ws),
            )
            .with_before(json!({"days": i}))
            .with_after(json!({"days": i + 1}))
        }

        fn append(&mut self, i: u64) {
            let record = seal(
                self.records.last(),
                self.ws,
                self.draft(i),
                t0() + Duration::seconds(i as i64),
                AuditId::new(),
            )
            .unwrap();
            self.records.push(record);
        }

        fn checkpoint_at_head(&self) -> Checkpoint {
            let head = self
                .records
                .last()
                .map_or(ChainHead::GENESIS, AuditRecord::head);
            self.signer.sign(self.ws, head, t0() + Duration::minutes(1))
        }

        fn verify(&self, checkpoints: &[Checkpoint]) -> Report {
            verify(self.ws, &self.records, checkpoints, &self.signer)
        }
    }

    fn kind(report: &Report) -> (ProblemKind, u64) {
        let problem = report.problem.as_ref().expect("a problem");
        (problem.kind, problem.seq)
    }

    #[test]
    fn a_sound_log_verifies() {
        let empty = Log::new();
        let report = empty.verify(&[empty.checkpoint_at_head()]);
        assert!(report.is_ok(), "{report}");
        let log = Log::with(10);
        let cp = log.checkpoint_at_head();
        let mid = log.signer.sign(log.ws, log.records[4].head(), t0());
        let report = log.verify(&[cp, mid, empty_checkpoint(&log)]);
        assert!(report.is_ok(), "{report}");
        assert_eq!((report.records, report.checkpoints), (10, 3));
        assert_eq!(report.verified, log.records[9].head());
        assert!(
            report
                .to_string()
                .contains("ok (10 records, 3 checkpoints)")
        );
    }

    fn empty_checkpoint(log: &Log) -> Checkpoint {
        log.signer
            .sign(log.ws, ChainHead::GENESIS, t0() - Duration::minutes(1))
    }

    #[test]
    fn an_edited_field_is_named() {
        let mut log = Log::with(10);
        log.records[6].after = Some(json!({"days": 365}));
        let report = log.verify(&[]);
        assert_eq!(kind(&report), (ProblemKind::EditedRecord, 7));
        let problem = report.problem.as_ref().unwrap();
        assert_eq!(problem.record, Some(log.records[6].id));
        assert_eq!(report.verified.seq, 6, "sound up to the record before");
        assert!(
            report.to_string().contains("edited_record at seq 7"),
            "{report}"
        );
        // Any field: the actor, the time, the seq.
        let mut log = Log::with(5);
        log.records[2].actor = crate::audit::AuditActor::Collector;
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::EditedRecord, 3));
        let mut log = Log::with(5);
        log.records[0].at += Duration::seconds(1);
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::EditedRecord, 1));
        let mut log = Log::with(5);
        log.records[3].seq = 9;
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::EditedRecord, 4));
    }

    #[test]
    fn a_deleted_record_is_named() {
        let mut log = Log::with(10);
        let gone = log.records.remove(4);
        let report = log.verify(&[log.checkpoint_at_head()]);
        assert_eq!(kind(&report), (ProblemKind::DeletedRecords, gone.seq));
        assert_eq!(report.problem.as_ref().unwrap().record_seq, Some(6));
        // The first one too.
        let mut log = Log::with(3);
        log.records.remove(0);
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::DeletedRecords, 1));
    }

    #[test]
    fn reordered_records_are_named() {
        let mut log = Log::with(10);
        log.records.swap(3, 4);
        let report = log.verify(&[]);
        assert_eq!(kind(&report), (ProblemKind::ReorderedRecords, 4));
        assert_eq!(report.problem.as_ref().unwrap().record_seq, Some(5));
        let mut log = Log::with(10);
        log.records.swap(2, 8);
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::ReorderedRecords, 3));
    }

    #[test]
    fn a_fork_is_named() {
        // Two histories from a common prefix, spliced: record 6 of the other history follows
        // record 5 of this one.
        let mut log = Log::with(5);
        let mut other = Log {
            records: log.records[..4].to_vec(),
            ..Log::new()
        };
        other.ws = log.ws;
        other.scope = log.scope.clone();
        other.append(100);
        other.append(101);
        log.append(5);
        log.records[5] = other.records[5].clone();
        let report = log.verify(&[]);
        assert_eq!(kind(&report), (ProblemKind::Fork, 6));
        assert_eq!(report.problem.unwrap().record, Some(other.records[5].id));
        // A second record claiming a seq already taken is a fork too.
        let mut log = Log::with(5);
        let twin = seal(
            Some(&log.records[3]),
            log.ws,
            log.draft(99),
            t0(),
            AuditId::new(),
        )
        .unwrap();
        assert_eq!(twin.seq, 5);
        log.records.push(twin);
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::Fork, 6));
        // An edited record rehashed in place breaks the link to the next one.
        let mut log = Log::with(5);
        log.records[1].after = Some(json!({"days": 0}));
        log.records[1].patch = crate::audit::diff(
            log.records[1].before.as_ref(),
            log.records[1].after.as_ref(),
        );
        log.records[1].hash = record_hash(&log.records[1]);
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::Fork, 3));
    }

    #[test]
    fn a_record_of_another_workspace_is_named() {
        let mut log = Log::with(4);
        let other = Log::with(3);
        log.records.insert(2, other.records[2].clone());
        let report = log.verify(&[]);
        assert_eq!(kind(&report), (ProblemKind::ForeignRecord, 3));
        assert_eq!(report.problem.unwrap().record, Some(other.records[2].id));
    }

    #[test]
    fn a_dropped_tail_is_named() {
        let mut log = Log::with(10);
        let cp = log.checkpoint_at_head();
        log.records.truncate(7);
        let report = log.verify(&[cp]);
        assert_eq!(kind(&report), (ProblemKind::DroppedTail, 10));
        assert_eq!(report.verified.seq, 7);
        // All of it.
        log.records.clear();
        assert_eq!(kind(&log.verify(&[cp])), (ProblemKind::DroppedTail, 10));
        // Cut back and regrown: the seq exists again, with another hash.
        let mut log = Log::with(10);
        let cp = log.checkpoint_at_head();
        log.records.truncate(8);
        log.append(50);
        log.append(51);
        assert_eq!(
            kind(&log.verify(&[cp])),
            (ProblemKind::CheckpointMismatch, 10)
        );
    }

    #[test]
    fn a_forged_checkpoint_is_named() {
        let log = Log::with(5);
        let mut forged = log.checkpoint_at_head();
        forged.seq = 3;
        forged.head_hash = log.records[2].hash;
        let report = log.verify(&[log.checkpoint_at_head(), forged]);
        assert_eq!(kind(&report), (ProblemKind::BadCheckpointMac, 3));
        let by_stranger = signer(9).sign(log.ws, log.records[4].head(), t0());
        assert_eq!(
            kind(&log.verify(&[by_stranger])),
            (ProblemKind::BadCheckpointMac, 5)
        );
        let other = Log::with(1);
        let foreign = other.checkpoint_at_head();
        assert_eq!(
            kind(&log.verify(&[foreign])),
            (ProblemKind::ForeignCheckpoint, 1)
        );
        // A checkpoint under a KEK that left the ring fails.
        let rotated = CheckpointSigner::new(
            &KeyRing::new([Kek::new(2, &(0..32u8).map(|i| i ^ 2).collect::<Vec<_>>()).unwrap()])
                .unwrap(),
        );
        let report = verify(log.ws, &log.records, &[log.checkpoint_at_head()], &rotated);
        assert_eq!(kind(&report), (ProblemKind::BadCheckpointMac, 5));
    }

    #[test]
    fn a_bad_patch_is_named() {
        let mut log = Log::with(3);
        log.records[1].patch.clear();
        log.records[1].hash = record_hash(&log.records[1]);
        // Rehashing breaks the link to record 3, but record 2 is the first bad one.
        assert_eq!(kind(&log.verify(&[])), (ProblemKind::BadPatch, 2));
    }

    #[test]
    fn cadence_bounds_what_can_be_dropped_unseen() {
        let policy = CheckpointPolicy::default();
        let log = Log::with(3);
        let at = |minutes| {
            log.signer.sign(
                log.ws,
                log.records[2].head(),
                t0() + Duration::minutes(minutes),
            )
        };
        let steady = [at(1), at(6), at(11)];
        let now = t0() + Duration::minutes(12);
        let report = verify_at(log.ws, &log.records, &steady, &log.signer, &policy, now);
        assert!(report.is_ok(), "{report}");
        // A checkpoint removed from the middle.
        let gap = [at(1), at(16)];
        let report = verify_at(
            log.ws,
            &log.records,
            &gap,
            &log.signer,
            &policy,
            t0() + Duration::minutes(17),
        );
        assert_eq!(kind(&report), (ProblemKind::CheckpointGap, 3));
        // The recent ones removed (or the writer stopped).
        let later = t0() + Duration::minutes(30);
        let report = verify_at(log.ws, &log.records, &steady, &log.signer, &policy, later);
        assert_eq!(kind(&report), (ProblemKind::StaleCheckpoints, 3));
        let report = verify_at(log.ws, &log.records, &[], &log.signer, &policy, later);
        assert_eq!(kind(&report), (ProblemKind::StaleCheckpoints, 1));
        // An empty log without checkpoints has nothing to lose.
        let empty = Log::new();
        assert!(verify_at(empty.ws, &[], &[], &empty.signer, &policy, later).is_ok());
    }
}
