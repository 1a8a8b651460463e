//! The RocksDB index: the only module that names RocksDB.
//!
//! Column families and their keys (all values start with a format version byte,
//! see [`crate::codec`]):
//! - `buckets`: `<bucket>` → [`BucketEntry`]
//! - `objects`: `<bucket> 0x00 <key>` → [`ObjectEntry`]; byte order = S3 listing order
//! - `blobs`:   `<sha256>` → [`BlobMeta`] (size, per-block CRC32s)
//! - `inline`:  `<sha256>` → `[1]` + the bytes of a blob of at most
//!   [`crate::writer::INLINE_MAX`] bytes kept in the index instead of a file
//! - `refs`:    `<sha256>` → reference count and time of the last decrement
//!   (merge operator adds deltas, keeps the later time)
//! - `gcq`:     `<ms since epoch u64 BE> <sha256>` → empty: a blob lost a reference
//!   then (GC candidates, oldest first, so a GC pass reads only what is due)
//! - `uploads`: `<bucket> 0x00 <key> 0x00 <upload id>` → [`UploadEntry`]
//! - `parts`:   `<upload id> <part number u32 BE>` → [`PartEntry`]
//! - `completed`: `<upload id>` → [`CompletedEntry`]: the answer of a completed
//!   upload, for a retried Complete (until the multipart expiry)
//! - `versions`: `<bucket> 0x00 <key> 0x00 <!seq u64 BE>` → a version of a key that
//!   is not its current one: an older [`ObjectEntry`] or a delete marker
//!   ([`MarkerEntry`]), newest first (see [`crate::versions`]). The current version
//!   of a key stays in `objects`, so everything that reads the current state (GET,
//!   listings, the WAL catalog) reads what it always read.
//! - `meta`:    `schema` → schema version
//! - `policies`: `<bucket> 0x00 <repo prefix>` → retention/protection policy
//! - `quarantine`: `<time ms BE> <random>` → refused conflicting upload (holds a blob reference)
//! - `audit`:   `<time ms BE> <seq>` → admin overrides, retention deletions
//! - `keys`:    `<access key id>` → secret, role and scope of an access key
//! - `journal`: `<bucket> 0x00 <repo prefix>` → retention unit being deleted (crash resume)
//! - `replq`: replication journal, per target (see [`crate::replication`])
//! - `meta` also holds `repl/<target>` → [`crate::replication::TargetRecord`]
//!
//! Invariant: the reference count of a blob equals the number of occurrences of
//! its hash in `objects` entries plus the number of `parts` entries naming it.
//! Every change to a reference is in the same synced batch as the change to the
//! count (`walstore check` verifies this).

use std::path::Path;

use rocksdb::{
    BlockBasedOptions, Cache, ColumnFamily, ColumnFamilyDescriptor, DBCompressionType, Direction, IteratorMode,
    MergeOperands, Options, ReadOptions, ReadTier, WriteBatch, WriteOptions, DB, DEFAULT_COLUMN_FAMILY_NAME,
};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::error::{Error, Result};
use crate::types::{
    BlobHash, BlobRef, BucketName, Checksum, ChecksumAlgorithm, ETag, LockMode, LockRequest, ObjectKey,
    ObjectLockConfig, ObjectMeta, Retention, Timestamp, UploadId, VersionId, Versioning,
};

pub(crate) const CF_BUCKETS: &str = "buckets";
pub(crate) const CF_OBJECTS: &str = "objects";
pub(crate) const CF_BLOBS: &str = "blobs";
pub(crate) const CF_REFS: &str = "refs";
pub(crate) const CF_GCQ: &str = "gcq";
pub(crate) const CF_UPLOADS: &str = "uploads";
pub(crate) const CF_PARTS: &str = "parts";
pub(crate) const CF_META: &str = "meta";
pub(crate) const CF_POLICIES: &str = "policies";
pub(crate) const CF_QUARANTINE: &str = "quarantine";
pub(crate) const CF_AUDIT: &str = "audit";
pub(crate) const CF_KEYS: &str = "keys";
pub(crate) const CF_JOURNAL: &str = "journal";
pub(crate) const CF_INLINE: &str = "inline";
pub(crate) const CF_COMPLETED: &str = "completed";
pub(crate) const CF_VERSIONS: &str = "versions";
pub(crate) const CF_REPLQ: &str = "replq";

const ALL_CFS: [&str; 17] = [
    CF_BUCKETS,
    CF_OBJECTS,
    CF_BLOBS,
    CF_REFS,
    CF_GCQ,
    CF_UPLOADS,
    CF_PARTS,
    CF_META,
    CF_POLICIES,
    CF_QUARANTINE,
    CF_AUDIT,
    CF_KEYS,
    CF_JOURNAL,
    CF_INLINE,
    CF_COMPLETED,
    CF_VERSIONS,
    CF_REPLQ,
];

/// Version of the index layout as a whole (CF set and key encodings).
/// 2: `gcq` keyed by time (was: by hash, valued by time); `refs` values carry
/// the time of the last decrement. A schema 1 index is migrated at open.
/// 3: the `inline` column family (small blobs). Schema 2 needs no migration
/// (the family is created empty at open); the version moves so that an older
/// build refuses an index that may hold blobs it cannot read.
/// 4: the `completed` column family (answers of completed multipart uploads,
/// so a retried CompleteMultipartUpload gets the first answer). Schema 3 needs
/// no migration; an older build must not drop the answers a client may retry for.
/// 5: versioning and Object Lock: the `versions` family, and entries
/// with a trailer ([`codec::VALUE_V2_TRAILER`]). Schema 4 needs no migration; an older
/// build would drop the trailers (and with them the locks) it cannot read.
/// 6: the `replq` family (replication journal). Schema 5 needs no migration; an
/// older build would make changes without journaling them, and the off-box copy
/// would silently miss them.
const SCHEMA_VERSION: u32 = 6;

