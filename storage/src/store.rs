//! The store: buckets, objects and the one durable-write routine.
//!
//! Every operation that acknowledges a write ends in [`Store::commit`], which
//! (1) makes each new blob file durable under its hash (fsync, rename, fsync dir)
//! while holding the blob's lock and (2) commits one RocksDB batch with `sync`,
//! holding the object entry, the blob metadata (and the bytes of a blob small
//! enough to be inline, see [`INLINE_MAX`]) and every reference-count change.
//! Only after both does the caller answer the client.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rocksdb::WriteBatch;

use crate::blob::{BlobFile, BlobStore, FsBlobStore, RemoteBlobs};
use crate::clock::{Clock, SystemClock};
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{
    bucket_prefix, object_key, prefix_end, BlobMeta, BucketConfig, BucketEntry, Index, IndexOptions, ObjectEntry,
    ObjectListing, CF_BLOBS, CF_BUCKETS, CF_GCQ, CF_INLINE, CF_META, CF_OBJECTS, CF_REFS, CF_UPLOADS, CF_VERSIONS,
};
use crate::locks::{lock_id, Level, OrderedRwLock, Stripes};
use crate::space::{SpaceGuard, SpaceReserve};
use crate::types::{
    BlobHash, BlobRef, BucketInfo, BucketName, ChecksumAlgorithm, ETag, ObjectInfo, ObjectKey, RemoteLoc, Timestamp,
};
use crate::writer::{BlobWriter, StagedBlob, StagedBody, BLOCK_SIZE, INLINE_MAX};

/// Settings of the storage engine.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Data directory; holds `index/` (RocksDB) and `blobs/`.
    pub data_dir: PathBuf,
    /// How long a blob stays on disk after it lost its last reference, before GC
    /// may remove it.
    pub gc_grace: Duration,
    /// Multipart uploads older than this are aborted by the maintenance pass.
    pub multipart_expiry: Duration,
    /// Minimum size of every part but the last (S3: 5 MiB).
    pub min_part_size: u64,
    /// Index tuning.
    pub index: IndexOptions,
    /// Free space new bytes must leave on the data directory's filesystem.
    pub space_reserve: SpaceReserve,
    /// Wall-clock time for everything persisted or decided by time.
    pub clock: Arc<dyn Clock>,
}

impl StoreConfig {
    /// Defaults for a data directory: 1 h GC grace, 7 d multipart expiry, 5 MiB parts.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            gc_grace: Duration::from_secs(3600),
            multipart_expiry: Duration::from_secs(7 * 24 * 3600),
            min_part_size: 5 << 20,
            index: IndexOptions::default(),
            space_reserve: SpaceReserve::Auto,
            clock: Arc::new(SystemClock),
        }
    }
}

/// Counters for metrics; monotonically increasing.
#[derive(Debug, Default)]
pub struct StoreStats {
    /// Blocks whose CRC was verified on read.
    pub blocks_verified: AtomicU64,
    /// Blocks that failed verification (never served).
    pub checksum_failures: AtomicU64,
    /// Blobs removed by GC.
    pub gc_reclaimed_blobs: AtomicU64,
    /// Bytes removed by GC.
    pub gc_reclaimed_bytes: AtomicU64,
    /// Writes that found their blob already stored (deduplicated).
    pub dedup_hits: AtomicU64,
    /// Blobs re-hashed by scrubs.
    pub scrub_blobs_checked: AtomicU64,
    /// Corrupt blobs found by scrubs.
    pub scrub_corrupt_blobs: AtomicU64,
}

/// Parameters of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up to the first occurrence of this after the prefix.
    pub delimiter: Option<String>,
    /// Resume after this key or common prefix (exclusive).
    pub after: Option<String>,
    /// Maximum number of entries (objects + common prefixes).
    pub max_keys: usize,
}

/// One object in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectSummary {
    /// Key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// ETag.
    pub etag: ETag,
    /// Last write.
    pub last_modified: Timestamp,
    /// Stored `x-amz-storage-class`, if any.
    pub storage_class: Option<String>,
    /// Stored checksum algorithm, if any.
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// `FULL_OBJECT` / `COMPOSITE` type of that checksum.
    pub checksum_type: Option<&'static str>,
}

/// An entry of a listing, in key order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListItem {
    /// An object.
    Object(ObjectSummary),
    /// A common prefix (ends with the delimiter).
    Prefix(String),
}

impl ListItem {
    /// The key or prefix.
    pub fn name(&self) -> &str {
        match self {
            ListItem::Object(o) => &o.key,
            ListItem::Prefix(p) => p,
        }
    }
}

