//! The types the phases of [`super::compute`] share, and the public result types.

use std::fmt;

use serde::{Serialize, Serializer};

use crate::names::{Lsn, SegmentNo, SegmentSize, TimelineId};
use crate::time::Timestamp;

/// Why a backup is kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Role {
    /// A point-in-time-recovery base: WAL from it onwards is kept.
    Pitr,
    /// Kept with only the WAL that makes it consistent.
    Standalone,
    /// Needed as the base of a kept delta backup.
    Ancestor,
}

/// Lifecycle state of a backup.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum BackupStatus {
    /// No sentinel yet, written to recently.
    InProgress,
    /// No sentinel and abandoned.
    Incomplete,
    /// Stop sentinel present and consistent.
    Complete,
    /// Sentinel present but unusable (reason).
    Broken(String),
}

/// A backup as the horizon sees it.
#[derive(Clone, Debug, Serialize)]
pub struct BackupView {
    /// Name.
    pub name: String,
    /// Status.
    pub status: BackupStatus,
    /// Timeline.
    pub timeline: TimelineId,
    /// Start LSN (from the sentinel).
    pub start_lsn: Option<Lsn>,
    /// Finish LSN.
    pub finish_lsn: Option<Lsn>,
    /// When it finished: the later of the sentinel's receipt and the client's FinishTime.
    pub finished_at: Option<Timestamp>,
    /// Permanent (`metadata.json` `is_permanent`).
    pub permanent: bool,
    /// Full (not a delta).
    pub full: bool,
    /// Immediate delta parent.
    pub delta_parent: Option<String>,
    /// Complete, chain complete, and its own WAL present.
    pub restorable: bool,
    /// Compatible with the head timeline's lineage.
    pub main: bool,
    /// Kept role, if kept.
    pub role: Option<Role>,
    /// Why it is kept (rules), or why it is protected.
    pub reasons: Vec<String>,
    /// Bytes stored.
    pub bytes: u64,
}

impl BackupView {
    /// The segments of its own WAL, `[seg(start-1), seg(finish-1)]`, if its LSNs are known.
    pub fn own_segments(&self, s: SegmentSize) -> Option<(SegmentNo, SegmentNo)> {
        let (a, b) = (self.start_lsn?, self.finish_lsn?);
        Some((s.segment_of(a.prev()), s.segment_of(b.prev())))
    }
}

/// A range of required segment numbers on one timeline (inclusive; `to: None` = open).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SegRange {
    /// Timeline.
    pub timeline: TimelineId,
    /// First segment number.
    pub from: SegmentNo,
    /// Last segment number (inclusive), or open-ended.
    pub to: Option<SegmentNo>,
    /// The rule.
    #[serde(serialize_with = "as_text")]
    pub reason: WalReason,
}

impl SegRange {
    /// Whether the range holds segment `n` of timeline `tl`.
    pub fn contains(&self, tl: TimelineId, n: SegmentNo) -> bool {
        self.timeline == tl && n >= self.from && self.to.is_none_or(|t| n <= t)
    }
}

/// A run of missing segments on the main lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Gap {
    /// Timeline.
    pub timeline: TimelineId,
    /// First missing segment (file name).
    pub first: String,
    /// Last missing segment (file name).
    pub last: String,
    /// Number of missing segments.
    pub segments: u64,
    /// Still uploading (younger than `archive_lag_grace`) rather than lost.
    pub pending: bool,
}

/// An interval of recoverable time on the main lineage.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Window {
    /// Earliest recoverable instant (a backup's finish).
    pub from: Timestamp,
    /// Latest recoverable instant (receipt of the last continuous segment).
    pub to: Timestamp,
    /// LSN up to which WAL is continuous.
    pub to_lsn: Lsn,
    /// The backup the interval starts from.
    pub backup: String,
}