/// Length of a `gcq` key: time (8) + blob hash (32).
pub(crate) const GCQ_KEY_LEN: usize = 40;

/// The `gcq` key of a blob that lost a reference at `since`.
pub(crate) fn gcq_key(since: Timestamp, hash: &BlobHash) -> [u8; GCQ_KEY_LEN] {
    let mut k = [0u8; GCQ_KEY_LEN];
    k[..8].copy_from_slice(&u64::try_from(since.as_millis()).unwrap_or(0).to_be_bytes());
    k[8..].copy_from_slice(hash.as_bytes());
    k
}

/// Splits a `gcq` key; `None` for a key of another shape.
pub(crate) fn gcq_split(key: &[u8]) -> Option<(Timestamp, BlobHash)> {
    if key.len() != GCQ_KEY_LEN {
        return None;
    }
    let ms = u64::from_be_bytes(key[..8].try_into().ok()?);
    let hash: [u8; 32] = key[8..].try_into().ok()?;
    Some((Timestamp::from_millis(i64::try_from(ms).unwrap_or(i64::MAX)), BlobHash::from_bytes(hash)))
}

/// How often a GC pass reads the queue from its start instead of from where
/// the last pass stopped; see [`GcCursor`].
pub(crate) const GC_RESCAN: std::time::Duration = std::time::Duration::from_secs(300);

/// How far behind `now` the cursor stays (see [`GcCursor`]).
pub(crate) const LATE_COMMIT_SLACK: std::time::Duration = std::time::Duration::from_secs(10);

/// Consumed queue entries after which their tombstones are compacted away.
pub(crate) const GC_COMPACT_AFTER: u64 = 100_000;

/// Where GC stopped reading the queue, kept in memory.
///
/// The queue is ordered by time, so each pass starts where the last one
/// stopped and RocksDB never steps over the tombstones of consumed entries
/// (scanning from the start every pass made each pass slower under churn
/// until GC fell behind deletes). The cursor is only a hint: an entry is keyed
/// by the time its delete was prepared, and a batch committed late (or a clock
/// stepped back) can land below it. So the cursor never gets closer than
/// [`LATE_COMMIT_SLACK`] to the clock (the real one, not the `now` a caller
/// passes: a pass told it is an hour later must not move the cursor past
/// entries committed a moment after it; it only matters when the grace is
/// shorter than the slack), and every [`GC_RESCAN`] a pass compacts the consumed prefix
/// (dropping its tombstones) and reads from the start.
#[derive(Debug, Default)]
pub(crate) struct GcCursor {
    pub(crate) lower: Vec<u8>,
    pub(crate) rescanned: Option<std::time::Instant>,
    pub(crate) consumed: u64,
}

/// How far a stepwise verification ([`Index::verify_step`]) got.
#[derive(Debug, Default, Clone)]
pub struct VerifyCursor {
    cf: usize,
    after: Option<Vec<u8>>,
    /// Entries read so far.
    pub entries: u64,
}

/// Tuning of the index.
#[derive(Debug, Clone)]
pub struct IndexOptions {
    /// Shared block cache size; bounds read-side memory.
    pub block_cache_bytes: usize,
    /// Memtable size per column family.
    pub write_buffer_bytes: usize,
}

impl Default for IndexOptions {
    fn default() -> Self {
        Self { block_cache_bytes: 16 << 20, write_buffer_bytes: 8 << 20 }
    }
}

/// `encode`/`decode` of an entry stored with a trailer (see [`codec::encode_with_trailer`]):
/// `$field` holds the trailer and is `#[serde(skip)]` in the entry's body.
macro_rules! with_trailer {
    ($entry:ident, $field:ident: $trailer:ty, $cf:expr) => {
        impl $entry {
            pub fn encode(&self) -> Result<Vec<u8>> {
                codec::encode_with_trailer(self, &self.$field)
            }

            pub fn decode(bytes: &[u8]) -> Result<Self> {
                let (mut e, t): ($entry, $trailer) = codec::decode_with_trailer(bytes, $cf)?;
                e.$field = t;
                Ok(e)
            }
        }
    };
}

/// A bucket's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BucketEntry {
    pub created: Timestamp,
    /// Versioning and Object Lock; stored as the entry's trailer (see [`codec`]).
    #[serde(skip)]
    pub config: BucketConfig,
}

/// The trailer of a [`BucketEntry`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct BucketConfig {
    pub versioning: Versioning,
    pub object_lock: Option<ObjectLockConfig>,
}

with_trailer!(BucketEntry, config: BucketConfig, CF_BUCKETS);

/// An object's record.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ObjectEntry {
    pub size: u64,
    pub etag: ETag,
    pub last_modified: Timestamp,
    pub meta: ObjectMeta,
    pub checksum: Option<Checksum>,
    pub parts_count: Option<u32>,
    pub blobs: Vec<BlobRef>,
    /// Version and lock; stored as the entry's trailer (see [`codec`]), absent on
    /// buckets that were never versioned.
    #[serde(skip)]
    pub version: VersionTrail,
}

/// The trailer of an [`ObjectEntry`]: which version it is and how it is locked.
/// The default (no trailer) is the `null` version of a never-versioned write.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct VersionTrail {
    /// Position among the key's versions (0: written before versioning; oldest).
    pub seq: u64,
    /// The version id is `null` (written while versioning was off or suspended).
    pub null: bool,
    /// Whether a trailer was written at all (a versioned bucket's entry): decides
    /// whether answers carry a version id.
    pub versioned: bool,
    pub retention: Option<Retention>,
    pub legal_hold: bool,
}