/// One page of a listing.
#[derive(Debug, Clone, Default)]
pub struct ListPage {
    /// Entries in order.
    pub items: Vec<ListItem>,
    /// More entries follow; resume with `after` = the last item's name.
    pub truncated: bool,
}

/// The storage engine.
pub struct Store {
    pub(crate) index: Index,
    pub(crate) blobs: Arc<dyn BlobStore>,
    pub(crate) key_locks: Stripes,
    pub(crate) blob_locks: Stripes,
    /// Readers: any write into a bucket. Writer: bucket creation/deletion.
    pub(crate) bucket_lock: OrderedRwLock,
    pub(crate) config: StoreConfig,
    pub(crate) stats: Arc<StoreStats>,
    read_only: AtomicBool,
    pub(crate) guard: crate::wal::state::WalGuard,
    space: Arc<SpaceGuard>,
    pub(crate) gc_cursor: parking_lot::Mutex<crate::index::GcCursor>,
    /// Requests to run a background job now.
    pub(crate) jobs: crate::budget::JobRequests,
    /// Replication targets (see [`crate::replication`]), read by every write.
    pub(crate) repl_targets: parking_lot::RwLock<Vec<crate::types::TargetRecord>>,
    /// Last replication journal sequence number handed out.
    pub(crate) repl_seq: AtomicU64,
    /// Reads tiered blobs from their target (see [`crate::tier`]); none until the
    /// server plugs one in.
    remote_blobs: parking_lot::RwLock<Option<Arc<dyn RemoteBlobs>>>,
}

impl Store {
    /// Opens the store in `config.data_dir` with local blob files.
    pub fn open(config: StoreConfig) -> Result<Self> {
        let blobs = Arc::new(FsBlobStore::open(config.data_dir.join("blobs"))?);
        Self::open_with_blob_store(config, blobs)
    }

    /// Opens the store with a custom blob store (another tier, or a test double).
    pub fn open_with_blob_store(config: StoreConfig, blobs: Arc<dyn BlobStore>) -> Result<Self> {
        crate::blob::create_dir_durable(&config.data_dir)?;
        let index_dir = config.data_dir.join("index");
        let marker = config.data_dir.join(IN_USE_MARKER);
        // What says this directory held objects, apart from the index itself.
        let evidence = || -> Result<Option<String>> {
            if any_blob(blobs.as_ref())? {
                Ok(Some(format!("{} holds blob files", blobs.root().display())))
            } else if marker.exists() {
                Ok(Some(format!("{} says the index held buckets", marker.display())))
            } else {
                Ok(None)
            }
        };
        if !index_dir.join("CURRENT").exists() {
            if let Some(evidence) = evidence()? {
                // Starting would create an empty index, and the orphan sweep would
                // then delete every blob an hour later.
                return Err(Error::Corrupt(format!(
                    "{} holds no index but {evidence}; refusing to start with an empty index (the orphan sweep \
                     would delete the blob files, and objects kept inline in the index would be gone). Restore \
                     index/ from the copy it belongs to",
                    index_dir.display(),
                )));
            }
        }
        let index = Index::open(&index_dir, &config.index)?;
        let empty = |cf| -> Result<bool> { Ok(index.range(cf, b"", None)?.next().is_none()) };
        if empty(CF_BUCKETS)? && empty(CF_BLOBS)? {
            // RocksDB reads a MANIFEST cut at a record boundary as an older state
            // (here: before the first bucket) and drops the newer table files.
            // Every blob file has a record until GC removes both, and the marker
            // exists while a bucket does, so either without any bucket or blob
            // record means the index was lost.
            if let Some(evidence) = evidence()? {
                return Err(Error::Corrupt(format!(
                    "the index at {} is empty but {evidence}: the index was lost or reset (a damaged MANIFEST \
                     reads as an older state). Refusing to start (the orphan sweep would delete the blob files); \
                     restore index/ from the copy it belongs to",
                    index_dir.display(),
                )));
            }
        } else if !marker.exists() {
            // An index from before the marker existed, or a crash between the
            // last bucket's deletion and a new bucket's marker.
            write_marker(&marker)?;
        }
        let swept = blobs.sweep_staging()?;
        if swept > 0 {
            tracing::info!(files = swept, "removed staging files left by an interrupted run");
        }
        let store = Self {
            index,
            blobs,
            key_locks: Stripes::new(Level::Key, 1024),
            blob_locks: Stripes::new(Level::Blob, 1024),
            bucket_lock: OrderedRwLock::new(Level::Bucket),
            stats: Arc::new(StoreStats::default()),
            read_only: AtomicBool::new(false),
            guard: crate::wal::state::WalGuard::default(),
            space: SpaceGuard::new(config.data_dir.clone(), config.space_reserve),
            gc_cursor: Default::default(),
            jobs: Default::default(),
            repl_targets: Default::default(),
            repl_seq: AtomicU64::new(0),
            remote_blobs: Default::default(),
            config,
        };
        store.load_replication()?;
        Ok(store)
    }

