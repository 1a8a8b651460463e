//! Background maintenance: garbage collection of unreferenced blobs, expiry of
//! abandoned multipart uploads, removal of orphan blob files, and the
//! index ↔ blob consistency check.
//!
//! GC rule: a blob is removed only when, under its blob lock, its reference count
//! is zero and it lost its last reference more than `gc_grace` ago. The file is
//! unlinked *before* its index records are deleted, so a crash in between leaves a
//! record without a file (cleaned up by the next pass), never a file nobody knows.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use rocksdb::WriteBatch;

use crate::budget::Budget;
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{
    gcq_key, gcq_split, BlobMeta, GcCursor, ObjectEntry, PartEntry, UploadEntry, VersionRecord, CF_BLOBS, CF_BUCKETS,
    CF_GCQ, CF_INLINE, CF_META, CF_OBJECTS, CF_PARTS, CF_QUARANTINE, CF_REFS, CF_UPLOADS, CF_VERSIONS, GCQ_KEY_LEN,
    GC_COMPACT_AFTER, GC_RESCAN, LATE_COMMIT_SLACK,
};
use crate::locks::lock_id;
use crate::multipart::split_upload_key;
use crate::store::Store;
use crate::types::{BlobHash, BucketName, Timestamp};

/// What one GC pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Due queue entries examined (each is consumed unless its count is negative).
    pub examined: u64,
    /// Blobs removed.
    pub reclaimed_blobs: u64,
    /// Bytes removed.
    pub reclaimed_bytes: u64,
    /// The budget ran out while entries may still be due.
    pub more: bool,
}

/// The GC queue at a glance (for metrics and `walstore gc`).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcQueueStats {
    /// Entries in the queue (a blob lost a reference; GC has not looked yet).
    pub pending: u64,
    /// Of those, entries whose grace period is over.
    pub due: u64,
    /// How long the oldest due entry has been due: GC's lag behind deletes.
    pub backlog: Duration,
}

/// Result of [`Store::check`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Objects examined.
    pub objects: u64,
    /// Non-current versions and delete markers examined.
    pub versions: u64,
    /// Distinct blobs referenced.
    pub blobs: u64,
    /// Blob files on disk that no index record knows (left by a crash between
    /// rename and commit; removed by the orphan sweep after the grace period).
    pub orphan_files: u64,
    /// Human-readable inconsistencies; empty means consistent.
    pub problems: Vec<String>,
}

/// Orphan blob files a sweep removes without suspecting index loss (see
/// [`Store::sweep_orphans`]).
pub const ORPHAN_SWEEP_LIMIT: u64 = 256;