impl VersionTrail {
    /// The version id clients see.
    pub fn id(&self) -> VersionId {
        if self.null || !self.versioned {
            VersionId::Null
        } else {
            VersionId::Seq(self.seq)
        }
    }

    /// Whether the version may not be deleted now; `bypass` lifts governance retention.
    pub fn locked_reason(&self, now: Timestamp, bypass: bool) -> Option<String> {
        if self.legal_hold {
            return Some("the object version is under a legal hold".into());
        }
        match self.retention {
            Some(r) if r.until > now && (r.mode == LockMode::Compliance || !bypass) => Some(format!(
                "the object version is locked in {} mode (Object Lock) for {} s more",
                r.mode.name(),
                (r.until.as_millis() - now.as_millis() + 999) / 1000
            )),
            _ => None,
        }
    }
}

with_trailer!(ObjectEntry, version: VersionTrail, CF_OBJECTS);

/// A delete marker (in `versions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MarkerEntry {
    pub last_modified: Timestamp,
    pub seq: u64,
    pub null: bool,
}

impl MarkerEntry {
    pub fn id(&self) -> VersionId {
        if self.null {
            VersionId::Null
        } else {
            VersionId::Seq(self.seq)
        }
    }
}

/// A value of the `versions` family.
#[derive(Debug, Clone)]
pub(crate) enum VersionRecord {
    Object(ObjectEntry),
    Marker(MarkerEntry),
}

/// Version byte of a [`MarkerEntry`] value in `versions` (object versions are
/// encoded as in `objects`).
const MARKER_V1: u8 = 0x4d;

impl VersionRecord {
    pub fn encode(&self) -> Result<Vec<u8>> {
        match self {
            VersionRecord::Object(e) => e.encode(),
            VersionRecord::Marker(m) => {
                postcard::to_extend(m, vec![MARKER_V1]).map_err(|e| Error::Decode(format!("encoding a marker: {e}")))
            }
        }
    }

    pub fn decode(bytes: &[u8]) -> Result<Self> {
        match bytes.split_first() {
            Some((&MARKER_V1, body)) => Ok(VersionRecord::Marker(
                postcard::from_bytes(body).map_err(|e| Error::Decode(format!("{CF_VERSIONS}: {e}")))?,
            )),
            _ => Ok(VersionRecord::Object(ObjectEntry::decode(bytes)?)),
        }
    }

    pub fn id(&self) -> VersionId {
        match self {
            VersionRecord::Object(e) => e.version.id(),
            VersionRecord::Marker(m) => m.id(),
        }
    }

    pub fn seq(&self) -> u64 {
        match self {
            VersionRecord::Object(e) => e.version.seq,
            VersionRecord::Marker(m) => m.seq,
        }
    }

    pub fn last_modified(&self) -> Timestamp {
        match self {
            VersionRecord::Object(e) => e.last_modified,
            VersionRecord::Marker(m) => m.last_modified,
        }
    }
}

/// `<bucket> 0x00 <key> 0x00 <!seq u64 BE>`: newest version first.
pub(crate) fn version_key(bucket: &BucketName, key: &str, seq: u64) -> Vec<u8> {
    let mut k = version_prefix(bucket, key);
    k.extend_from_slice(&(!seq).to_be_bytes());
    k
}

/// Prefix of every `versions` key of one object key.
pub(crate) fn version_prefix(bucket: &BucketName, key: &str) -> Vec<u8> {
    let mut k = object_key(bucket, key);
    k.push(0);
    k
}

/// What a listing needs of an [`ObjectEntry`], decoded in place: borrowed strings and
/// nothing after the checksum, so listing a key allocates only its own name and ETag.
///
/// postcard has no field names, so this mirrors [`ObjectEntry`]'s leading fields in order
/// and type (`a_listing_reads_what_an_entry_wrote` pins it); the unread rest is ignored.
#[derive(Debug, Deserialize)]
pub(crate) struct ObjectListing<'a> {
    pub size: u64,
    pub etag: &'a str,
    pub last_modified: Timestamp,
    #[serde(borrow)]
    pub meta: ListingMeta<'a>,
    pub checksum: Option<Checksum>,
}

/// [`ObjectMeta`]'s layout with borrowed strings.
#[derive(Debug, Deserialize)]
pub(crate) struct ListingMeta<'a> {
    #[allow(dead_code)] // decoded only to reach the fields after it
    pub content_type: Option<&'a str>,
    #[serde(borrow)]
    pub headers: Vec<(&'a str, &'a str)>,
    #[serde(borrow)]
    #[allow(dead_code)]
    pub user: Vec<(&'a str, &'a str)>,
}

/// Per-blob facts needed to read it safely.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct BlobMeta {
    pub size: u64,
    pub block_size: u32,
    pub crcs: Vec<u32>,
}

/// An open multipart upload.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct UploadEntry {
    pub initiated: Timestamp,
    pub meta: ObjectMeta,
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// `x-amz-checksum-type: FULL_OBJECT` was requested.
    pub full_object_checksum: bool,
    /// Object Lock asked for at creation; stored as the entry's trailer.
    #[serde(skip)]
    pub lock: LockRequest,
}

with_trailer!(UploadEntry, lock: LockRequest, CF_UPLOADS);

/// The answer of a completed multipart upload, kept for a retried Complete
/// (keyed by upload id) until the multipart expiry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CompletedEntry {
    pub bucket: String,
    pub key: String,
    /// The part list of the Complete that succeeded: number and part MD5.
    pub parts: Vec<(u32, [u8; 16])>,
    /// When it completed (expiry runs from here).
    pub completed: Timestamp,
    /// The object as it was answered (`blobs` empty: this holds no reference).
    pub object: ObjectEntry,
}