    /// Reads the whole index with checksums verified (see the maintenance job
    /// `index-verify`); returns the number of entries.
    pub fn verify_index(&self) -> Result<u64> {
        self.index.verify()
    }

    /// One step of [`Store::verify_index`]: continues from `cur` while `go()`
    /// says so; true when done.
    pub fn verify_index_step(&self, cur: &mut crate::index::VerifyCursor, go: &dyn Fn() -> bool) -> Result<bool> {
        self.index.verify_step(cur, go)
    }

    /// The current time of the store's clock.
    pub fn now(&self) -> Timestamp {
        self.config.clock.timestamp()
    }

    /// The store's clock.
    pub fn clock(&self) -> &dyn Clock {
        self.config.clock.as_ref()
    }

    /// Asks the scheduler running this store's background jobs to run `job`
    /// now (`scrub`, `gc`, `retention`, …). False if no scheduler runs.
    pub fn request_job(&self, job: &'static str) -> bool {
        self.jobs.request(job)
    }

    /// The configuration in effect.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Counters for metrics.
    pub fn stats(&self) -> &StoreStats {
        &self.stats
    }

    /// Approximate bytes used by the index.
    pub fn index_size_bytes(&self) -> u64 {
        self.index.approximate_size()
    }

    /// Flushes the index memtables; call on clean shutdown.
    pub fn flush(&self) -> Result<()> {
        self.index.flush()
    }

    /// Starts receiving a body; the writer computes the listed checksums plus
    /// CRC64NVME (stored when the client sends none, as S3 does).
    pub fn blob_writer(&self, checksums: &[ChecksumAlgorithm]) -> Result<BlobWriter> {
        self.blob_writer_for(checksums, None)
    }

    /// Like [`Store::blob_writer`] for a body announcing `expected_len` bytes: the
    /// write is refused up front ([`Error::InsufficientStorage`]) if it would eat
    /// into the disk-space reserve, and checked again if it runs past that length.
    pub fn blob_writer_for(&self, checksums: &[ChecksumAlgorithm], expected_len: Option<u64>) -> Result<BlobWriter> {
        self.ensure_writable()?;
        let ticket = self.space.admit(expected_len.unwrap_or(0))?;
        let mut algos = checksums.to_vec();
        if !algos.contains(&ChecksumAlgorithm::Crc64Nvme) {
            algos.push(ChecksumAlgorithm::Crc64Nvme);
        }
        Ok(BlobWriter::new(self.blobs.clone(), &algos, expected_len)?.with_space(ticket))
    }

    /// The disk-space reserve in bytes on the data directory's filesystem now.
    pub fn space_reserve_bytes(&self) -> Result<u64> {
        self.space.reserve_bytes()
    }

    /// Refuses writes (used when the disk is full or the index failed).
    pub fn set_read_only(&self, on: bool) {
        self.read_only.store(on, Ordering::SeqCst);
    }

    pub(crate) fn ensure_writable(&self) -> Result<()> {
        if self.read_only.load(Ordering::SeqCst) {
            Err(Error::InsufficientStorage("the store is read-only".into()))
        } else {
            Ok(())
        }
    }

    // ---------------------------------------------------------------- durable write

