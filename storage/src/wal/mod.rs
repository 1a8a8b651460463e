//! The storage side of WAL-G repositories. The WAL knowledge itself (names,
//! history files, backup documents, codecs, snapshots, policies, the horizon)
//! lives in the pure `walstore-wal` crate and is re-exported here, so callers
//! name one path; this module adds what needs the index, in layers (each uses
//! only those above it):
//! - [`state`]: the in-memory state the store holds (no logic);
//! - [`audit`], [`policies`], [`gate`]: the audit log, stored policies, and the
//!   per-repository write generations and gates;
//! - [`scan`]: a repository's catalog read from the index;
//! - [`identity`]: the identity check (which cluster an upload comes from);
//! - [`quarantine`]: the split-brain guard and its quarantine;
//! - [`guard`]: evaluations and client delete decisions;
//! - [`retention`]: the retention worker's journaled deletions.

pub mod audit;
pub mod gate;
pub mod guard;
pub mod identity;
pub mod policies;
pub mod quarantine;
pub mod retention;
pub mod scan;
pub mod state;

pub use ::wal::identity::major_name;
pub use ::wal::DeleteProtection;
pub use ::wal::Identity;
pub use ::wal::{backup, catalog, codec, history, horizon, names, policy};
pub use ::wal::{
    classify, compute, split_repo, BackupName, BackupObjects, BackupStatus, BackupView, Codec, Decision, Doc, Gap,
    History, HistoryEntry, HistoryFile, Horizon, Lsn, MetadataInfo, NameError, OpenConflict, OtherFile, RepoSnapshot,
    Report, RetentionPolicy, Role, SegRange, SegmentNo, SegmentSize, SentinelInfo, TimelineId, Unit, WalFile, WalKind,
    WalObject, Window,
};
pub use audit::AuditRecord;
pub use guard::DeleteAuth;
pub use identity::CONFLICT_KINDS;
pub use quarantine::{Keep, QuarantineEntry, Quarantined};
pub use retention::RetentionOutcome;
pub use state::{
    Evaluation, GuardStats, IdentityCheck, IdentityCounters, IdentityRecord, RefusedDelete, RepoIdentityStats,
    StoredPolicy,
};