/// One uploaded part.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PartEntry {
    pub blob: BlobRef,
    pub md5: [u8; 16],
    pub last_modified: Timestamp,
    pub checksum: Option<Checksum>,
}

/// A raw key/value pair read from the index.
pub(crate) type KeyValue = (Box<[u8]>, Box<[u8]>);

/// The RocksDB database with our column families.
pub(crate) struct Index {
    db: DB,
}

fn refcount_merge(_key: &[u8], existing: Option<&[u8]>, operands: &MergeOperands) -> Option<Vec<u8>> {
    // A damaged operand must not abort the process; it is counted as 0 and
    // `walstore check` reports the mismatch.
    let mut total = existing.and_then(|v| codec::decode_count(v).ok()).unwrap_or_default();
    for op in operands {
        total = total.merge(codec::decode_count(op).unwrap_or_default());
    }
    Some(codec::encode_count(total).to_vec())
}

/// The schema version stored in `meta` (`None`: a new index, or one without `meta`).
fn stored_schema(db: &DB) -> Result<Option<u32>> {
    let Some(cf) = db.cf_handle(CF_META) else { return Ok(None) };
    match db.get_cf(cf, b"schema")? {
        Some(v) => Ok(Some(codec::decode(&v, "schema version")?)),
        None => Ok(None),
    }
}

/// Refuses an index this build must not open: one a newer walstore wrote (it
/// may hold data this build cannot read, and writing to it could lose that), or
/// one with column families no walstore schema up to this one has (no schema
/// ever dropped a family, so at a schema this build knows they mean damage or a
/// foreign database). Each refusal is one line naming what was found.
fn check_layout(path: &Path, found: Option<u32>, unknown: &[&str]) -> Result<()> {
    match found {
        Some(v) if v > SCHEMA_VERSION => Err(Error::Index(format!(
            "the index at {} has schema version {v}, written by a newer walstore; this build reads schema \
             versions up to {SCHEMA_VERSION} (upgrade walstore, or restore a copy made before the upgrade)",
            path.display()
        ))),
        _ if !unknown.is_empty() => Err(Error::Index(format!(
            "the index at {} has column families no walstore writes ({}) at schema version {}: it is damaged or \
             not a walstore index. Restore the data directory (index/ and blobs/ together) from a copy",
            path.display(),
            unknown.join(", "),
            found.map_or_else(|| "none".to_owned(), |v| v.to_string()),
        ))),
        _ => Ok(()),
    }
}

impl Index {
    /// Opens or creates the index in `path`.
    ///
    /// An existing index is first opened read-only, and refused before anything
    /// in the directory is written if a newer walstore wrote it or it holds
    /// column families no walstore schema has (see [`check_layout`]). A
    /// read-write open would already change it (create the families this build
    /// has and a newer one dropped, flush the WAL, write a new MANIFEST), and
    /// without naming every family on disk RocksDB refuses it with a message that
    /// says nothing about versions.
    pub fn open(path: &Path, opts: &IndexOptions) -> Result<Self> {
        let cache = Cache::new_lru_cache(opts.block_cache_bytes);
        let cf_opts = |name: &str| {
            let mut block = BlockBasedOptions::default();
            block.set_block_cache(&cache);
            block.set_bloom_filter(10.0, false);
            block.set_cache_index_and_filter_blocks(true);
            block.set_pin_l0_filter_and_index_blocks_in_cache(true);
            let mut o = Options::default();
            o.set_block_based_table_factory(&block);
            o.set_write_buffer_size(opts.write_buffer_bytes);
            o.set_max_write_buffer_number(2);
            o.set_compression_type(DBCompressionType::Lz4);
            if name == CF_REFS {
                o.set_merge_operator_associative("walstore_refcount_add", refcount_merge);
            }
            ColumnFamilyDescriptor::new(name, o)
        };
        let mut db_opts = Options::default();
        db_opts.create_if_missing(true);
        db_opts.create_missing_column_families(true);
        db_opts.set_paranoid_checks(true);
        db_opts.set_max_open_files(512);
        db_opts.set_keep_log_file_num(4);
        db_opts.set_max_background_jobs(2);
        db_opts.set_max_total_wal_size(64 << 20);
        db_opts.set_atomic_flush(true);
        // The families on disk (none for a new index). Unknown ones are opened
        // too, so that refusing them is our message and not RocksDB's.
        let present = DB::list_cf(&Options::default(), path).unwrap_or_default();
        let unknown: Vec<&str> = present
            .iter()
            .map(String::as_str)
            .filter(|n| *n != DEFAULT_COLUMN_FAMILY_NAME && !ALL_CFS.contains(n))
            .collect();
        if !present.is_empty() {
            // Read-only: writes nothing and takes no lock. Only a finding refuses
            // here; if this open or read fails (damage, a running server
            // compacting), the read-write open below reports it as it always did,
            // and the same layout check runs after it.
            let mut peek = Options::default();
            peek.set_max_open_files(64); // table files are opened as read, not all at open
            let descriptors = present.iter().map(|n| cf_opts(n));
            let found = DB::open_cf_descriptors_read_only(&peek, path, descriptors, false)
                .ok()
                .and_then(|db| stored_schema(&db).ok());
            if let Some(found) = found {
                check_layout(path, found, &unknown)?;
            }
        }
        let cfs: Vec<_> = ALL_CFS.iter().chain(&unknown).map(|n| cf_opts(n)).collect();
        let db = DB::open_cf_descriptors(&db_opts, path, cfs).map_err(|e| {
            let text = e.into_string();
            if text.contains("Corruption") {
                Error::Corrupt(format!(
                    "the index at {} is damaged ({text}); walstore does not run on a damaged index. Restore the \
                     data directory (index/ and blobs/ together) from a copy; blob files are not affected",
                    path.display()
                ))
            } else {
                Error::Index(format!("cannot open the index at {}: {text}", path.display()))
            }
        })?;
        let index = Self { db };
        index.check_schema(path, &unknown)?;
        Ok(index)
    }