    /// The durable-write routine. See the module documentation for the guarantee.
    ///
    /// `staged` blobs get one new reference each (their metadata is written if
    /// new); everything else (object entries, other reference changes) is already
    /// in `batch`.
    pub(crate) fn commit(&self, staged: Vec<StagedBlob>, mut batch: WriteBatch) -> Result<()> {
        let staged: Vec<StagedBlob> = staged.into_iter().filter(|s| s.size > 0).collect();
        let hashes: Vec<BlobHash> = staged.iter().map(|s| s.hash).collect();
        let ids: Vec<u64> = hashes.iter().map(lock_id).collect();
        let _blob_guards = self.blob_locks.lock_all(&ids);
        let blobs_cf = self.index.cf(CF_BLOBS)?;
        let refs_cf = self.index.cf(CF_REFS)?;
        for s in staged {
            let StagedBlob { body, hash, size, crcs, .. } = s;
            // Whether the blob was already stored (as a file or inline).
            let existed = match body {
                StagedBody::File(staging) => {
                    let new_file = self.blobs.place(staging, &hash, size)?;
                    if self.tier_loc(&hash)?.is_some() {
                        // The same bytes arrived again while the blob was evicted (placed now,
                        // or a file an interrupted eviction left, whose name proves its
                        // content): local again, before a second reference could share
                        // the first object's remote location.
                        batch.delete_cf(self.index.cf(CF_META)?, crate::index::tier_blob_key(&hash));
                    }
                    !new_file && self.index.get(CF_BLOBS, hash.as_bytes())?.is_some()
                }
                StagedBody::Inline(bytes) => {
                    let existed = self.index.get(CF_BLOBS, hash.as_bytes())?.is_some();
                    if !existed {
                        batch.put_cf(self.index.cf(CF_INLINE)?, hash.as_bytes(), encode_inline(&bytes));
                    }
                    existed
                }
            };
            if existed {
                self.stats.dedup_hits.fetch_add(1, Ordering::Relaxed);
            } else {
                let meta = BlobMeta { size, block_size: BLOCK_SIZE, crcs };
                batch.put_cf(blobs_cf, hash.as_bytes(), codec::encode(&meta)?);
            }
            batch.merge_cf(
                refs_cf,
                hash.as_bytes(),
                codec::encode_count(codec::RefCount { count: 1, last_unref_ms: 0 }),
            );
        }
        self.index.write(batch)
    }

    /// Adds reference decrements for `blobs` to `batch` and queues them for GC.
    pub(crate) fn unref(&self, batch: &mut WriteBatch, blobs: &[BlobRef], now: Timestamp) -> Result<()> {
        let refs_cf = self.index.cf(CF_REFS)?;
        let gcq_cf = self.index.cf(CF_GCQ)?;
        let dec = codec::encode_count(codec::RefCount { count: -1, last_unref_ms: now.as_millis() });
        for b in blobs {
            batch.merge_cf(refs_cf, b.hash.as_bytes(), dec);
            batch.put_cf(gcq_cf, crate::index::gcq_key(now, &b.hash), b"");
        }
        Ok(())
    }

    /// Adds reference increments for blobs that are already stored and referenced
    /// by an entry the caller holds the lock of.
    pub(crate) fn add_refs(&self, batch: &mut WriteBatch, blobs: &[BlobRef]) -> Result<()> {
        let refs_cf = self.index.cf(CF_REFS)?;
        for b in blobs {
            batch.merge_cf(
                refs_cf,
                b.hash.as_bytes(),
                codec::encode_count(codec::RefCount { count: 1, last_unref_ms: 0 }),
            );
        }
        Ok(())
    }

    // ---------------------------------------------------------------- buckets

    /// Creates a bucket; `BucketAlreadyExists` if it exists.
    pub fn create_bucket(&self, name: &BucketName) -> Result<BucketInfo> {
        self.create_bucket_with(name, BucketConfig::default())
    }

