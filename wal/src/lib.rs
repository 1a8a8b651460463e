//! Everything walstore knows about PostgreSQL WAL and WAL-G repositories, as
//! pure functions over plain data: object names and LSN arithmetic
//! ([`names`]), timeline history files ([`history`]), backup documents
//! ([`backup`]), WAL-G's codecs ([`codec`]), repository snapshots
//! ([`catalog`]), retention policies ([`policy`]), the retention horizon
//! ([`horizon`]), and the identity of the cluster a repository holds ([`page`],
//! [`identity`]).
//!
//! Nothing here does I/O or names RocksDB: the storage crate scans its index
//! into a [`RepoSnapshot`] and persists what the horizon decides. Keeping the
//! WAL knowledge pure makes it testable in isolation (unit, property and fuzz
//! tests build snapshots directly, see the `testkit` feature) and keeps the
//! one place where an off-by-one would lose data small and reviewable.

pub mod backup;
pub mod catalog;
pub mod codec;
pub mod history;
pub mod horizon;
pub mod hot;
pub mod identity;
pub mod names;
pub mod page;
pub mod policy;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
pub mod time;

pub use backup::{MetadataInfo, SentinelInfo};
pub use catalog::{BackupObjects, Doc, HistoryFile, OpenConflict, OtherFile, RepoSnapshot, WalFile, WalKind};
pub use history::{History, HistoryEntry};
pub use horizon::{compute, BackupStatus, BackupView, Decision, Gap, Horizon, Report, Role, SegRange, Unit, Window};
pub use hot::HotSet;
pub use identity::{
    Conflict as IdentityConflict, ConflictKind, Evidence, Identity, Outcome as IdentityOutcome, Subject,
};
pub use names::{
    classify, split_repo, BackupName, Codec, Lsn, NameError, SegmentNo, SegmentSize, TimelineId, WalObject,
};
pub use policy::{DeleteProtection, RetentionPolicy};
pub use time::Timestamp;