    fn check_schema(&self, path: &Path, unknown: &[&str]) -> Result<()> {
        let found = stored_schema(&self.db)?;
        check_layout(path, found, unknown)?;
        match found {
            None => self.set_schema(),
            Some(SCHEMA_VERSION) => Ok(()),
            Some(1) => {
                self.migrate_gcq_v1()?;
                self.set_schema()
            }
            Some(2..=5) => self.set_schema(),
            Some(found) => Err(Error::Index(format!(
                "the index at {} has schema version {found}, which no walstore wrote; this build reads schema \
                 versions 1 to {SCHEMA_VERSION}",
                path.display()
            ))),
        }
    }

    fn set_schema(&self) -> Result<()> {
        let mut b = WriteBatch::default();
        b.put_cf(self.cf(CF_META)?, b"schema", codec::encode(&SCHEMA_VERSION)?);
        self.write(b)
    }

    /// Schema 1 → 2: re-keys the GC queue by time. Each chunk moves entries
    /// atomically and only 32-byte (schema 1) keys are touched, so a crash
    /// mid-way is finished by the next open. `refs` needs nothing: schema 1
    /// counts decode as "never decremented", which GC reads as long past.
    fn migrate_gcq_v1(&self) -> Result<()> {
        let cf = self.cf(CF_GCQ)?;
        let mut moved = 0u64;
        let mut batch = WriteBatch::default();
        // One iterator (it reads a snapshot, so the keys written meanwhile are
        // not met again); a batch every 10,000 entries.
        for item in self.db.iterator_cf(cf, IteratorMode::Start) {
            let (k, v) = item?;
            let Ok(hash) = <[u8; 32]>::try_from(&k[..]) else { continue };
            let since: Timestamp = codec::decode(&v, CF_GCQ).unwrap_or(Timestamp::from_millis(0));
            batch.put_cf(cf, gcq_key(since, &BlobHash::from_bytes(hash)), b"");
            batch.delete_cf(cf, &k);
            moved += 1;
            if batch.len() >= 20_000 {
                self.write(std::mem::take(&mut batch))?;
            }
        }
        if !batch.is_empty() {
            self.write(batch)?;
        }
        if moved > 0 {
            tracing::info!(entries = moved, "index migrated to schema 2: GC queue ordered by time");
        }
        Ok(())
    }

    pub fn cf(&self, name: &str) -> Result<&ColumnFamily> {
        self.db.cf_handle(name).ok_or_else(|| Error::Index(format!("column family {name} missing")))
    }