impl Store {
    /// Removes unreferenced blobs whose grace period ended before `now`. Handles
    /// at most `limit` due queue entries, so callers can throttle; a pass that
    /// examined fewer than `limit` left nothing due behind.
    pub fn gc_pass(&self, now: SystemTime, limit: usize) -> Result<GcReport> {
        let cutoff = self.gc_cutoff(now);
        let upper = gcq_key(cutoff.plus(Duration::from_millis(1)), &BlobHash::from_bytes([0; 32]));
        let mut report = GcReport::default();
        // Held for the pass: passes (the background job, `walstore gc`) take turns.
        let mut cur = self.gc_cursor.lock();
        if cur.rescanned.is_none_or(|t| t.elapsed() >= GC_RESCAN) {
            if cur.consumed > 0 {
                self.index.compact_prefix(CF_GCQ, &cur.lower)?;
            }
            *cur = GcCursor { lower: Vec::new(), rescanned: Some(Instant::now()), consumed: 0 };
        }
        let mut due = Vec::new();
        for item in self.index.range_bounded(CF_GCQ, cur.lower.clone(), upper.to_vec())?.take(limit) {
            let (k, _) = item?;
            due.push(k);
        }
        // The cursor stays LATE_COMMIT_SLACK behind the clock: with a short grace a
        // delete keyed a moment ago may still be committing.
        let slack_cap = gcq_key(
            Timestamp::from_system(
                self.clock().now().min(now).checked_sub(LATE_COMMIT_SLACK).unwrap_or(SystemTime::UNIX_EPOCH),
            ),
            &BlobHash::from_bytes([0; 32]),
        );
        for key in due {
            report.examined += 1;
            cur.lower = key.to_vec().min(slack_cap.to_vec());
            cur.consumed += 1;
            let Some((_, hash)) = gcq_split(&key) else {
                tracing::error!(key = %hex::encode(&key), "GC queue entry of unknown shape; dropping it");
                self.index.delete_relaxed(CF_GCQ, &key)?;
                continue;
            };
            let _g = self.blob_locks.lock_all(&[lock_id(&hash)]);
            let rc = self.index.refcount(&hash)?;
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.index.cf(CF_GCQ)?, &key);
            if rc.count < 0 {
                // Kept in the queue (met again after the next rescan) for `walstore check`.
                tracing::error!(blob = %hash, count = rc.count, "negative reference count; keeping the blob, run `walstore check`");
                continue;
            }
            // A count above zero: referenced again (deduplicated into a newer
            // object); the entry is spent. A later decrement than this entry's
            // cutoff: a newer entry waits for its own grace and decides then.
            if rc.count == 0 && rc.last_unref_ms <= cutoff.as_millis() {
                let meta = self.index.get_decoded::<BlobMeta>(CF_BLOBS, hash.as_bytes())?;
                // Also for an inline blob: a blob written before inlining
                // existed may be a small file (a missing file is no error).
                self.blobs.remove(&hash)?;
                batch.delete_cf(self.index.cf(CF_BLOBS)?, hash.as_bytes());
                batch.delete_cf(self.index.cf(CF_INLINE)?, hash.as_bytes());
                batch.delete_cf(self.index.cf(CF_REFS)?, hash.as_bytes());
                batch.delete_cf(self.index.cf(CF_META)?, crate::index::tier_blob_key(&hash));
                batch.delete_cf(self.index.cf(CF_META)?, crate::index::tier_cache_key(&hash));
                // No metadata: an earlier entry of the same blob collected it.
                if let Some(m) = meta {
                    report.reclaimed_blobs += 1;
                    report.reclaimed_bytes += m.size;
                }
            }
            // Relaxed: losing it in a crash only repeats this entry.
            self.index.write_relaxed(batch)?;
        }
        if cur.consumed >= GC_COMPACT_AFTER {
            self.index.compact_prefix(CF_GCQ, &cur.lower)?;
            cur.consumed = 0;
        }
        drop(cur);
        self.stats.gc_reclaimed_blobs.fetch_add(report.reclaimed_blobs, Ordering::Relaxed);
        self.stats.gc_reclaimed_bytes.fetch_add(report.reclaimed_bytes, Ordering::Relaxed);
        Ok(report)
    }

    /// Runs GC passes until nothing is due, or until `budget` is spent (so a
    /// caller sharing a worker with other jobs is not held up for long, and a
    /// stop is honoured within one pass). `more` in the report says whether
    /// due entries may remain.
    pub fn gc_until_done(&self, now: SystemTime, budget: &Budget) -> Result<GcReport> {
        const PASS: usize = 1_000;
        let mut total = GcReport::default();
        loop {
            let r = self.gc_pass(now, PASS)?;
            total.examined += r.examined;
            total.reclaimed_blobs += r.reclaimed_blobs;
            total.reclaimed_bytes += r.reclaimed_bytes;
            if r.examined < PASS as u64 {
                return Ok(total);
            }
            if budget.spent() {
                total.more = true;
                return Ok(total);
            }
        }
    }

    /// Entries queued at or before this time are due.
    fn gc_cutoff(&self, now: SystemTime) -> Timestamp {
        Timestamp::from_system(now.checked_sub(self.config.gc_grace).unwrap_or(SystemTime::UNIX_EPOCH))
    }

    /// Counts the GC queue from where GC last stopped (cost: the pending
    /// entries, not the consumed ones).
    pub fn gc_queue_stats(&self, now: SystemTime) -> Result<GcQueueStats> {
        let cutoff = self.gc_cutoff(now);
        let lower = self.gc_cursor.lock().lower.clone();
        let mut stats = GcQueueStats::default();
        for item in self.index.range_bounded(CF_GCQ, lower, vec![0xff; GCQ_KEY_LEN + 1])? {
            let (k, _) = item?;
            stats.pending += 1;
            if let Some((since, _)) = gcq_split(&k) {
                if since <= cutoff {
                    if stats.due == 0 {
                        stats.backlog = cutoff.to_system().duration_since(since.to_system()).unwrap_or_default();
                    }
                    stats.due += 1;
                }
            }
        }
        Ok(stats)
    }

    /// Aborts multipart uploads initiated before `now - multipart_expiry`, and
    /// forgets the answers of uploads completed before then (a Complete
    /// retried later answers `NoSuchUpload`). Returns the uploads aborted.
    pub fn expire_uploads(&self, now: SystemTime) -> Result<u64> {
        let cutoff =
            Timestamp::from_system(now.checked_sub(self.config.multipart_expiry).unwrap_or(SystemTime::UNIX_EPOCH));
        let forgotten = self.expire_completed(cutoff)?;
        if forgotten > 0 {
            tracing::debug!(answers = forgotten, "forgot the answers of uploads completed before the multipart expiry");
        }
        let mut expired = Vec::new();
        for bucket in self.list_buckets()? {
            let start = crate::index::bucket_prefix(&bucket.name);
            for item in self.index.range(CF_UPLOADS, &start, crate::index::prefix_end(&start))? {
                let (k, v) = item?;
                let e = UploadEntry::decode(&v)?;
                if e.initiated < cutoff {
                    let (key, id) = split_upload_key(&k, &bucket.name)?;
                    expired.push((bucket.name.clone(), key, id));
                }
            }
        }
        let n = expired.len() as u64;
        for (bucket, key, id) in expired {
            tracing::info!(bucket = %bucket, key = %key, upload = %id, "aborting an abandoned multipart upload");
            match self.abort_multipart(&bucket, &key, &id) {
                Ok(()) | Err(Error::NoSuchUpload) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Removes blob files that no index record knows and that are older than the
    /// GC grace period (left by a crash between rename and index commit).
    ///
    /// A crash leaves at most one such file per write in flight. Far more than
    /// that means the index lost entries (restored from an older copy, a
    /// damaged MANIFEST that RocksDB read as a shorter one), and deleting would
    /// turn a repairable index into lost backups: above [`ORPHAN_SWEEP_LIMIT`]
    /// files (and 1 % of the indexed blobs) the sweep deletes nothing and fails
    /// with [`Error::Corrupt`] naming the count.
    pub fn sweep_orphans(&self, now: SystemTime) -> Result<u64> {
        let grace = self.config.gc_grace;
        let mut orphans = Vec::new();
        let (mut known, mut orphan_bytes) = (0u64, 0u64);
        let mut evicted = Vec::new();
        self.blobs.for_each(&mut |b| {
            if self.index.get(CF_BLOBS, b.hash.as_bytes())?.is_some() {
                known += 1;
                // A file an interrupted eviction left behind: its bytes are on the target.
                if self.tier_loc(&b.hash)?.is_some() {
                    evicted.push(b.hash);
                }
            } else if now.duration_since(b.modified).unwrap_or(Duration::ZERO) >= grace {
                orphans.push(b.hash);
                orphan_bytes += b.size;
            }
            Ok(())
        })?;
        let n = orphans.len() as u64;
        if n > ORPHAN_SWEEP_LIMIT && n > known / 100 {
            return Err(Error::Corrupt(format!(
                "{n} blob files ({orphan_bytes} bytes) are not in the index, against {known} that are: more than \
                 crashes leave behind, so the index probably lost entries. Not deleting them; run `walstore check` \
                 and restore the index from the copy that belongs to these blobs"
            )));
        }
        let mut removed = 0;
        for hash in evicted {
            let _g = self.blob_locks.lock_all(&[lock_id(&hash)]);
            if self.tier_loc(&hash)?.is_some() {
                self.blobs.remove(&hash)?;
                removed += 1;
            }
        }
        for hash in orphans {
            let _g = self.blob_locks.lock_all(&[lock_id(&hash)]);
            if self.index.get(CF_BLOBS, hash.as_bytes())?.is_none() {
                self.blobs.remove(&hash)?;
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// Recomputes every reference count from the object and part entries and
    /// compares with the stored counts, blob metadata and blob files.
    pub fn check(&self) -> Result<CheckReport> {
        let mut report = CheckReport::default();
        let mut expected: HashMap<BlobHash, i64> = HashMap::new();
        let mut buckets = std::collections::HashSet::new();
        for item in self.index.range(CF_BUCKETS, b"", None)? {
            let (k, _) = item?;
            buckets.insert(k.to_vec());
        }
        for item in self.index.range(CF_OBJECTS, b"", None)? {
            let (k, v) = item?;
            report.objects += 1;
            let bucket = k.split(|b| *b == 0).next().unwrap_or(&[]);
            if !buckets.contains(bucket) {
                report.problems.push(format!("object {:?} in a missing bucket", String::from_utf8_lossy(&k)));
            }
            let e = ObjectEntry::decode(&v)?;
            let total: u64 = e.blobs.iter().map(|b| b.size).sum();
            if total != e.size {
                report.problems.push(format!(
                    "object {:?}: blob sizes add up to {total}, not {}",
                    String::from_utf8_lossy(&k),
                    e.size
                ));
            }
            for b in e.blobs {
                *expected.entry(b.hash).or_default() += 1;
            }
        }
        // Non-current versions hold references like current ones; markers hold none.
        for item in self.index.range(CF_VERSIONS, b"", None)? {
            let (k, v) = item?;
            report.versions += 1;
            let bucket = k.split(|b| *b == 0).next().unwrap_or(&[]);
            if !buckets.contains(bucket) {
                report.problems.push(format!("version {:?} in a missing bucket", String::from_utf8_lossy(&k)));
            }
            if let VersionRecord::Object(e) = VersionRecord::decode(&v)? {
                for b in e.blobs {
                    *expected.entry(b.hash).or_default() += 1;
                }
            }
        }
        for item in self.index.range(CF_PARTS, b"", None)? {
            let (_, v) = item?;
            let p: PartEntry = codec::decode(&v, CF_PARTS)?;
            if p.blob.size > 0 {
                *expected.entry(p.blob.hash).or_default() += 1;
            }
        }
        for item in self.index.range(CF_QUARANTINE, b"", None)? {
            let (_, v) = item?;
            let q: crate::wal::Quarantined = codec::decode(&v, CF_QUARANTINE)?;
            for b in q.blobs {
                *expected.entry(b.hash).or_default() += 1;
            }
        }
        let mut stored: HashMap<BlobHash, i64> = HashMap::new();
        for item in self.index.range(CF_REFS, b"", None)? {
            let (k, v) = item?;
            let Ok(h) = <[u8; 32]>::try_from(&k[..]) else {
                report.problems.push("refcount key of the wrong length".into());
                continue;
            };
            stored.insert(BlobHash::from_bytes(h), codec::decode_count(&v)?.count);
        }
        report.blobs = expected.len() as u64;
        for (hash, want) in &expected {
            let have = stored.get(hash).copied().unwrap_or(0);
            if have != *want {
                report.problems.push(format!("blob {hash}: refcount {have}, references {want}"));
            }
            match self.index.get_decoded::<BlobMeta>(CF_BLOBS, hash.as_bytes())? {
                None => report.problems.push(format!("blob {hash}: referenced but has no metadata")),
                Some(meta) => match self.stored_size(hash, meta.size)? {
                    None => report.problems.push(format!("blob {hash}: referenced but its file is missing")),
                    Some(s) if s != meta.size => {
                        report.problems.push(format!("blob {hash}: file has {s} bytes, index says {}", meta.size))
                    }
                    Some(_) => {}
                },
            }
        }
        let mut queued = std::collections::HashSet::new();
        for item in self.index.range(CF_GCQ, b"", None)? {
            let (k, _) = item?;
            if let Some((_, hash)) = gcq_split(&k) {
                queued.insert(hash.as_bytes().to_vec());
            }
        }
        for (hash, have) in &stored {
            if *have != 0 && !expected.contains_key(hash) {
                report.problems.push(format!("blob {hash}: refcount {have} but nothing references it"));
            }
            if *have == 0 && !queued.contains(hash.as_bytes().as_slice()) {
                report.problems.push(format!("blob {hash}: unreferenced but not queued for GC (space leak)"));
            }
        }
        self.blobs.for_each(&mut |b| {
            if self.index.get(CF_BLOBS, b.hash.as_bytes())?.is_none() {
                report.orphan_files += 1;
            }
            Ok(())
        })?;
        for item in self.index.range(CF_INLINE, b"", None)? {
            let (k, _) = item?;
            if self.index.get(CF_BLOBS, &k)?.is_none() {
                report.problems.push(format!("inline blob {}: bytes without metadata", hex::encode(&k)));
            }
        }
        Ok(report)
    }

    /// Names of the bucket's objects that reference `hash` (for corruption reports).
    pub fn keys_referencing(&self, bucket: &BucketName, hash: &BlobHash) -> Result<Vec<String>> {
        let start = crate::index::bucket_prefix(bucket);
        let mut out = Vec::new();
        for item in self.index.range(CF_OBJECTS, &start, crate::index::prefix_end(&start))? {
            let (k, v) = item?;
            let e = ObjectEntry::decode(&v)?;
            if e.blobs.iter().any(|b| b.hash == *hash) {
                out.push(String::from_utf8_lossy(&k[start.len()..]).into_owned());
            }
        }
        for item in self.index.range(CF_VERSIONS, &start, crate::index::prefix_end(&start))? {
            let (k, v) = item?;
            if let VersionRecord::Object(e) = VersionRecord::decode(&v)? {
                if e.blobs.iter().any(|b| b.hash == *hash) && k.len() >= start.len() + 9 {
                    let name = String::from_utf8_lossy(&k[start.len()..k.len() - 9]);
                    out.push(format!("{name} (version {})", e.version.id()));
                }
            }
        }
        Ok(out)
    }
}
