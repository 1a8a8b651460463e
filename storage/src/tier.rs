//! Tiering: objects whose bytes live on a replication target instead of local disk.
//!
//! The unit is the blob. A blob is *evicted* when it belongs to exactly one object
//! (reference count 1; shared blobs and blobs kept inline in the index stay local),
//! that object is the current version of its key in an unversioned bucket, and the
//! caller has confirmed that the target holds that exact version (crate `remote`
//! compares the copy's `walstore-etag` and `walstore-mtime`). Eviction writes a tier
//! record (`meta: tier/blob/<hash>` → [`RemoteLoc`]: target, object, offset) with a
//! synced write, *then* unlinks the file: a crash in between leaves a file the next
//! sweep removes ([`Store::tier_leftovers`], the orphan sweep), never a blob without
//! bytes. Reads find the record when the file is missing and stream from the target
//! through [`crate::blob::RemoteBlobs`]; the per-block CRCs are checked as for local
//! files. Rehydration ([`Store::rehydrate`]) is the reverse: the verified bytes are
//! placed as a file first, then the record goes. A later upload of the same bytes
//! places a file and rewrites the blob's metadata, which also makes it local again.
//!
//! Why one object per blob: the copy on the target is per key, so the location is
//! only stable while that key keeps those bytes. An overwrite or delete drops the
//! reference (and GC the record); versioned buckets cannot be tiered at all (an older
//! version's bytes would be overwritten on the target), and CopyObject of a tiered
//! object copies bytes, not the reference (see `objects::copy_object`).

use std::collections::BTreeMap;
use std::time::Duration;

use rocksdb::WriteBatch;
use wal::{split_repo, HotSet};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{
    object_key, prefix_end, tier_blob_key, tier_cache_key, tier_policy_bucket_prefix, ObjectEntry, CF_META, CF_OBJECTS,
    TIER_BLOB_PREFIX, TIER_CACHE_PREFIX, TIER_POLICY_PREFIX,
};
use crate::locks::lock_id;
use crate::store::{info_of, object_lock, Store};
use crate::types::{BlobHash, BucketName, ObjectInfo, ObjectKey, RemoteLoc, TierPolicy, Versioning};
use crate::writer::{StagedBlob, StagedBody, INLINE_MAX};

/// What one page of a policy's objects holds (see [`Store::tier_page`]).
#[derive(Debug, Default)]
pub struct TierPage {
    /// Objects to evict: old enough, not hot, with local bytes that can go.
    pub candidates: Vec<ObjectInfo>,
    /// Evicted blobs the policy wants local again (their object became hot: a newer
    /// backup was deleted, `keep_newest_backups` grew; or `after` grew past its age).
    pub rewarm: Vec<BlobHash>,
    /// Local and remote bytes by repository (`""`: objects outside any).
    pub rows: BTreeMap<String, TierRow>,
    /// The last key examined, to continue after; `None` at the end of the policy.
    pub next: Option<String>,
}

/// Local and remote bytes of one repository (or the rest of a policy's objects).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TierRow {
    /// Objects with every byte local.
    pub local_objects: u64,
    /// Bytes on local disk (inline ones included).
    pub local_bytes: u64,
    /// Objects with some bytes on the target.
    pub remote_objects: u64,
    /// Bytes on the target only.
    pub remote_bytes: u64,
}

impl TierRow {
    /// Adds `other`'s figures.
    pub fn add(&mut self, other: &TierRow) {
        self.local_objects += other.local_objects;
        self.local_bytes += other.local_bytes;
        self.remote_objects += other.remote_objects;
        self.remote_bytes += other.remote_bytes;
    }
}

/// A blob a read brought back (policies with `rehydrate_on_read`): the tier worker
/// leaves it local until the cache holds more than its budget.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cached {
    /// When it was brought back.
    pub at: crate::types::Timestamp,
    /// Its length.
    pub size: u64,
}

fn policy_key(bucket: &str, prefix: &str) -> Vec<u8> {
    let mut k = tier_policy_bucket_prefix(bucket);
    k.extend_from_slice(prefix.as_bytes());
    k
}