    pub(crate) fn create_bucket_with(&self, name: &BucketName, config: BucketConfig) -> Result<BucketInfo> {
        self.ensure_writable()?;
        let _w = self.bucket_lock.write();
        if self.index.get(CF_BUCKETS, name.as_str().as_bytes())?.is_some() {
            return Err(Error::BucketAlreadyExists);
        }
        let entry = BucketEntry { created: self.now(), config };
        // The marker first: a bucket without it would lose the evidence.
        write_marker(&self.marker_path())?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_BUCKETS)?, name.as_str().as_bytes(), entry.encode()?);
        if let Err(e) = self.commit(Vec::new(), batch) {
            if self.list_buckets().is_ok_and(|b| b.is_empty()) {
                // Else the next start would read the empty index as a lost one.
                let _ = remove_marker(&self.marker_path());
            }
            return Err(e);
        }
        Ok(bucket_info(name.clone(), entry))
    }

    /// Deletes an empty bucket (no objects, no open uploads).
    pub fn delete_bucket(&self, name: &BucketName) -> Result<()> {
        let _w = self.bucket_lock.write();
        self.bucket(name)?;
        let prefix = bucket_prefix(name);
        for cf in [CF_OBJECTS, CF_UPLOADS, CF_VERSIONS] {
            if let Some(first) = self.index.range(cf, &prefix, prefix_end(&prefix))?.next() {
                first?;
                return Err(Error::BucketNotEmpty);
            }
        }
        let last = self.list_buckets()?.len() == 1;
        if last {
            // Removed before the commit: a crash in between leaves a bucket
            // without its marker (written again at the next open), never a
            // marker that would refuse an index that is empty on purpose.
            remove_marker(&self.marker_path())?;
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_BUCKETS)?, name.as_str().as_bytes());
        // Its tiering policies go with it (a bucket created again later starts untiered).
        let tiers = crate::index::tier_policy_bucket_prefix(name.as_str());
        for item in self.index.range(CF_META, &tiers, prefix_end(&tiers))? {
            batch.delete_cf(self.index.cf(CF_META)?, item?.0);
        }
        // So do its repositories' identities.
        self.drop_identities_into(&mut batch, name)?;
        self.commit(Vec::new(), batch)
    }

    /// Looks a bucket up.
    pub fn bucket(&self, name: &BucketName) -> Result<BucketInfo> {
        match self.index.get(CF_BUCKETS, name.as_str().as_bytes())? {
            Some(v) => Ok(bucket_info(name.clone(), BucketEntry::decode(&v)?)),
            None => match self.view(name)? {
                Some(_) => Err(Error::ReadOnlyView(name.as_str().to_owned())),
                None => Err(Error::NoSuchBucket),
            },
        }
    }

    /// A bucket, or an as-of view described as an unversioned bucket (for HeadBucket,
    /// GetBucketLocation and GetBucketVersioning, which a reader of the view asks).
    pub fn bucket_or_view(&self, name: &BucketName) -> Result<BucketInfo> {
        match self.bucket(name) {
            Err(Error::ReadOnlyView(_)) => match self.view(name)? {
                Some(v) => self.view_info(&v),
                None => Err(Error::NoSuchBucket),
            },
            other => other,
        }
    }

    /// All buckets, by name.
    pub fn list_buckets(&self) -> Result<Vec<BucketInfo>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_BUCKETS, b"", None)? {
            let (k, v) = item?;
            let entry = BucketEntry::decode(&v)?;
            let name = std::str::from_utf8(&k)
                .ok()
                .and_then(|s| BucketName::parse(s).ok())
                .ok_or_else(|| Error::Decode("bucket name".into()))?;
            out.push(bucket_info(name, entry));
        }
        Ok(out)
    }

    // ---------------------------------------------------------------- objects

    pub(crate) fn entry(&self, bucket: &BucketName, key: &str) -> Result<Option<ObjectEntry>> {
        match self.index.get(CF_OBJECTS, &object_key(bucket, key))? {
            Some(v) => Ok(Some(ObjectEntry::decode(&v)?)),
            None => Ok(None),
        }
    }

    /// Metadata of an object.
    /// Runs the reads in `f` only if everything they need is in memory (index entries
    /// in RocksDB's memtables or block cache, blob bytes stored inline); `None` if any
    /// of them would touch the disk, and then nothing was done. Lets the S3 layer answer
    /// a small read on its async thread and go to the blocking pool only when it must.
    /// Only reads belong in `f`: index scans and blob files always give `None`.
    pub fn without_io<T>(&self, f: impl FnOnce(&Store) -> Result<T>) -> Option<Result<T>> {
        crate::index::cache_only(|| f(self))
    }

    pub fn head_object(&self, bucket: &BucketName, key: &ObjectKey) -> Result<ObjectInfo> {
        match self.entry(bucket, key.as_str())? {
            Some(e) => Ok(info_of(bucket, key, e)),
            None => match self.bucket(bucket) {
                Ok(_) => Err(Error::NoSuchKey),
                Err(Error::ReadOnlyView(_)) => match self.view(bucket)? {
                    Some(v) => self.view_head(&v, key),
                    None => Err(Error::NoSuchBucket),
                },
                Err(e) => Err(e),
            },
        }
    }

    /// Checks that the blob directory accepts writes (readiness probe).
    pub fn probe_writable(&self) -> Result<()> {
        let mut s = self.blobs.create_staging()?;
        s.write_all(b"probe")
    }

    /// Lists objects in key order, rolling keys up into common prefixes at the
    /// delimiter. A range scan of the index; no directory is ever walked.
    pub fn list_objects(&self, bucket: &BucketName, q: &ListQuery) -> Result<ListPage> {
        if let Err(e) = self.bucket(bucket) {
            if let (Error::ReadOnlyView(_), Some(v)) = (&e, self.view(bucket)?) {
                return self.view_list(&v, q);
            }
            return Err(e);
        }
        let bprefix = bucket_prefix(bucket);
        let mut lower = bprefix.clone();
        lower.extend_from_slice(q.prefix.as_bytes());
        let upper = prefix_end(&lower).or_else(|| prefix_end(&bprefix));
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        if let Some(after) = &q.after {
            if !resume_after(&mut lower, &bprefix, after, &q.prefix, delimiter, 0) {
                return Ok(ListPage::default());
            }
        }
        let mut page = ListPage::default();
        let mut it = self.index.raw_iter(CF_OBJECTS, upper.clone())?;
        it.seek(&lower);
        while it.valid() {
            let Some(k) = it.key() else { break };
            let key = std::str::from_utf8(&k[bprefix.len()..])
                .map_err(|_| Error::Decode("object key is not UTF-8".into()))?;
            let common = delimiter
                .and_then(|d| key[q.prefix.len()..].find(d).map(|i| key[..q.prefix.len() + i + d.len()].to_owned()));
            if page.items.len() >= q.max_keys {
                page.truncated = true;
                break;
            }
            match common {
                Some(cp) => {
                    let mut next = bprefix.clone();
                    next.extend_from_slice(cp.as_bytes());
                    page.items.push(ListItem::Prefix(cp));
                    match prefix_end(&next) {
                        Some(n) => it.seek(&n),
                        None => break,
                    }
                }
                None => {
                    let v = it.value().ok_or_else(|| Error::Decode("listing value".into()))?;
                    let e: ObjectListing = codec::decode_leading(v, CF_OBJECTS)?;
                    page.items.push(ListItem::Object(summary_of(key.to_owned(), &e)));
                    it.next();
                }
            }
        }
        it.status()?;
        Ok(page)
    }

    /// Opens a reader over `range` (byte offsets, end exclusive) of an object.
    /// Every blob is opened now, so a missing blob fails before any byte is sent,
    /// and an open file keeps its bytes even if GC unlinks it meanwhile.
    pub fn read_object(&self, info: &ObjectInfo, range: std::ops::Range<u64>) -> Result<ObjectReader> {
        self.reader_for(&info.blobs, range)
    }

    /// A reader over `range` of one blob.
    pub(crate) fn read_blob(&self, blob: &BlobRef, range: std::ops::Range<u64>) -> Result<ObjectReader> {
        self.reader_for(std::slice::from_ref(blob), range)
    }

    /// Plugs in the reader of tiered blobs (the server does, with the crate that
    /// talks to replication targets).
    pub fn set_remote_blobs(&self, remote: Arc<dyn RemoteBlobs>) {
        *self.remote_blobs.write() = Some(remote);
    }

    /// Where the bytes of blob `hash` live if it was evicted to a target.
    pub(crate) fn tier_loc(&self, hash: &BlobHash) -> Result<Option<RemoteLoc>> {
        self.index
            .get(CF_META, &crate::index::tier_blob_key(hash))?
            .map(|v| codec::decode(&v, "tier record"))
            .transpose()
    }

    fn reader_for(&self, blobs: &[BlobRef], range: std::ops::Range<u64>) -> Result<ObjectReader> {
        let mut segments = VecDeque::new();
        let mut offset = 0u64;
        for b in blobs {
            let (start, end) = (offset, offset + b.size);
            offset = end;
            if end <= range.start || start >= range.end {
                continue;
            }
            let meta: BlobMeta = self
                .index
                .get_decoded(CF_BLOBS, b.hash.as_bytes())?
                .ok_or_else(|| Error::Corrupt(format!("no metadata for blob {}", b.hash)))?;
            if meta.size != b.size {
                return Err(Error::Corrupt(format!("blob {} size mismatch", b.hash)));
            }
            // A local file first (the common case costs no extra lookup); a blob whose
            // file is gone may have been evicted to a target, opened when reached.
            let file = match self.open_blob(&b.hash, meta.size) {
                Ok(f) => SegmentFile::Open(f),
                Err(e) => match self.tier_loc(&b.hash)? {
                    Some(loc) => SegmentFile::Remote(loc),
                    // Brought back between the two looks: the file is there now.
                    None => SegmentFile::Open(self.open_blob(&b.hash, meta.size).map_err(|_| e)?),
                },
            };
            segments.push_back(Segment {
                remote: matches!(file, SegmentFile::Remote(_)),
                file,
                hash: b.hash,
                meta,
                pos: range.start.max(start) - start,
                end: range.end.min(end) - start,
            });
        }
        Ok(ObjectReader {
            segments,
            remaining: range.end.saturating_sub(range.start),
            stats: self.stats.clone(),
            remote: self.remote_blobs.read().clone(),
        })
    }

    fn marker_path(&self) -> PathBuf {
        self.config.data_dir.join(IN_USE_MARKER)
    }

    /// The bytes of `hash` if it is stored inline (only blobs of at most
    /// [`INLINE_MAX`] bytes can be; larger ones cost no lookup).
    pub(crate) fn inline_blob(&self, hash: &BlobHash, size: u64) -> Result<Option<Bytes>> {
        if size > INLINE_MAX {
            return Ok(None);
        }
        match self.index.get(CF_INLINE, hash.as_bytes())? {
            None => Ok(None),
            Some(v) => match v.split_first() {
                Some((&codec::VALUE_V1, _)) => Ok(Some(Bytes::from(v).slice(1..))),
                _ => Err(Error::Decode(format!("inline blob {hash}: unknown format"))),
            },
        }
    }

    /// Length of the stored bytes of `hash` (inline, its file, or its tiered copy as
    /// recorded at eviction); `None` if missing.
    pub(crate) fn stored_size(&self, hash: &BlobHash, size: u64) -> Result<Option<u64>> {
        match self.inline_blob(hash, size)? {
            Some(bytes) => Ok(Some(bytes.len() as u64)),
            None if crate::index::in_cache_only() => Err(Error::NotCached),
            None => match self.blobs.size_of(hash)? {
                Some(s) => Ok(Some(s)),
                None => Ok(self.tier_loc(hash)?.map(|l| l.size)),
            },
        }
    }

    /// Opens a stored blob of `size` bytes (its metadata's size) for reading,
    /// inline or from its file.
    pub(crate) fn open_blob(&self, hash: &BlobHash, size: u64) -> Result<Box<dyn BlobFile>> {
        match self.inline_blob(hash, size)? {
            Some(bytes) => Ok(Box::new(InlineBlob(bytes))),
            None if crate::index::in_cache_only() => Err(Error::NotCached),
            None => self.blobs.open(hash),
        }
    }
}

