//! walstore's storage engine.
//!
//! Objects are stored as content-addressed blob files (named by the SHA-256 of
//! their bytes, so identical bytes are stored once) and indexed in RocksDB. The
//! API is deliberately narrow and typed: callers name buckets, keys and upload
//! ids, hand over a received body as a [`StagedBlob`], and read back verified
//! chunks. Nothing outside this crate names RocksDB or a blob file path.
//!
//! Data directory layout:
//! - `index/`: RocksDB (see [`index`](crate::index) module docs for the column families)
//! - `blobs/ab/cd/<sha256>`: blob files; `blobs/tmp/`: staging files
//!
//! Durability: a write is acknowledged only after its blob is fsynced, renamed
//! into place with its directory fsynced, and its index batch is committed with
//! a synced WAL (see [`Store`]'s `commit`).

mod asof;
pub mod blob;
pub mod budget;
mod checksum;
pub mod clock;
mod codec;
pub mod error;
pub mod failpoint;
mod index;
pub mod jobs;
pub mod keys;
mod locks;
mod maintenance;
mod md5lanes;
mod multipart;
mod objects;
pub mod replication;
mod space;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
pub mod tier;
pub mod types;
pub mod units;
mod usage;
mod versions;
pub mod wal;
pub mod worker;
mod writer;

pub use asof::AsofView;
pub use blob::{BlobFile, BlobListing, BlobStore, Durability, FsBlobStore, OsDurability, RemoteBlobs, Staging};
pub use budget::{Budget, StopSignal};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{Error, Result};
pub use index::{IndexOptions, VerifyCursor};
pub use keys::{AccessKey, KeyRole};
pub use maintenance::{CheckReport, GcQueueStats, GcReport, ORPHAN_SWEEP_LIMIT};
pub use multipart::{
    CompleteRequest, CompletedPart, ExpectedObject, PartInfo, PartsPage, UploadInfo, UploadsPage, MAX_PART_NUMBER,
};
pub use objects::{DeleteCondition, DeleteTarget, Deleted, PutRequest, WriteCondition};
pub use replication::{Backlog, JournalEntry, JournalId, JournalOp, OffboxMark, RestoreRequest};
pub use space::SpaceReserve;
pub use store::{ListItem, ListPage, ListQuery, ObjectReader, ObjectSummary, Store, StoreConfig, StoreStats};
pub use types::*;
pub use usage::{CompletedScrub, CorruptBlob, ScrubCursor, ScrubReport, ScrubState, Usage, SCRUB_SAVE_EVERY};
pub use versions::{VersionPage, VersionQuery, VersionSummary};
pub use writer::{block_crcs, BlobWriter, StagedBlob, BLOCK_SIZE, INLINE_MAX};
