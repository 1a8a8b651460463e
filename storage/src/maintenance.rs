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
use std::time::{Duration, SystemTime};

use rocksdb::WriteBatch;

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{
    BlobMeta, ObjectEntry, PartEntry, UploadEntry, CF_BLOBS, CF_BUCKETS, CF_GCQ, CF_OBJECTS, CF_PARTS, CF_QUARANTINE,
    CF_REFS, CF_UPLOADS,
};
use crate::locks::lock_id;
use crate::multipart::split_upload_key;
use crate::store::Store;
use crate::types::{BlobHash, BucketName, Timestamp};

/// What one GC pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GcReport {
    /// Candidates examined.
    pub examined: u64,
    /// Blobs removed.
    pub reclaimed_blobs: u64,
    /// Bytes removed.
    pub reclaimed_bytes: u64,
    /// Candidates still inside their grace period.
    pub waiting: u64,
}

/// Result of [`Store::check`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// Objects examined.
    pub objects: u64,
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
    /// at most `limit` candidates, so callers can throttle.
    pub fn gc_pass(&self, now: SystemTime, limit: usize) -> Result<GcReport> {
        let cutoff = Timestamp::from_system(now.checked_sub(self.config.gc_grace).unwrap_or(SystemTime::UNIX_EPOCH));
        let mut report = GcReport::default();
        let mut candidates = Vec::new();
        for item in self.index.range(CF_GCQ, b"", None)? {
            let (k, v) = item?;
            let since: Timestamp = codec::decode(&v, CF_GCQ)?;
            report.examined += 1;
            if since > cutoff {
                report.waiting += 1;
                continue;
            }
            let Ok(h) = <[u8; 32]>::try_from(&k[..]) else { continue };
            candidates.push(BlobHash::from_bytes(h));
            if candidates.len() >= limit {
                break;
            }
        }
        for hash in candidates {
            let _g = self.blob_locks.lock_all(&[lock_id(&hash)]);
            let count = self.index.refcount(&hash)?;
            let mut batch = WriteBatch::default();
            batch.delete_cf(self.index.cf(CF_GCQ)?, hash.as_bytes());
            if count == 0 {
                let size = self.index.get_decoded::<BlobMeta>(CF_BLOBS, hash.as_bytes())?.map(|m| m.size).unwrap_or(0);
                self.blobs.remove(&hash)?;
                batch.delete_cf(self.index.cf(CF_BLOBS)?, hash.as_bytes());
                batch.delete_cf(self.index.cf(CF_REFS)?, hash.as_bytes());
                report.reclaimed_blobs += 1;
                report.reclaimed_bytes += size;
            } else if count < 0 {
                tracing::error!(blob = %hash, count, "negative reference count; keeping the blob, run `walstore check`");
                continue;
            }
            self.index.write_relaxed(batch)?;
        }
        self.stats.gc_reclaimed_blobs.fetch_add(report.reclaimed_blobs, Ordering::Relaxed);
        self.stats.gc_reclaimed_bytes.fetch_add(report.reclaimed_bytes, Ordering::Relaxed);
        Ok(report)
    }

    /// Number of blobs waiting for GC (candidates, in or past their grace).
    pub fn gc_queue_len(&self) -> Result<u64> {
        let mut n = 0;
        for item in self.index.range(CF_GCQ, b"", None)? {
            item?;
            n += 1;
        }
        Ok(n)
    }

    /// Aborts multipart uploads initiated before `now - multipart_expiry`.
    pub fn expire_uploads(&self, now: SystemTime) -> Result<u64> {
        let cutoff =
            Timestamp::from_system(now.checked_sub(self.config.multipart_expiry).unwrap_or(SystemTime::UNIX_EPOCH));
        let mut expired = Vec::new();
        for bucket in self.list_buckets()? {
            let start = crate::index::bucket_prefix(&bucket.name);
            for item in self.index.range(CF_UPLOADS, &start, crate::index::prefix_end(&start))? {
                let (k, v) = item?;
                let e: UploadEntry = codec::decode(&v, CF_UPLOADS)?;
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
        self.blobs.for_each(&mut |b| {
            if self.index.get(CF_BLOBS, b.hash.as_bytes())?.is_some() {
                known += 1;
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
            let e: ObjectEntry = codec::decode(&v, CF_OBJECTS)?;
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
            stored.insert(BlobHash::from_bytes(h), codec::decode_count(&v)?);
        }
        report.blobs = expected.len() as u64;
        for (hash, want) in &expected {
            let have = stored.get(hash).copied().unwrap_or(0);
            if have != *want {
                report.problems.push(format!("blob {hash}: refcount {have}, references {want}"));
            }
            match self.index.get_decoded::<BlobMeta>(CF_BLOBS, hash.as_bytes())? {
                None => report.problems.push(format!("blob {hash}: referenced but has no metadata")),
                Some(meta) => match self.blobs.size_of(hash)? {
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
            queued.insert(k.to_vec());
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
        Ok(report)
    }

    /// Names of the bucket's objects that reference `hash` (for corruption reports).
    pub fn keys_referencing(&self, bucket: &BucketName, hash: &BlobHash) -> Result<Vec<String>> {
        let start = crate::index::bucket_prefix(bucket);
        let mut out = Vec::new();
        for item in self.index.range(CF_OBJECTS, &start, crate::index::prefix_end(&start))? {
            let (k, v) = item?;
            let e: ObjectEntry = codec::decode(&v, CF_OBJECTS)?;
            if e.blobs.iter().any(|b| b.hash == *hash) {
                out.push(String::from_utf8_lossy(&k[start.len()..]).into_owned());
            }
        }
        Ok(out)
    }
}
