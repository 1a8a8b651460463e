//! Usage figures for metrics and the status report, and the scrub that
//! re-hashes every blob, in resumable steps.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use sha2::{Digest, Sha256};

use crate::budget::Budget;
use crate::codec;
use crate::error::Result;
use crate::index::{BlobMeta, ObjectEntry, VersionRecord, CF_BLOBS, CF_META, CF_OBJECTS, CF_VERSIONS};
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
    /// Non-current object versions (count, logical bytes).
    pub noncurrent: (u64, u64),
    /// Delete markers.
    pub delete_markers: u64,
    /// Versions (current or not) that cannot be deleted now: retention not yet
    /// expired or a legal hold (count, logical bytes).
    pub locked: (u64, u64),
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

/// A corrupt blob and the objects that use it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CorruptBlob {
    /// Content address.
    pub hash: String,
    /// What is wrong.
    pub problem: String,
    /// `bucket/key` of every object referencing it.
    pub objects: Vec<String>,
}

/// Result of a scrub.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScrubReport {
    /// Blobs checked.
    pub blobs: u64,
    /// Bytes read.
    pub bytes: u64,
    /// Corrupt or missing blobs.
    pub corrupt: Vec<CorruptBlob>,
}

/// Where the scrub in progress stands (index `meta` key `scrub/cursor`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ScrubCursor {
    /// When this scrub started.
    pub started: Timestamp,
    /// The last blob checked (blobs are checked in hash order).
    pub after: Option<[u8; 32]>,
    /// Blobs indexed when it started.
    pub total: u64,
    /// Blobs checked so far.
    pub blobs: u64,
    /// Bytes read so far.
    pub bytes: u64,
    /// Corrupt blobs found so far: (hash, problem).
    pub bad: Vec<(String, String)>,
}

impl ScrubCursor {
    /// Fraction done, 0 to 1.
    pub fn progress(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.blobs as f64 / self.total as f64).min(1.0)
        }
    }
}

/// The last completed scrub (index `meta` key `scrub/last`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CompletedScrub {
    /// When it completed.
    pub completed: Timestamp,
    /// What it found.
    pub report: ScrubReport,
}

/// The scrub in progress and the last completed one.
#[derive(Debug, Clone, Default)]
pub struct ScrubState {
    /// The scrub in progress (resumed by the next step, also after a restart).
    pub cursor: Option<ScrubCursor>,
    /// The last completed scrub.
    pub last: Option<CompletedScrub>,
}

/// How often a running scrub saves its position.
pub const SCRUB_SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
const SCRUB_CURSOR: &[u8] = b"scrub/cursor";
const SCRUB_LAST: &[u8] = b"scrub/last";

enum Verified {
    Ok(u64),
    Bad(String),
    Stopped,
}