    /// Commits a batch durably (WAL fsynced before returning).
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut wo = WriteOptions::default();
        wo.set_sync(true);
        self.db.write_opt(batch, &wo)?;
        Ok(())
    }

    /// Commits a batch whose loss in a crash is harmless (it is redone).
    pub fn write_relaxed(&self, batch: WriteBatch) -> Result<()> {
        self.db.write(batch)?;
        Ok(())
    }

    /// Deletes one key, not synced (for entries whose loss is harmless).
    pub fn delete_relaxed(&self, cf: &str, key: &[u8]) -> Result<()> {
        self.db.delete_cf(self.cf(cf)?, key)?;
        Ok(())
    }

    pub fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        if CACHE_ONLY.get() {
            let mut ro = ReadOptions::default();
            ro.set_read_tier(ReadTier::BlockCache);
            return match self.db.get_cf_opt(self.cf(cf)?, key, &ro) {
                Ok(v) => Ok(v),
                Err(e) if e.kind() == rocksdb::ErrorKind::Incomplete => Err(Error::NotCached),
                Err(e) => Err(e.into()),
            };
        }
        Ok(self.db.get_cf(self.cf(cf)?, key)?)
    }

    pub fn get_decoded<T: serde::de::DeserializeOwned>(&self, cf: &str, key: &[u8]) -> Result<Option<T>> {
        match self.get(cf, key)? {
            Some(v) => Ok(Some(codec::decode(&v, cf)?)),
            None => Ok(None),
        }
    }

    /// Current reference count of a blob (0 when absent).
    pub fn refcount(&self, hash: &BlobHash) -> Result<codec::RefCount> {
        match self.get(CF_REFS, hash.as_bytes())? {
            Some(v) => codec::decode_count(&v),
            None => Ok(codec::RefCount::default()),
        }
    }

    /// Iterates `cf` over keys in `[lower, upper)` with both bounds given to
    /// RocksDB, so deleted entries below `lower` are never stepped over.
    pub fn range_bounded<'a>(
        &'a self,
        cf: &str,
        lower: Vec<u8>,
        upper: Vec<u8>,
    ) -> Result<impl Iterator<Item = Result<KeyValue>> + 'a> {
        refuse_in_cache_only()?;
        let mut ro = ReadOptions::default();
        ro.set_iterate_lower_bound(lower.clone());
        ro.set_iterate_upper_bound(upper);
        let it = self.db.iterator_cf_opt(self.cf(cf)?, ro, IteratorMode::From(&lower, Direction::Forward));
        Ok(it.map(|r| r.map_err(Error::from)))
    }

    /// Compacts `cf` up to `end` (exclusive), dropping the tombstones of
    /// consumed queue entries so a later scan from the start does not step
    /// over them.
    pub fn compact_prefix(&self, cf: &str, end: &[u8]) -> Result<()> {
        self.db.compact_range_cf(self.cf(cf)?, None::<&[u8]>, Some(end));
        Ok(())
    }

    /// Iterates `cf` over keys in `[start, end)` (end `None` = to the end), in order.
    pub fn range<'a>(
        &'a self,
        cf: &str,
        start: &[u8],
        end: Option<Vec<u8>>,
    ) -> Result<impl Iterator<Item = Result<KeyValue>> + 'a> {
        refuse_in_cache_only()?;
        let mut ro = ReadOptions::default();
        if let Some(end) = end {
            ro.set_iterate_upper_bound(end);
        }
        let it = self.db.iterator_cf_opt(self.cf(cf)?, ro, IteratorMode::From(start, Direction::Forward));
        Ok(it.map(|r| r.map_err(Error::from)))
    }

    /// Reads every entry of every column family with block checksums verified,
    /// bypassing the cache: finds a damaged block that reads would only meet
    /// later. Returns the number of entries read.
    pub fn verify(&self) -> Result<u64> {
        let mut cur = VerifyCursor::default();
        self.verify_step(&mut cur, &|| true)?;
        Ok(cur.entries)
    }

    /// Continues a verification from `cur` while `go()` says so (asked every
    /// 4096 entries). Returns true when every column family was read.
    pub fn verify_step(&self, cur: &mut VerifyCursor, go: &dyn Fn() -> bool) -> Result<bool> {
        while let Some(cf) = ALL_CFS.get(cur.cf) {
            let mut ro = ReadOptions::default();
            ro.set_verify_checksums(true);
            ro.fill_cache(false);
            let mode = match &cur.after {
                Some(k) => IteratorMode::From(k, Direction::Forward),
                None => IteratorMode::Start,
            };
            let mut seen = 0u32;
            for item in self.db.iterator_cf_opt(self.cf(cf)?, ro, mode) {
                let (k, _) = item.map_err(|e| {
                    Error::Corrupt(format!("the index is damaged (column family {cf}): {}", e.into_string()))
                })?;
                if cur.after.as_deref() == Some(&k[..]) {
                    continue;
                }
                cur.entries += 1;
                seen += 1;
                if seen.is_multiple_of(4096) && !go() {
                    cur.after = Some(k.to_vec());
                    return Ok(false);
                }
            }
            cur.cf += 1;
            cur.after = None;
        }
        Ok(true)
    }

    /// A raw iterator over `cf`, bounded above by `upper` (exclusive), for scans
    /// that seek (listing with delimiters skips whole common prefixes).
    pub fn raw_iter(&self, cf: &str, upper: Option<Vec<u8>>) -> Result<rocksdb::DBRawIterator<'_>> {
        refuse_in_cache_only()?;
        let mut ro = ReadOptions::default();
        if let Some(u) = upper {
            ro.set_iterate_upper_bound(u);
        }
        Ok(self.db.raw_iterator_cf_opt(self.cf(cf)?, ro))
    }

    /// Approximate on-disk size of the index (SST + live memtables), for metrics.
    pub fn approximate_size(&self) -> u64 {
        let mut total = 0;
        for name in ALL_CFS {
            if let Ok(cf) = self.cf(name) {
                for prop in ["rocksdb.total-sst-files-size", "rocksdb.cur-size-all-mem-tables"] {
                    if let Ok(Some(v)) = self.db.property_int_value_cf(cf, prop) {
                        total += v;
                    }
                }
            }
        }
        total
    }

    /// Flushes memtables (used on clean shutdown so start-up replays little WAL).
    pub fn flush(&self) -> Result<()> {
        let cfs: Vec<&ColumnFamily> = ALL_CFS.iter().filter_map(|n| self.db.cf_handle(n)).collect();
        self.db.flush_cfs_opt(&cfs, &rocksdb::FlushOptions::default())?;
        Ok(())
    }
}