/// `[1]` + the bytes: the value of an `inline` entry.
fn encode_inline(bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(bytes.len() + 1);
    v.push(codec::VALUE_V1);
    v.extend_from_slice(bytes);
    v
}

/// A blob stored inline in the index, read like a file.
struct InlineBlob(Bytes);

impl BlobFile for InlineBlob {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        match self.0.get(start..).and_then(|rest| rest.get(..buf.len())) {
            Some(src) => {
                buf.copy_from_slice(src);
                Ok(())
            }
            None => Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "inline blob is shorter")),
        }
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }
}

/// A segment's bytes: an open local (or inline) blob, or a tiered one not opened yet.
enum SegmentFile {
    Open(Box<dyn BlobFile>),
    Remote(RemoteLoc),
}

struct Segment {
    file: SegmentFile,
    /// Read from a target: a failed read is the target's, not corruption.
    remote: bool,
    hash: BlobHash,
    meta: BlobMeta,
    pos: u64,
    end: u64,
}

/// Streams verified bytes of an object. Each call returns at most one CRC block.
pub struct ObjectReader {
    segments: VecDeque<Segment>,
    remaining: u64,
    stats: Arc<StoreStats>,
    remote: Option<Arc<dyn RemoteBlobs>>,
}

impl ObjectReader {
    /// Bytes not yet returned.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    /// The next chunk, verified against its block CRC; `None` at the end. A CRC
    /// mismatch is an error; the bytes are never returned.
    pub fn next_chunk(&mut self) -> Result<Option<Bytes>> {
        loop {
            let Some(seg) = self.segments.front_mut() else {
                return Ok(None);
            };
            if seg.pos >= seg.end {
                self.segments.pop_front();
                continue;
            }
            let bs = seg.meta.block_size as u64;
            let block = seg.pos / bs;
            let block_start = block * bs;
            let block_len = bs.min(seg.meta.size - block_start) as usize;
            if let SegmentFile::Remote(loc) = &seg.file {
                let remote = self.remote.as_ref().ok_or_else(|| {
                    Error::RemoteUnavailable(format!(
                        "blob {} is on target {:?}, which is not open",
                        seg.hash, loc.target
                    ))
                })?;
                // Only the blocks this read needs: a Range GET must not pull the rest of a part.
                let end = seg.end.div_ceil(bs).saturating_mul(bs).min(seg.meta.size);
                seg.file = SegmentFile::Open(remote.open(&seg.hash, loc, block_start..end)?);
            }
            let file = match &seg.file {
                SegmentFile::Open(f) => f,
                SegmentFile::Remote(loc) => return Err(Error::RemoteUnavailable(format!("target {:?}", loc.target))),
            };
            let mut buf = vec![0u8; block_len];
            file.read_exact_at(&mut buf, block_start).map_err(|e| {
                if seg.remote {
                    Error::RemoteUnavailable(format!("blob {}: {e}", seg.hash))
                } else {
                    Error::Corrupt(format!("blob {}: read failed at {block_start}: {e}", seg.hash))
                }
            })?;
            let expect = seg.meta.crcs.get(block as usize).copied();
            if expect != Some(crc32fast::hash(&buf)) {
                self.stats.checksum_failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(blob = %seg.hash, block, "checksum mismatch: refusing to serve corrupt data");
                return Err(Error::Corrupt(format!("blob {} block {block} fails its CRC", seg.hash)));
            }
            self.stats.blocks_verified.fetch_add(1, Ordering::Relaxed);
            let from = (seg.pos - block_start) as usize;
            let to = (seg.end.min(block_start + block_len as u64) - block_start) as usize;
            seg.pos = block_start + to as u64;
            self.remaining -= (to - from) as u64;
            let bytes = Bytes::from(buf);
            return Ok(Some(bytes.slice(from..to)));
        }
    }
}