/// The restorable-window report of a repository.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// Newest full WAL segment received: (file name, receipt time, end LSN).
    pub last_segment: Option<(String, Timestamp, Lsn)>,
    /// Gaps on the main lineage after the oldest kept PITR backup.
    pub gaps: Vec<Gap>,
    /// Recoverable intervals on the main lineage.
    pub windows: Vec<Window>,
    /// Newest complete backup and when it finished.
    pub newest_backup: Option<(String, Timestamp)>,
    /// Oldest kept backup and when it finished.
    pub oldest_backup: Option<(String, Timestamp)>,
    /// Backups by kind: full, delta, permanent, in progress, incomplete, broken.
    pub counts: std::collections::BTreeMap<String, u64>,
    /// WAL segments stored (full segments only).
    pub wal_segments: u64,
    /// WAL segments by codec (`none`, `lz4`, `zst`, …): the codec mix the identity check
    /// can look into (every codec but `gz`; client-side encryption hides any of them).
    pub wal_codecs: std::collections::BTreeMap<String, u64>,
    /// Bytes of the repository.
    pub bytes: u64,
}

/// A set of objects to delete together, in order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub enum Unit {
    /// A whole backup, sentinel first.
    Backup {
        /// Name.
        name: String,
        /// Paths inside the repository, sentinel first.
        paths: Vec<String>,
        /// Why it may go.
        reason: String,
    },
    /// One WAL file (segment, partial, label, WAL metadata).
    Wal {
        /// Path inside the repository.
        path: String,
        /// Why it may go.
        reason: String,
    },
}

impl Unit {
    /// Paths of the unit, in deletion order.
    pub fn paths(&self) -> Vec<&str> {
        match self {
            Unit::Backup { paths, .. } => paths.iter().map(String::as_str).collect(),
            Unit::Wal { path, .. } => vec![path.as_str()],
        }
    }
}

/// The decision for one client delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// May be deleted.
    Allow,
    /// Must be kept, with the rule.
    Deny(String),
}

/// What the phases found wrong: reasons to freeze retention, and alerts.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Findings {
    pub(crate) frozen: Vec<String>,
    pub(crate) alerts: Vec<String>,
}

impl Findings {
    pub(crate) fn freeze(&mut self, why: String) {
        self.frozen.push(why);
    }

    pub(crate) fn alert(&mut self, what: String) {
        self.alerts.push(what);
    }
}

fn as_text<T: fmt::Display, S: Serializer>(v: &T, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(v)
}

/// A rule that requires WAL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalReason {
    /// A kept backup's own WAL, `[seg(start-1), seg(finish-1)]`.
    KeptBackup(String),
    /// The main line from the oldest kept PITR backup to the head.
    PitrPath(String),
    /// The head's lineage is unknown: everything after the oldest PITR backup, on every timeline.
    LineageUnknown(String),
    /// No restorable backup yet: everything.
    NoBackupYet,
    /// Everything after the start of a backup still being uploaded.
    InProgress(String),
    /// An abandoned branch inside its grace period.
    Branch(TimelineId),
    /// The path from a backup into an abandoned branch.
    BranchPath {
        /// The branch's timeline.
        timeline: TimelineId,
        /// The backup it starts from.
        from: String,
    },
}

impl fmt::Display for WalReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalReason::KeptBackup(n) => write!(f, "WAL of kept backup {n}"),
            WalReason::PitrPath(n) => write!(f, "continuous WAL from the oldest PITR backup {n} to the head"),
            WalReason::LineageUnknown(n) => write!(f, "lineage unknown: all WAL after the oldest PITR backup {n}"),
            WalReason::NoBackupYet => f.write_str("no restorable backup yet: all WAL is kept"),
            WalReason::InProgress(n) => write!(f, "WAL after the start of in-progress backup {n}"),
            WalReason::Branch(tl) => write!(f, "abandoned branch of timeline {tl}, inside the branch grace period"),
            WalReason::BranchPath { timeline, from } => {
                write!(f, "path into abandoned timeline {timeline} from {from}")
            }
        }
    }
}