impl Store {
    /// Every tiering policy, by bucket and prefix.
    pub fn tier_policies(&self) -> Result<Vec<TierPolicy>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_META, TIER_POLICY_PREFIX, prefix_end(TIER_POLICY_PREFIX))? {
            let (_, v) = item?;
            out.push(codec::decode(&v, "tier policy")?);
        }
        Ok(out)
    }

    /// The policy that decides `key` of `bucket`: the one with the longest prefix.
    pub fn tier_policy_for<'a>(policies: &'a [TierPolicy], bucket: &str, key: &str) -> Option<&'a TierPolicy> {
        policies.iter().filter(|p| p.covers(bucket, key)).max_by_key(|p| p.prefix.len())
    }

    /// Sets (or replaces) the policy of `p.bucket`/`p.prefix`. The bucket must exist and
    /// never have been versioned, and the target must exist and copy the whole prefix.
    pub fn put_tier_policy(&self, p: &TierPolicy, actor: &str) -> Result<()> {
        self.ensure_writable()?;
        // Shared: `set_versioning` checks for policies under the exclusive lock.
        let _b = self.bucket_lock.read();
        let bucket = BucketName::parse(&p.bucket)?;
        let info = self.bucket(&bucket)?;
        if info.versioning != Versioning::Unversioned {
            return Err(Error::InvalidBucketState(format!(
                "bucket {bucket} is versioned; tiering keeps one copy per key on the target, so only unversioned \
                 buckets can be tiered"
            )));
        }
        let target = self.replication_target(&p.target)?;
        let covered = target.source_bucket.as_deref().is_none_or(|b| b == p.bucket)
            && p.prefix.starts_with(&target.source_prefix);
        if !covered {
            return Err(Error::InvalidArgument(format!(
                "replication target {:?} copies {}/{}, not all of {}/{}: tiering needs every object it evicts on the \
                 target",
                p.target,
                target.source_bucket.as_deref().unwrap_or("*"),
                target.source_prefix,
                p.bucket,
                p.prefix
            )));
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_META)?, policy_key(&p.bucket, &p.prefix), codec::encode(p)?);
        self.index.write(batch)?;
        let detail = format!(
            "prefix={:?} target={} after_ms={} keep_newest={}",
            p.prefix, p.target, p.after_ms, p.keep_newest_backups
        );
        self.audit_admin(actor, "tier-set", &p.bucket, &detail)
    }

    /// Removes a policy. Its evicted blobs stay where they are until the tier worker
    /// brings them back ([`Store::rehydrate`]).
    pub fn remove_tier_policy(&self, bucket: &str, prefix: &str, actor: &str) -> Result<TierPolicy> {
        self.ensure_writable()?;
        let key = policy_key(bucket, prefix);
        let p: TierPolicy = match self.index.get(CF_META, &key)? {
            Some(v) => codec::decode(&v, "tier policy")?,
            None => return Err(Error::InvalidArgument(format!("no tiering policy for {bucket}/{prefix}"))),
        };
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, &key);
        self.index.write(batch)?;
        self.audit_admin(actor, "tier-remove", bucket, &format!("prefix={prefix:?}"))?;
        Ok(p)
    }

    /// Examines up to `limit` objects of policy `p` after key `after`: local and remote
    /// bytes by repository, and the objects to evict now. Objects a more specific
    /// policy of `all` decides are skipped.
    pub fn tier_page(&self, p: &TierPolicy, all: &[TierPolicy], after: Option<&str>, limit: usize) -> Result<TierPage> {
        let bucket = BucketName::parse(&p.bucket)?;
        let info = self.bucket(&bucket)?;
        let mut page = TierPage::default();
        if info.versioning != Versioning::Unversioned {
            return Ok(page);
        }
        let base = object_key(&bucket, &p.prefix);
        let end = prefix_end(&base);
        let start = match after {
            Some(k) => {
                let mut s = object_key(&bucket, k);
                s.push(0);
                s
            }
            None => base.clone(),
        };
        let bprefix_len = object_key(&bucket, "").len();
        let now = self.now();
        let cutoff = now.as_millis() - i64::try_from(p.after_ms).unwrap_or(i64::MAX).min(now.as_millis());
        let mut hot: BTreeMap<String, Option<HotSet>> = BTreeMap::new();
        let mut seen = 0;
        for item in self.index.range(CF_OBJECTS, &start, end)? {
            let (k, v) = item?;
            let key = String::from_utf8_lossy(&k[bprefix_len..]).into_owned();
            seen += 1;
            if seen > limit {
                break;
            }
            page.next = Some(key.clone());
            if Store::tier_policy_for(all, &p.bucket, &key).is_some_and(|q| q != p) {
                continue;
            }
            let e = ObjectEntry::decode(&v)?;
            let (repo, path) = split_repo(&key).map_or(("", key.as_str()), |(r, rest)| (r, rest));
            let row = page.rows.entry(repo.to_owned()).or_default();
            let (mut local, mut remote, mut evictable) = (0u64, 0u64, false);
            let mut tiered = Vec::new();
            for b in &e.blobs {
                if b.size > INLINE_MAX && self.tier_loc(&b.hash)?.is_some() {
                    remote += b.size;
                    tiered.push(b.hash);
                } else {
                    local += b.size;
                    evictable |= b.size > INLINE_MAX && self.tier_cached(&b.hash)?.is_none();
                }
            }
            row.local_bytes += local;
            row.remote_bytes += remote;
            if remote > 0 {
                row.remote_objects += 1;
            } else {
                row.local_objects += 1;
            }
            let old_enough = e.last_modified.as_millis() <= cutoff;
            if !(evictable && old_enough) && remote == 0 {
                continue;
            }
            let is_hot = !repo.is_empty() && {
                let set = match hot.get(repo) {
                    Some(s) => s.clone(),
                    None => {
                        // An evaluation that fails keeps the repository local.
                        let s = self
                            .evaluation(&bucket, repo)
                            .ok()
                            .map(|ev| HotSet::of(&ev.horizon, p.keep_newest_backups));
                        hot.insert(repo.to_owned(), s.clone());
                        s
                    }
                };
                set.is_none_or(|s| s.is_hot(path))
            };
            if remote > 0 && (is_hot || !old_enough) {
                page.rewarm.extend(tiered);
            } else if evictable && old_enough && !is_hot {
                page.candidates.push(info_of(&bucket, &ObjectKey::parse(&key)?, e));
            }
        }
        if seen <= limit {
            page.next = None;
        }
        Ok(page)
    }

    /// Evicts the local bytes of `info` (its current version, unchanged since it was
    /// read) to `target`, which the caller has confirmed holds that version. Returns
    /// the bytes removed from local disk (0 if the object changed, or none of its blobs
    /// can go: shared, inline, already evicted).
    pub fn evict(&self, info: &ObjectInfo, target: &str) -> Result<u64> {
        Ok(self.evict_many(std::slice::from_ref(info), target)?.first().copied().unwrap_or(0))
    }

    /// [`Store::evict`] of several objects of one bucket with one synced write: the
    /// disk's sync latency is paid once per page, not once per object. Returns the bytes
    /// removed per object, in order.
    pub fn evict_many(&self, infos: &[ObjectInfo], target: &str) -> Result<Vec<u64>> {
        let mut freed = vec![0u64; infos.len()];
        let Some(first) = infos.first() else { return Ok(freed) };
        if infos.iter().any(|i| i.bucket != first.bucket) {
            return Err(Error::InvalidArgument("evict_many: objects of one bucket at a time".into()));
        }
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        if self.bucket(&first.bucket)?.versioning != Versioning::Unversioned {
            return Ok(freed);
        }
        let keys: Vec<u64> = infos.iter().map(|i| object_lock(&i.bucket, &i.key)).collect();
        let _k = self.key_locks.lock_all(&keys);
        // The objects as they are now: only those unchanged since they were read.
        let mut current = Vec::with_capacity(infos.len());
        for info in infos {
            let e = self.entry(&info.bucket, info.key.as_str())?;
            current.push(
                e.filter(|e| e.etag == info.etag && e.last_modified == info.last_modified && e.blobs == info.blobs),
            );
        }
        let ids: Vec<u64> = current.iter().flatten().flat_map(|e| e.blobs.iter().map(|b| lock_id(&b.hash))).collect();
        let _g = self.blob_locks.lock_all(&ids);
        let now = self.now();
        let meta_cf = self.index.cf(CF_META)?;
        let mut batch = WriteBatch::default();
        let mut gone = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (n, (info, e)) in infos.iter().zip(&current).enumerate() {
            let Some(e) = e else { continue };
            let mut offset = 0u64;
            for b in &e.blobs {
                let at = offset;
                offset += b.size;
                if b.size <= INLINE_MAX
                    || !seen.insert(b.hash)
                    || self.tier_loc(&b.hash)?.is_some()
                    || self.index.refcount(&b.hash)?.count != 1
                    || self.blobs.size_of(&b.hash)? != Some(b.size)
                {
                    continue;
                }
                let loc = RemoteLoc {
                    target: target.to_owned(),
                    bucket: info.bucket.as_str().to_owned(),
                    key: info.key.as_str().to_owned(),
                    offset: at,
                    size: b.size,
                    etag: e.etag.as_str().to_owned(),
                    last_modified: e.last_modified,
                    evicted: now,
                };
                batch.put_cf(meta_cf, tier_blob_key(&b.hash), codec::encode(&loc)?);
                batch.delete_cf(meta_cf, tier_cache_key(&b.hash));
                gone.push(b.hash);
                freed[n] += b.size;
            }
        }
        if gone.is_empty() {
            return Ok(freed);
        }
        // The records are durable before the files go: a crash in between leaves
        // leftover files, never a blob without bytes.
        self.index.write(batch)?;
        crate::failpoint::hit("tier-evict-recorded");
        for hash in &gone {
            self.blobs.remove(hash)?;
        }
        Ok(freed)
    }

    /// Where the bytes of evicted blob `hash` are (`None`: it is local).
    pub fn tier_location(&self, hash: &BlobHash) -> Result<Option<RemoteLoc>> {
        self.tier_loc(hash)
    }

    /// Up to `limit` evicted blobs after `after`, in hash order.
    pub fn tiered_blobs(&self, after: Option<&BlobHash>, limit: usize) -> Result<Vec<(BlobHash, RemoteLoc)>> {
        let start = match after {
            Some(h) => {
                let mut k = tier_blob_key(h);
                k.push(0);
                k
            }
            None => TIER_BLOB_PREFIX.to_vec(),
        };
        let mut out = Vec::new();
        for item in self.index.range(CF_META, &start, prefix_end(TIER_BLOB_PREFIX))?.take(limit) {
            let (k, v) = item?;
            let Ok(h) = <[u8; 32]>::try_from(&k[TIER_BLOB_PREFIX.len()..]) else {
                return Err(Error::Decode(format!("tier record key of length {}", k.len())));
            };
            out.push((BlobHash::from_bytes(h), codec::decode(&v, "tier record")?));
        }
        Ok(out)
    }

    /// A reader over the whole of evicted blob `hash` (from its target; the reader
    /// verifies block CRCs, the target's reader the SHA-256).
    pub fn read_tiered(&self, hash: &BlobHash, loc: &RemoteLoc) -> Result<crate::ObjectReader> {
        self.read_blob(&crate::types::BlobRef { hash: *hash, size: loc.size }, 0..loc.size)
    }

    /// Reads evicted blob `hash` back from its target into a staged blob, verified.
    pub(crate) fn stage_tiered(&self, hash: &BlobHash, loc: &RemoteLoc) -> Result<StagedBlob> {
        let mut r = self.read_tiered(hash, loc)?;
        let mut w = self.blob_writer_for(&[], Some(loc.size))?;
        while let Some(chunk) = r.next_chunk()? {
            w.write_bytes(chunk)?;
        }
        let staged = w.finish()?;
        if staged.hash != *hash {
            return Err(Error::Corrupt(format!("blob {hash}: the target's bytes hash to {}", staged.hash)));
        }
        Ok(staged)
    }

    /// Brings evicted blob `hash` back to local disk (read from its target, verified,
    /// placed, then the tier record removed). With `cache`, it is recorded in the tier
    /// cache (a read asked for it: it may be evicted again when the cache is full).
    /// Returns the bytes brought back (0: it was not evicted).
    pub fn rehydrate_blob(&self, hash: &BlobHash, cache: bool) -> Result<u64> {
        let Some(loc) = self.tier_loc(hash)? else { return Ok(0) };
        let staged = self.stage_tiered(hash, &loc)?;
        Ok(if self.rehydrate(staged, cache)? { loc.size } else { 0 })
    }

    /// The tier cache entry of blob `hash`, if a read brought it back.
    pub(crate) fn tier_cached(&self, hash: &BlobHash) -> Result<Option<Cached>> {
        self.index.get(CF_META, &tier_cache_key(hash))?.map(|v| codec::decode(&v, "tier cache entry")).transpose()
    }

    /// Every tier cache entry, least recently brought back first.
    pub fn tier_cache(&self) -> Result<Vec<(BlobHash, Cached)>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_META, TIER_CACHE_PREFIX, prefix_end(TIER_CACHE_PREFIX))? {
            let (k, v) = item?;
            let Ok(h) = <[u8; 32]>::try_from(&k[TIER_CACHE_PREFIX.len()..]) else {
                return Err(Error::Decode(format!("tier cache key of length {}", k.len())));
            };
            out.push((BlobHash::from_bytes(h), codec::decode::<Cached>(&v, "tier cache entry")?));
        }
        out.sort_by_key(|(_, c)| c.at);
        Ok(out)
    }

    /// Takes blob `hash` out of the tier cache: policies decide about it again (the
    /// next pass evicts it if it is cold).
    pub fn tier_uncache(&self, hash: &BlobHash) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, tier_cache_key(hash));
        // Relaxed: losing it in a crash keeps the blob cached a little longer.
        self.index.write_relaxed(batch)
    }

    /// Makes evicted blob `staged.hash` local again with the bytes in `staged` (read
    /// back and hashed by the caller), in the tier cache with `cache`. `false` if it is
    /// not evicted (any more).
    pub fn rehydrate(&self, staged: StagedBlob, cache: bool) -> Result<bool> {
        self.ensure_writable()?;
        let hash = staged.hash;
        let _g = self.blob_locks.lock_all(&[lock_id(&hash)]);
        let Some(loc) = self.tier_loc(&hash)? else { return Ok(false) };
        if staged.size != loc.size {
            return Err(Error::Corrupt(format!("blob {hash}: read back {} bytes, expected {}", staged.size, loc.size)));
        }
        match staged.body {
            StagedBody::File(staging) => {
                self.blobs.place(staging, &hash, staged.size)?;
            }
            StagedBody::Inline(_) => {
                return Err(Error::InvalidArgument(format!("blob {hash}: too small to have been evicted")));
            }
        }
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, tier_blob_key(&hash));
        if cache {
            let entry = Cached { at: self.now(), size: loc.size };
            batch.put_cf(self.index.cf(CF_META)?, tier_cache_key(&hash), codec::encode(&entry)?);
        }
        self.index.write(batch)?;
        Ok(true)
    }

    /// Removes files that interrupted evictions left behind (their bytes are on the
    /// target and the index says so); returns how many.
    pub fn tier_leftovers(&self) -> Result<u64> {
        let mut n = 0;
        let mut after = None;
        loop {
            let page = self.tiered_blobs(after.as_ref(), 1024)?;
            let Some((last, _)) = page.last() else { return Ok(n) };
            after = Some(*last);
            for (hash, _) in &page {
                let _g = self.blob_locks.lock_all(&[lock_id(hash)]);
                if self.blobs.size_of(hash)?.is_some() && self.tier_loc(hash)?.is_some() {
                    self.blobs.remove(hash)?;
                    n += 1;
                }
            }
        }
    }

    /// Blobs and bytes evicted, by bucket (read from the tier records).
    pub fn tier_totals(&self) -> Result<BTreeMap<String, (u64, u64)>> {
        let mut out: BTreeMap<String, (u64, u64)> = BTreeMap::new();
        for item in self.index.range(CF_META, TIER_BLOB_PREFIX, prefix_end(TIER_BLOB_PREFIX))? {
            let (_, v) = item?;
            let loc: RemoteLoc = codec::decode(&v, "tier record")?;
            let e = out.entry(loc.bucket).or_default();
            e.0 += 1;
            e.1 += loc.size;
        }
        Ok(out)
    }
}

/// `after` as a policy's minimum age.
pub fn after_ms(after: Duration) -> u64 {
    u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
}