/// Invariant of `quarantine` entries: each holds one reference to its blob, so
/// the refcount check counts them like object entries.
///
/// `<bucket> 0x00 <key>`.
pub(crate) fn object_key(bucket: &BucketName, key: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(bucket.as_str().len() + 1 + key.len());
    k.extend_from_slice(bucket.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(key.as_bytes());
    k
}

/// Prefix of every object key of a bucket.
/// `meta` key prefix of tier records: `tier/blob/<32-byte hash>` -> [`crate::types::RemoteLoc`].
pub(crate) const TIER_BLOB_PREFIX: &[u8] = b"tier/blob/";
/// `meta` key prefix of tier policies: `tier/policy/<bucket> 0x00 <prefix>`.
pub(crate) const TIER_POLICY_PREFIX: &[u8] = b"tier/policy/";

/// `meta` key prefix of the tier cache: `tier/cache/<32-byte hash>` -> [`crate::tier::Cached`]:
/// blobs a read brought back, kept local while the cache budget allows.
pub(crate) const TIER_CACHE_PREFIX: &[u8] = b"tier/cache/";

/// The `meta` key of blob `hash`'s tier cache entry.
pub(crate) fn tier_cache_key(hash: &BlobHash) -> Vec<u8> {
    let mut k = TIER_CACHE_PREFIX.to_vec();
    k.extend_from_slice(hash.as_bytes());
    k
}

/// The `meta` key of blob `hash`'s tier record.
pub(crate) fn tier_blob_key(hash: &BlobHash) -> Vec<u8> {
    let mut k = TIER_BLOB_PREFIX.to_vec();
    k.extend_from_slice(hash.as_bytes());
    k
}

/// The `meta` key prefix of `bucket`'s tier policies.
pub(crate) fn tier_policy_bucket_prefix(bucket: &str) -> Vec<u8> {
    let mut k = TIER_POLICY_PREFIX.to_vec();
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k
}

pub(crate) fn bucket_prefix(bucket: &BucketName) -> Vec<u8> {
    let mut k = bucket.as_str().as_bytes().to_vec();
    k.push(0);
    k
}

/// The smallest byte string greater than every string starting with `prefix`
/// (`None` if there is none, i.e. the prefix is all 0xff).
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// `<bucket> 0x00 <key> 0x00 <upload id>`.
pub(crate) fn upload_key(bucket: &BucketName, key: &ObjectKey, id: &UploadId) -> Vec<u8> {
    let mut k = object_key(bucket, key.as_str());
    k.push(0);
    k.extend_from_slice(id.as_str().as_bytes());
    k
}

/// `<upload id> <part u32 BE>`.
pub(crate) fn part_key(id: &UploadId, part: u32) -> Vec<u8> {
    let mut k = id.as_str().as_bytes().to_vec();
    k.extend_from_slice(&part.to_be_bytes());
    k
}

thread_local! {
    /// Set while [`cache_only`] runs on this thread.
    static CACHE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` with this thread's index reads limited to what is in memory (memtables and
/// the block cache): a point read that would touch the disk, and any scan, fails with
/// [`Error::NotCached`], and then this returns `None`. Lets a request be answered on
/// the async thread that received it, without a trip to the blocking pool, when that
/// cannot block it on I/O.
pub(crate) fn cache_only<T>(f: impl FnOnce() -> Result<T>) -> Option<Result<T>> {
    struct Reset(bool);
    impl Drop for Reset {
        fn drop(&mut self) {
            CACHE_ONLY.set(self.0);
        }
    }
    let _reset = Reset(CACHE_ONLY.replace(true));
    match f() {
        Err(Error::NotCached) => None,
        r => Some(r),
    }
}

/// True inside [`cache_only`].
pub(crate) fn in_cache_only() -> bool {
    CACHE_ONLY.get()
}

fn refuse_in_cache_only() -> Result<()> {
    if CACHE_ONLY.get() {
        return Err(Error::NotCached);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field a listing reads comes back as the full entry wrote it, with and
    /// without the optional parts, whatever follows them.
    #[test]
    fn a_listing_reads_what_an_entry_wrote() {
        let full = ObjectEntry {
            size: 16 << 20,
            etag: ETag::multipart(&[[1; 16], [2; 16]]),
            last_modified: Timestamp::from_millis(1_765_000_000_123),
            meta: ObjectMeta {
                content_type: Some("application/octet-stream".into()),
                headers: vec![
                    ("cache-control".into(), "no-cache".into()),
                    ("x-amz-storage-class".into(), "GLACIER".into()),
                ],
                user: vec![("walg".into(), "yes".into())],
            },
            checksum: Some(Checksum {
                algorithm: ChecksumAlgorithm::Crc32c,
                value: vec![1, 2, 3, 4],
                kind: crate::types::ChecksumType::Composite { parts: 2 },
            }),
            parts_count: Some(2),
            blobs: vec![BlobRef { hash: BlobHash::from_bytes([9; 32]), size: 1 }; 3],
            version: VersionTrail {
                seq: 1_765_000_000_123_000,
                null: false,
                versioned: true,
                retention: Some(Retention {
                    mode: LockMode::Compliance,
                    until: Timestamp::from_millis(1_800_000_000_000),
                }),
                legal_hold: true,
            },
        };
        let bare = ObjectEntry {
            size: 0,
            etag: ETag::from_md5(&[0; 16]),
            last_modified: Timestamp::from_millis(0),
            meta: ObjectMeta::default(),
            checksum: None,
            parts_count: None,
            blobs: vec![],
            version: VersionTrail::default(),
        };
        for e in [full, bare] {
            let bytes = e.encode().expect("encode");
            // An entry without versioning data keeps the V1 form byte for byte.
            assert_eq!(bytes[0] == codec::VALUE_V1, e.version == VersionTrail::default());
            let back = ObjectEntry::decode(&bytes).expect("decode entry");
            assert_eq!((back.version, back.size, &back.blobs), (e.version, e.size, &e.blobs));
            // A reader that would drop the trailer refuses the value instead.
            if e.version != VersionTrail::default() {
                assert!(codec::decode::<ObjectEntry>(&bytes, "test").is_err());
            }
            let l: ObjectListing = codec::decode_leading(&bytes, "test").expect("decode");
            assert_eq!((l.size, l.etag, l.last_modified), (e.size, e.etag.as_str(), e.last_modified));
            assert_eq!(l.meta.content_type, e.meta.content_type.as_deref());
            let pairs = |v: &[(String, String)]| v.iter().map(|(a, b)| (a.clone(), b.clone())).collect::<Vec<_>>();
            let owned = |v: &[(&str, &str)]| v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect::<Vec<_>>();
            assert_eq!(owned(&l.meta.headers), pairs(&e.meta.headers));
            assert_eq!(owned(&l.meta.user), pairs(&e.meta.user));
            assert_eq!(l.checksum, e.checksum);
        }
    }

    #[test]
    fn schema_1_gc_queue_is_rekeyed_by_time_at_open() {
        let dir = tempfile::tempdir().expect("tmp");
        let (h1, h2) = (BlobHash::from_bytes([7; 32]), BlobHash::from_bytes([1; 32]));
        {
            let idx = Index::open(dir.path(), &IndexOptions::default()).expect("open");
            let mut b = WriteBatch::default();
            b.put_cf(idx.cf(CF_META).expect("cf"), b"schema", codec::encode(&1u32).expect("encode"));
            b.put_cf(
                idx.cf(CF_GCQ).expect("cf"),
                h1.as_bytes(),
                codec::encode(&Timestamp::from_millis(1000)).expect("encode"),
            );
            b.put_cf(
                idx.cf(CF_GCQ).expect("cf"),
                h2.as_bytes(),
                codec::encode(&Timestamp::from_millis(2000)).expect("encode"),
            );
            // A schema 1 count: no decrement time.
            b.put_cf(idx.cf(CF_REFS).expect("cf"), h1.as_bytes(), [1u8, 0, 0, 0, 0, 0, 0, 0, 0]);
            idx.write(b).expect("write");
        }
        let idx = Index::open(dir.path(), &IndexOptions::default()).expect("reopen migrates");
        let keys: Vec<_> = idx.range(CF_GCQ, b"", None).expect("range").map(|kv| kv.expect("kv").0).collect();
        let split: Vec<_> = keys.iter().map(|k| gcq_split(k).expect("schema 2 key")).collect();
        assert_eq!(split, vec![(Timestamp::from_millis(1000), h1), (Timestamp::from_millis(2000), h2)]);
        assert_eq!(idx.get_decoded::<u32>(CF_META, b"schema").expect("get"), Some(SCHEMA_VERSION));
        assert_eq!(idx.refcount(&h1).expect("rc"), codec::RefCount { count: 0, last_unref_ms: 0 });
        // A merge onto a schema 1 count keeps the count and adds the time.
        let mut b = WriteBatch::default();
        b.merge_cf(
            idx.cf(CF_REFS).expect("cf"),
            h1.as_bytes(),
            codec::encode_count(codec::RefCount { count: 2, last_unref_ms: 5 }),
        );
        idx.write(b).expect("merge");
        assert_eq!(idx.refcount(&h1).expect("rc"), codec::RefCount { count: 2, last_unref_ms: 5 });
    }

    /// Every file under `dir` with its bytes: a refusal must leave them as they were.
    fn snapshot(dir: &Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).expect("read_dir") {
                let p = e.expect("entry").path();
                if p.is_dir() {
                    todo.push(p);
                } else {
                    out.insert(p.clone(), std::fs::read(&p).expect("read"));
                }
            }
        }
        out
    }

    /// Makes the index in `dir` look written by another walstore: schema `version`,
    /// and a column family `extra` with an entry.
    fn forge(dir: &Path, version: u32, extra: Option<&str>) {
        let mut idx = Index::open(dir, &IndexOptions::default()).expect("open");
        if let Some(name) = extra {
            idx.db.create_cf(name, &Options::default()).expect("create cf");
            let cf = idx.cf(name).expect("cf");
            idx.db.put_cf(cf, b"k", b"v").expect("put");
        }
        let mut b = WriteBatch::default();
        b.put_cf(idx.cf(CF_META).expect("cf"), b"schema", codec::encode(&version).expect("encode"));
        idx.write(b).expect("write");
    }

    #[test]
    fn an_index_of_a_newer_schema_is_refused_in_one_line_and_left_untouched() {
        // With a family this build does not know (RocksDB alone would refuse to
        // open it) and without one (it would open and be written to).
        for extra in [Some("future_family"), None] {
            let dir = tempfile::tempdir().expect("tmp");
            forge(dir.path(), 99, extra);
            let before = snapshot(dir.path());
            let err = Index::open(dir.path(), &IndexOptions::default()).err().expect("refused");
            assert_eq!(
                err.to_string(),
                format!(
                    "index error: the index at {} has schema version 99, written by a newer walstore; this build \
                     reads schema versions up to {SCHEMA_VERSION} (upgrade walstore, or restore a copy made before \
                     the upgrade)",
                    dir.path().display()
                ),
                "{extra:?}"
            );
            assert!(snapshot(dir.path()) == before, "refusing the index changed its files ({extra:?})");
        }
    }

    #[test]
    fn unknown_column_families_at_a_known_schema_are_refused() {
        let dir = tempfile::tempdir().expect("tmp");
        forge(dir.path(), SCHEMA_VERSION, Some("stranger"));
        let before = snapshot(dir.path());
        let err = Index::open(dir.path(), &IndexOptions::default()).err().expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "index error: the index at {} has column families no walstore writes (stranger) at schema version \
                 {SCHEMA_VERSION}: it is damaged or not a walstore index. Restore the data directory (index/ and \
                 blobs/ together) from a copy",
                dir.path().display()
            )
        );
        assert!(snapshot(dir.path()) == before, "refusing the index changed its files");
    }

    #[test]
    fn key_order_matches_s3_listing_order() {
        let b = BucketName::parse("bkt").expect("bucket");
        let b2 = BucketName::parse("bkt-2").expect("bucket");
        let mut keys = vec![
            object_key(&b, "b"),
            object_key(&b2, "a"),
            object_key(&b, "a/b"),
            object_key(&b, "a"),
            object_key(&b, "a0"),
        ];
        keys.sort();
        assert_eq!(
            keys,
            vec![
                object_key(&b, "a"),
                object_key(&b, "a/b"),
                object_key(&b, "a0"),
                object_key(&b, "b"),
                object_key(&b2, "a"),
            ]
        );
        // A bucket's key range never reaches into another bucket's.
        let end = prefix_end(&bucket_prefix(&b)).expect("end");
        assert!(object_key(&b2, "a") >= end || !object_key(&b2, "a").starts_with(&bucket_prefix(&b)));
        assert!(object_key(&b, "\u{10FFFF}") < end);
    }

    #[test]
    fn prefix_end_cases() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[b'a', 0xff]), Some(b"b".to_vec()));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }
}
