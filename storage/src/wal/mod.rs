//! Everything walstore knows about PostgreSQL WAL and WAL-G repositories lives
//! in this module: names and LSN arithmetic ([`names`]), history files
//! ([`history`]), backup documents ([`backup`]) and codecs ([`codec`]).

pub mod backup;
pub mod catalog;
pub mod codec;
pub mod guard;
pub mod history;
pub mod horizon;
pub mod names;
pub mod policy;
#[doc(hidden)]
pub mod testkit;

pub use backup::{MetadataInfo, SentinelInfo};
pub use catalog::{BackupObjects, Doc, HistoryFile, OtherFile, RepoSnapshot, WalFile, WalKind};
pub use guard::{
    AuditRecord, DeleteAuth, Evaluation, GuardStats, Keep, OpenConflict, QuarantineEntry, Quarantined, RefusedDelete,
    StoredPolicy,
};
pub use history::{History, HistoryEntry};
pub use horizon::{compute, BackupStatus, BackupView, Decision, Gap, Horizon, Report, Role, SegRange, Unit, Window};
pub use names::{
    classify, split_repo, BackupName, Codec, Lsn, NameError, SegmentNo, SegmentSize, TimelineId, WalObject,
};
pub use policy::{DeleteProtection, RetentionPolicy};