impl Store {
    /// Scans the index for usage figures (one pass over objects and blobs).
    pub fn usage(&self) -> Result<Usage> {
        let mut u = Usage::default();
        let now = self.now();
        for b in self.list_buckets()? {
            u.buckets.insert(b.name.as_str().to_owned(), (0, 0));
        }
        for item in self.index.range(CF_OBJECTS, b"", None)? {
            let (k, v) = item?;
            let bucket =
                k.split(|b| *b == 0).next().map(|b| String::from_utf8_lossy(b).into_owned()).unwrap_or_default();
            let e = ObjectEntry::decode(&v)?;
            let slot = u.buckets.entry(bucket).or_default();
            slot.0 += 1;
            slot.1 += e.size;
            if e.version.locked_reason(now, false).is_some() {
                u.locked.0 += 1;
                u.locked.1 += e.size;
            }
        }
        for item in self.index.range(CF_VERSIONS, b"", None)? {
            let (_, v) = item?;
            match VersionRecord::decode(&v)? {
                VersionRecord::Object(e) => {
                    u.noncurrent.0 += 1;
                    u.noncurrent.1 += e.size;
                    if e.version.locked_reason(now, false).is_some() {
                        u.locked.0 += 1;
                        u.locked.1 += e.size;
                    }
                }
                VersionRecord::Marker(_) => u.delete_markers += 1,
            }
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

    /// Where the scrub stands: the run in progress (persisted, so a restart
    /// continues it) and the last completed one.
    pub fn scrub_state(&self) -> Result<ScrubState> {
        Ok(ScrubState {
            cursor: self.index.get_decoded(CF_META, SCRUB_CURSOR)?,
            last: self.index.get_decoded(CF_META, SCRUB_LAST)?,
        })
    }

    /// Re-reads blobs, checks each one's size, every block CRC and its SHA-256
    /// (its name), continuing the scrub in progress or starting one, until
    /// `budget` is spent. Reads are paced by the budget's rate. Progress is
    /// saved in the index at least every [`SCRUB_SAVE_EVERY`] and when the
    /// budget ends, so a stop or a restart resumes near where it left off.
    /// Returns the report when this step completed the scrub.
    pub fn scrub_step(&self, budget: &mut Budget) -> Result<Option<ScrubReport>> {
        let mut cur = match self.index.get_decoded::<ScrubCursor>(CF_META, SCRUB_CURSOR)? {
            Some(c) => c,
            None => {
                let mut total = 0u64;
                for item in self.index.range(CF_BLOBS, b"", None)? {
                    item?;
                    total += 1;
                }
                tracing::info!(blobs = total, "scrub started");
                ScrubCursor { started: self.now(), total, ..ScrubCursor::default() }
            }
        };
        let lower = match &cur.after {
            Some(h) => {
                let mut k = h.to_vec();
                k.push(0);
                k
            }
            None => Vec::new(),
        };
        let mut saved = std::time::Instant::now();
        let mut finished = true;
        for item in self.index.range(CF_BLOBS, &lower, None)? {
            if budget.spent() {
                finished = false;
                break;
            }
            let (k, v) = item?;
            let Ok(h) = <[u8; 32]>::try_from(&k[..]) else { continue };
            let hash = BlobHash::from_bytes(h);
            let meta: BlobMeta = codec::decode(&v, CF_BLOBS)?;
            match self.verify_blob(&hash, &meta, budget)? {
                Verified::Stopped => {
                    finished = false;
                    break;
                }
                Verified::Ok(n) => cur.bytes += n,
                Verified::Bad(problem) => {
                    // GC may have removed the blob since the scan met it: only a
                    // blob still indexed is corrupt.
                    if self.index.get(CF_BLOBS, hash.as_bytes())?.is_some() {
                        self.stats.scrub_corrupt_blobs.fetch_add(1, Ordering::Relaxed);
                        tracing::error!(blob = %hash, problem, "scrub found a corrupt blob");
                        cur.bad.push((hash.to_hex(), problem));
                    }
                }
            }
            cur.blobs += 1;
            cur.after = Some(h);
            self.stats.scrub_blobs_checked.fetch_add(1, Ordering::Relaxed);
            if saved.elapsed() >= SCRUB_SAVE_EVERY {
                self.save_meta(SCRUB_CURSOR, &cur, false)?;
                saved = std::time::Instant::now();
            }
        }
        if !finished {
            self.save_meta(SCRUB_CURSOR, &cur, false)?;
            return Ok(None);
        }
        let mut report = ScrubReport { blobs: cur.blobs, bytes: cur.bytes, corrupt: Vec::new() };
        for (hex, problem) in cur.bad {
            let Some(hash) = BlobHash::from_hex(&hex) else { continue };
            let objects = self.objects_using(&hash)?.into_iter().map(|(b, k)| format!("{b}/{k}")).collect();
            report.corrupt.push(CorruptBlob { hash: hex, problem, objects });
        }
        let mut batch = rocksdb::WriteBatch::default();
        let meta_cf = self.index.cf(CF_META)?;
        batch.delete_cf(meta_cf, SCRUB_CURSOR);
        batch.put_cf(
            meta_cf,
            SCRUB_LAST,
            codec::encode(&CompletedScrub { completed: self.now(), report: report.clone() })?,
        );
        self.index.write(batch)?;
        Ok(Some(report))
    }

    /// A whole scrub at once, unpaced (continuing one in progress).
    pub fn scrub(&self) -> Result<ScrubReport> {
        let mut budget = Budget::unlimited();
        loop {
            if let Some(r) = self.scrub_step(&mut budget)? {
                return Ok(r);
            }
        }
    }

    fn save_meta<T: serde::Serialize>(&self, key: &[u8], value: &T, sync: bool) -> Result<()> {
        let mut batch = rocksdb::WriteBatch::default();
        batch.put_cf(self.index.cf(CF_META)?, key, codec::encode(value)?);
        if sync {
            self.index.write(batch)
        } else {
            // Losing the last saved position in a crash repeats a few seconds of work.
            self.index.write_relaxed(batch)
        }
    }

    fn verify_blob(&self, hash: &BlobHash, meta: &BlobMeta, budget: &mut Budget) -> Result<Verified> {
        let file = match self.open_blob(hash, meta.size) {
            Ok(f) => f,
            // Evicted to a target: the tier worker checks that copy on its own schedule.
            Err(_) if self.tier_loc(hash)?.is_some() => return Ok(Verified::Ok(0)),
            Err(e) => return Ok(Verified::Bad(e.to_string())),
        };
        let len = match file.size() {
            Ok(l) => l,
            Err(e) => return Ok(Verified::Bad(e.to_string())),
        };
        if len != meta.size {
            return Ok(Verified::Bad(format!("file has {len} bytes, the index says {}", meta.size)));
        }
        let mut sha = Sha256::new();
        let bs = meta.block_size as u64;
        let mut buf = vec![0u8; bs as usize];
        let mut off = 0u64;
        let mut block = 0usize;
        while off < meta.size {
            let n = bs.min(meta.size - off) as usize;
            if let Err(e) = file.read_exact_at(&mut buf[..n], off) {
                return Ok(Verified::Bad(format!("read failed at {off}: {e}")));
            }
            if meta.crcs.get(block).copied() != Some(crc32fast::hash(&buf[..n])) {
                return Ok(Verified::Bad(format!("block {block} fails its CRC")));
            }
            sha.update(&buf[..n]);
            off += n as u64;
            block += 1;
            if !budget.pace(n as u64) {
                return Ok(Verified::Stopped);
            }
        }
        if <[u8; 32]>::from(sha.finalize()) != *hash.as_bytes() {
            return Ok(Verified::Bad("content does not match its SHA-256 name".into()));
        }
        Ok(Verified::Ok(meta.size))
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
