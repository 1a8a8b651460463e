//! Usage figures for metrics and the status report, and the scrub that
//! re-hashes every blob.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{BlobMeta, ObjectEntry, CF_BLOBS, CF_OBJECTS};
use crate::store::Store;
use crate::types::{BlobHash, BucketName, Timestamp};

/// Space accounting of the whole store.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    /// Per bucket: (objects, logical bytes).
    pub buckets: BTreeMap<String, (u64, u64)>,
    /// Distinct blobs stored.
    pub blobs: u64,
    /// Bytes of distinct blobs (what deduplication stores).
    pub physical_bytes: u64,
}

impl Usage {
    /// Logical bytes over physical bytes (1.0 without sharing).
    pub fn dedup_ratio(&self) -> f64 {
        let logical: u64 = self.buckets.values().map(|(_, b)| b).sum();
        if self.physical_bytes == 0 {
            1.0
        } else {
            logical as f64 / self.physical_bytes as f64
        }
    }
}

/// Progress and results of scrubs, for metrics.
#[derive(Debug, Default)]
pub struct ScrubStats {
    /// Blobs re-hashed, over all scrubs.
    pub blobs_checked: AtomicU64,
    /// Corrupt blobs found, over all scrubs.
    pub corrupt_blobs: AtomicU64,
    /// Progress of the running scrub in per-mille (1000 = done).
    pub progress_permille: AtomicU64,
    /// Unix time (s) of the last completed scrub (0 = never).
    pub last_completion: AtomicU64,
    /// A scrub is running.
    pub running: std::sync::atomic::AtomicBool,
    /// The last completed scrub's report.
    pub last_report: parking_lot::Mutex<Option<ScrubReport>>,
}

/// A corrupt blob and the objects that use it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorruptBlob {
    /// Content address.
    pub hash: String,
    /// What is wrong.
    pub problem: String,
    /// `bucket/key` of every object referencing it.
    pub objects: Vec<String>,
}

/// Result of a scrub.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ScrubReport {
    /// Blobs checked.
    pub blobs: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Corrupt or missing blobs.
    pub corrupt: Vec<CorruptBlob>,
}

impl Store {
    /// Scans the index for usage figures (one pass over objects and blobs).
    pub fn usage(&self) -> Result<Usage> {
        let mut u = Usage::default();
        for b in self.list_buckets()? {
            u.buckets.insert(b.name.as_str().to_owned(), (0, 0));
        }
        for item in self.index.range(CF_OBJECTS, b"", None)? {
            let (k, v) = item?;
            let bucket =
                k.split(|b| *b == 0).next().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let e: ObjectEntry = codec::decode(&v, CF_OBJECTS)?;
            let slot = u.buckets.entry(bucket).or_default();
            slot.0 += 1;
            slot.1 += e.size;
        }
        for item in self.index.range(CF_BLOBS, b"", None)? {
            let (_, v) = item?;
            let m: BlobMeta = codec::decode(&v, CF_BLOBS)?;
            u.blobs += 1;
            u.physical_bytes += m.size;
        }
        Ok(u)
    }

    /// Free and total bytes of the filesystem holding the data directory.
    pub fn disk_space(&self) -> Result<(u64, u64)> {
        crate::space::disk_space(&self.config.data_dir)
    }

    /// Scrub counters.
    pub fn scrub_stats(&self) -> &ScrubStats {
        &self.scrub
    }

    /// Re-reads every blob, checks its size, every block CRC and its SHA-256
    /// (its name), and reports corrupt blobs with the objects that use them.
    /// `progress` is called with (done, total) after each blob.
    pub fn scrub(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ScrubReport> {
        if self.scrub.running.swap(true, Ordering::SeqCst) {
            return Err(Error::InvalidArgument("a scrub is already running".into()));
        }
        let r = self.scrub_inner(progress);
        self.scrub.running.store(false, Ordering::SeqCst);
        if let Ok(rep) = &r {
            *self.scrub.last_report.lock() = Some(rep.clone());
        }
        r
    }

    fn scrub_inner(&self, progress: &mut dyn FnMut(u64, u64)) -> Result<ScrubReport> {
        let mut metas: Vec<(BlobHash, BlobMeta)> = Vec::new();
        for item in self.index.range(CF_BLOBS, b"", None)? {
            let (k, v) = item?;
            let Ok(h) = <[u8; 32]>::try_from(&k[..]) else { continue };
            metas.push((BlobHash::from_bytes(h), codec::decode(&v, CF_BLOBS)?));
        }
        let total = metas.len() as u64;
        let mut report = ScrubReport::default();
        self.scrub.progress_permille.store(0, Ordering::Relaxed);
        let mut bad: Vec<(BlobHash, String)> = Vec::new();
        for (i, (hash, meta)) in metas.iter().enumerate() {
            if let Err(problem) = self.verify_blob(hash, meta, &mut report.bytes) {
                self.scrub.corrupt_blobs.fetch_add(1, Ordering::Relaxed);
                tracing::error!(blob = %hash, problem, "scrub found a corrupt blob");
                bad.push((*hash, problem));
            }
            report.blobs += 1;
            self.scrub.blobs_checked.fetch_add(1, Ordering::Relaxed);
            let done = i as u64 + 1;
            self.scrub.progress_permille.store(done * 1000 / total.max(1), Ordering::Relaxed);
            progress(done, total);
        }
        for (hash, problem) in bad {
            let mut objects = Vec::new();
            for b in self.list_buckets()? {
                for k in self.keys_referencing(&b.name, &hash)? {
                    objects.push(format!("{}/{k}", b.name));
                }
            }
            report.corrupt.push(CorruptBlob { hash: hash.to_hex(), problem, objects });
        }
        self.scrub.progress_permille.store(1000, Ordering::Relaxed);
        self.scrub.last_completion.store(Timestamp::now().as_millis().max(0) as u64 / 1000, Ordering::Relaxed);
        Ok(report)
    }

    fn verify_blob(&self, hash: &BlobHash, meta: &BlobMeta, bytes: &mut u64) -> std::result::Result<(), String> {
        let file = self.open_blob(hash, meta.size).map_err(|e| e.to_string())?;
        let len = file.size().map_err(|e| e.to_string())?;
        if len != meta.size {
            return Err(format!("file has {len} bytes, the index says {}", meta.size));
        }
        let mut sha = Sha256::new();
        let bs = meta.block_size as u64;
        let mut buf = vec![0u8; bs as usize];
        let mut off = 0u64;
        let mut block = 0usize;
        while off < meta.size {
            let n = bs.min(meta.size - off) as usize;
            file.read_exact_at(&mut buf[..n], off).map_err(|e| format!("read failed at {off}: {e}"))?;
            if meta.crcs.get(block).copied() != Some(crc32fast::hash(&buf[..n])) {
                return Err(format!("block {block} fails its CRC"));
            }
            sha.update(&buf[..n]);
            *bytes += n as u64;
            off += n as u64;
            block += 1;
        }
        if <[u8; 32]>::from(sha.finalize()) != *hash.as_bytes() {
            return Err("content does not match its SHA-256 name".into());
        }
        Ok(())
    }

    /// Keys (across buckets) whose objects use `hash`.
    pub fn objects_using(&self, hash: &BlobHash) -> Result<Vec<(BucketName, String)>> {
        let mut out = Vec::new();
        for b in self.list_buckets()? {
            for k in self.keys_referencing(&b.name, hash)? {
                out.push((b.name.clone(), k));
            }
        }
        Ok(out)
    }
}