/// Raises `lower` (an index key) past `after`, where a listing page ended: past its
/// whole subtree when `after` is a common prefix that page returned (it ends at the
/// first delimiter after `prefix`), else past the key itself — `step` 0 for the next
/// key, 1 to also skip its `versions` entries (`<key> 0x00 …`). `false` when nothing
/// can follow.
pub(crate) fn resume_after(
    lower: &mut Vec<u8>,
    bprefix: &[u8],
    after: &str,
    prefix: &str,
    delimiter: Option<&str>,
    step: u8,
) -> bool {
    let mut resume = bprefix.to_vec();
    resume.extend_from_slice(after.as_bytes());
    let is_common_prefix = delimiter.is_some_and(|d| {
        after.starts_with(prefix)
            && after[prefix.len()..].find(d).is_some_and(|i| prefix.len() + i + d.len() == after.len())
    });
    let resume = if is_common_prefix {
        prefix_end(&resume)
    } else {
        resume.push(step);
        Some(resume)
    };
    match resume {
        Some(r) => {
            if r > *lower {
                *lower = r;
            }
            true
        }
        None => false,
    }
}

/// Stripe identity of an object key.
pub(crate) fn object_lock(bucket: &BucketName, key: &ObjectKey) -> u64 {
    lock_id(&(0u8, bucket.as_str(), key.as_str()))
}

/// Stripe identity of a multipart upload.
pub(crate) fn upload_lock(id: &crate::types::UploadId) -> u64 {
    lock_id(&(1u8, id.as_str()))
}

fn bucket_info(name: BucketName, e: BucketEntry) -> BucketInfo {
    BucketInfo { name, created: e.created, versioning: e.config.versioning, object_lock: e.config.object_lock }
}

pub(crate) fn info_of(bucket: &BucketName, key: &ObjectKey, e: ObjectEntry) -> ObjectInfo {
    ObjectInfo {
        version_id: e.version.versioned.then(|| e.version.id()),
        is_latest: true,
        retention: e.version.retention,
        legal_hold: e.version.legal_hold,
        bucket: bucket.clone(),
        key: key.clone(),
        size: e.size,
        etag: e.etag,
        last_modified: e.last_modified,
        meta: e.meta,
        checksum: e.checksum,
        parts_count: e.parts_count,
        blobs: e.blobs,
    }
}

fn summary_of(key: String, e: &ObjectListing) -> ObjectSummary {
    ObjectSummary {
        key,
        size: e.size,
        etag: ETag::from_stored(e.etag),
        last_modified: e.last_modified,
        storage_class: e.meta.headers.iter().find(|(k, _)| *k == "x-amz-storage-class").map(|(_, v)| (*v).to_owned()),
        checksum_algorithm: e.checksum.as_ref().map(|c| c.algorithm),
        checksum_type: e.checksum.as_ref().map(|c| c.type_name()),
    }
}

/// A file in the data directory that exists while the index holds a bucket.
/// Without it, an index lost with only small (inline) objects in it would look
/// like a new, empty store; see [`Store::open_with_blob_store`].
const IN_USE_MARKER: &str = "index-in-use";

fn write_marker(path: &std::path::Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let text = "walstore: the index in index/ holds buckets. Do not delete this file; walstore refuses to start \
                on an empty index while it exists.\n";
    let io = |e| Error::io(format!("writing {}", path.display()), e);
    let f = std::fs::File::create(path).map_err(io)?;
    std::io::Write::write_all(&mut &f, text.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)?;
    sync_parent(path)
}

fn remove_marker(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_parent(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

fn sync_parent(path: &std::path::Path) -> Result<()> {
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(format!("fsync of {}", dir.display()), e))
}

/// True if `blobs` holds at least one finished blob (stops at the first).
fn any_blob(blobs: &dyn BlobStore) -> Result<bool> {
    let mut found = false;
    match blobs.for_each(&mut |_| {
        found = true;
        Err(Error::InvalidArgument("stop".into()))
    }) {
        Ok(()) => Ok(false),
        Err(_) if found => Ok(true),
        Err(e) => Err(e),
    }
}
