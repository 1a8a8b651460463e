//! Versioning and Object Lock.
//!
//! The current version of a key lives in `objects`, as on a bucket that was never
//! versioned; every other version (older objects, delete markers) lives in `versions`,
//! newest first. So GET, listings and the WAL catalog read the current state exactly as
//! before, and a never-versioned bucket pays nothing: its writes never touch `versions`.
//!
//! Every write of a key goes through [`KeyVersions`]: all versions of the key are read
//! under the key's lock, changed in memory (one request may delete several versions of
//! one key, as WAL-G's `delete` does), and written back as one diff in the caller's
//! batch. A version is a reference to blobs like any object entry: adding one costs no
//! copy, and dropping one for good drops its references (the invariant `walstore check`
//! verifies counts `versions` entries too).
//!
//! Lock rules (S3's): a locked version (retention not yet expired, or a legal hold)
//! cannot be deleted for good; a delete without a version id only adds a delete marker,
//! which is always allowed. GOVERNANCE retention yields to a caller allowed to bypass
//! it; COMPLIANCE yields to nobody, and its date can only move later. Expiry reads the
//! store's clock: see the README ("Object Lock and the clock").

use rocksdb::WriteBatch;

use crate::error::{Error, Result};
use crate::index::{
    bucket_prefix, object_key, prefix_end, version_key, version_prefix, BucketEntry, MarkerEntry, ObjectEntry,
    VersionRecord, VersionTrail, CF_BUCKETS, CF_META, CF_OBJECTS, CF_VERSIONS,
};
use crate::store::{info_of, object_lock, Store};
use crate::types::{
    BlobRef, BucketInfo, BucketName, LockMode, LockRequest, ObjectInfo, ObjectKey, ObjectLockConfig, Retention,
    Timestamp, VersionId, Versioning,
};

/// All versions of one key, read under its lock, changed in memory, written back
/// with [`KeyVersions::flush`].
pub(crate) struct KeyVersions {
    bucket: BucketName,
    key: String,
    versioning: Versioning,
    /// The current version (`objects`); `None` if the key does not exist or its latest
    /// version is a delete marker.
    pub current: Option<ObjectEntry>,
    current_dirty: bool,
    /// Older versions and delete markers, newest first, with a "must be written" flag.
    others: Vec<(VersionRecord, bool)>,
    /// `versions` entries to remove (by sequence number).
    removed: Vec<u64>,
    /// References dropped by versions deleted for good.
    unref: Vec<BlobRef>,
}

/// What [`KeyVersions::delete_version`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Removed {
    /// Nothing had that version id.
    Nothing,
    /// An object version (its size).
    Object(u64),
    /// A delete marker.
    Marker,
}

impl KeyVersions {
    /// Whether the key shows in the current state (GET without a version id).
    pub fn exists(&self) -> bool {
        self.current.is_some()
    }

    /// Number of versions of any kind.
    pub fn len(&self) -> usize {
        usize::from(self.current.is_some()) + self.others.len()
    }

    /// Every version, newest first: the current one, then the others.
    pub fn newest_first(&self) -> impl Iterator<Item = VersionRecord> + '_ {
        self.current.iter().map(|c| VersionRecord::Object(c.clone())).chain(self.others.iter().map(|(r, _)| r.clone()))
    }

    fn newest_seq(&self) -> Option<u64> {
        let cur = self.current.as_ref().map(|c| c.version.seq);
        let other = self.others.first().map(|(r, _)| r.seq());
        cur.max(other)
    }

    /// A sequence number newer than every version of the key: the write time in
    /// microseconds, or one past the newest if the clock is behind it.
    fn next_seq(&self, now: Timestamp) -> u64 {
        let now_us = u64::try_from(now.as_millis()).unwrap_or(0).saturating_mul(1000);
        match self.newest_seq() {
            Some(n) => now_us.max(n + 1),
            None => now_us.max(1),
        }
    }

    fn push_noncurrent(&mut self, rec: VersionRecord) {
        self.others.insert(0, (rec, true));
    }

    fn drop_other(&mut self, i: usize, now: Timestamp, bypass: bool) -> Result<Removed> {
        if let VersionRecord::Object(e) = &self.others[i].0 {
            if let Some(why) = e.version.locked_reason(now, bypass) {
                return Err(Error::AccessDenied(why));
            }
        }
        let (rec, _) = self.others.remove(i);
        self.removed.push(rec.seq());
        Ok(match rec {
            VersionRecord::Object(e) => {
                self.unref.extend_from_slice(&e.blobs);
                Removed::Object(e.size)
            }
            VersionRecord::Marker(_) => Removed::Marker,
        })
    }

    /// Removes the `null` version among the non-current ones (a suspended bucket's
    /// write replaces it).
    fn drop_null_other(&mut self, now: Timestamp) -> Result<()> {
        if let Some(i) = self.others.iter().position(|(r, _)| r.id() == VersionId::Null) {
            self.drop_other(i, now, false)?;
        }
        Ok(())
    }

    /// Takes the current version out of `objects`: kept as a non-current version,
    /// or dropped when the write replaces it (`null` on a suspended bucket; anything
    /// on a never-versioned one).
    fn retire_current(&mut self, replace_null: bool, now: Timestamp) -> Result<()> {
        let Some(old) = self.current.take() else { return Ok(()) };
        self.current_dirty = true;
        let replaced = match self.versioning {
            Versioning::Unversioned => true,
            Versioning::Enabled => false,
            Versioning::Suspended => replace_null && old.version.id() == VersionId::Null,
        };
        if replaced {
            if let Some(why) = old.version.locked_reason(now, false) {
                self.current = Some(old);
                return Err(Error::AccessDenied(why));
            }
            self.unref.extend_from_slice(&old.blobs);
        } else {
            self.push_noncurrent(VersionRecord::Object(old));
        }
        Ok(())
    }

    /// Makes `new` the current version; returns its version id (`None` on a bucket
    /// that was never versioned). The caller adds `new`'s references.
    pub fn place(&mut self, mut new: ObjectEntry, lock: LockTerms, now: Timestamp) -> Result<Option<VersionId>> {
        let seq = self.next_seq(now);
        match self.versioning {
            Versioning::Unversioned => {
                new.version = VersionTrail::default();
            }
            Versioning::Enabled | Versioning::Suspended => {
                if self.key.contains('\0') {
                    return Err(Error::InvalidKey("a key with a NUL byte cannot be versioned".into()));
                }
                let null = self.versioning == Versioning::Suspended;
                new.version =
                    VersionTrail { seq, null, versioned: true, retention: lock.retention, legal_hold: lock.legal_hold };
            }
        }
        self.retire_current(true, now)?;
        if self.versioning == Versioning::Suspended {
            self.drop_null_other(now)?;
        }
        let id = new.version.versioned.then(|| new.version.id());
        self.current = Some(new);
        self.current_dirty = true;
        Ok(id)
    }

    /// A delete without a version id: removes the object on a never-versioned bucket,
    /// else adds a delete marker (returned). Allowed whatever the locks.
    pub fn remove_current(&mut self, now: Timestamp) -> Result<Option<VersionId>> {
        if self.versioning == Versioning::Unversioned {
            self.retire_current(true, now)?;
            return Ok(None);
        }
        let seq = self.next_seq(now);
        let null = self.versioning == Versioning::Suspended;
        self.retire_current(true, now)?;
        if null {
            self.drop_null_other(now)?;
        }
        let marker = MarkerEntry { last_modified: now, seq, null };
        self.push_noncurrent(VersionRecord::Marker(marker));
        Ok(Some(marker.id()))
    }

    /// Deletes one version for good. Deleting the current version makes the next
    /// newer one current (an object, or nothing if that is a delete marker).
    pub fn delete_version(&mut self, id: VersionId, now: Timestamp, bypass: bool) -> Result<Removed> {
        if self.current.as_ref().is_some_and(|c| c.version.id() == id) {
            let cur = self.current.as_ref().map(|c| c.version).unwrap_or_default();
            if let Some(why) = cur.locked_reason(now, bypass) {
                return Err(Error::AccessDenied(why));
            }
            let Some(old) = self.current.take() else { return Ok(Removed::Nothing) };
            self.current_dirty = true;
            self.unref.extend_from_slice(&old.blobs);
            self.promote();
            return Ok(Removed::Object(old.size));
        }
        let removed = match self.others.iter().position(|(r, _)| r.id() == id) {
            Some(i) => self.drop_other(i, now, bypass)?,
            None => Removed::Nothing,
        };
        self.promote();
        Ok(removed)
    }

    /// Keeps the invariant that the latest version, when it is an object, is the
    /// current one (in `objects`): after the newest version or marker went away, the
    /// next one, if an object, becomes current.
    fn promote(&mut self) {
        if self.current.is_none() && matches!(self.others.first(), Some((VersionRecord::Object(_), _))) {
            let (rec, _) = self.others.remove(0);
            self.removed.push(rec.seq());
            if let VersionRecord::Object(e) = rec {
                self.current = Some(e);
                self.current_dirty = true;
            }
        }
    }

    /// Why some version of the key cannot be deleted now (`None`: none is locked).
    pub fn locked_reason(&self, now: Timestamp) -> Option<String> {
        let objects = self.current.iter().chain(self.others.iter().filter_map(|(r, _)| match r {
            VersionRecord::Object(e) => Some(e),
            VersionRecord::Marker(_) => None,
        }));
        objects.filter_map(|e| e.version.locked_reason(now, false)).next()
    }

    /// Deletes every version and delete marker for good (the retention worker, like
    /// WAL-G's own `delete` on a versioned bucket); returns the bytes of the current
    /// version. Refused if any version is locked, before anything changes.
    pub fn delete_all(&mut self, now: Timestamp) -> Result<u64> {
        if let Some(why) = self.locked_reason(now) {
            return Err(Error::AccessDenied(why));
        }
        let size = self.current.as_ref().map_or(0, |c| c.size);
        if let Some(old) = self.current.take() {
            self.current_dirty = true;
            self.unref.extend_from_slice(&old.blobs);
        }
        while !self.others.is_empty() {
            self.drop_other(0, now, false)?;
        }
        Ok(size)
    }

    /// The version with this id: `Ok(entry, is_latest)`, [`Error::DeleteMarker`]
    /// for a delete marker, [`Error::NoSuchVersion`] if there is none.
    pub fn object(&self, id: VersionId) -> Result<(&ObjectEntry, bool)> {
        if let Some(c) = self.current.as_ref().filter(|c| c.version.id() == id) {
            return Ok((c, true));
        }
        for (r, _) in &self.others {
            if r.id() != id {
                continue;
            }
            return match r {
                VersionRecord::Object(e) => Ok((e, false)),
                VersionRecord::Marker(_) => Err(Error::DeleteMarker),
            };
        }
        Err(Error::NoSuchVersion)
    }

    /// The object version with this id, to change its lock.
    fn object_mut(&mut self, id: Option<VersionId>) -> Result<&mut ObjectEntry> {
        let id = match (id, &self.current) {
            (Some(id), _) => id,
            (None, Some(c)) => c.version.id(),
            (None, None) => return Err(Error::NoSuchKey),
        };
        if self.current.as_ref().is_some_and(|c| c.version.id() == id) {
            self.current_dirty = true;
            return self.current.as_mut().ok_or(Error::NoSuchKey);
        }
        for (r, dirty) in &mut self.others {
            if r.id() == id {
                return match r {
                    VersionRecord::Object(e) => {
                        *dirty = true;
                        Ok(e)
                    }
                    VersionRecord::Marker(_) => Err(Error::DeleteMarker),
                };
            }
        }
        Err(Error::NoSuchVersion)
    }

    /// Writes the changes into `batch`.
    pub fn flush(self, store: &Store, batch: &mut WriteBatch, now: Timestamp) -> Result<()> {
        let okey = object_key(&self.bucket, &self.key);
        if self.current_dirty {
            match &self.current {
                Some(e) => batch.put_cf(store.index.cf(CF_OBJECTS)?, &okey, e.encode()?),
                None => batch.delete_cf(store.index.cf(CF_OBJECTS)?, &okey),
            }
            store.journal_change(batch, &self.bucket, &self.key, self.current.as_ref(), now)?;
        }
        let vcf = store.index.cf(CF_VERSIONS)?;
        for seq in &self.removed {
            batch.delete_cf(vcf, version_key(&self.bucket, &self.key, *seq));
        }
        for (rec, dirty) in &self.others {
            if *dirty {
                batch.put_cf(vcf, version_key(&self.bucket, &self.key, rec.seq()), rec.encode()?);
            }
        }
        store.unref(batch, &self.unref, now)
    }
}

/// The lock a new version gets, after the bucket's default was applied.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LockTerms {
    pub retention: Option<Retention>,
    pub legal_hold: bool,
}

/// The lock a new version in `bucket` gets for `req`: the request's, else the bucket's
/// default retention. Asking for a lock on a bucket without Object Lock is refused
/// (S3: 400 InvalidRequest), never ignored.
/// `refuse_past`: a retain-until date not in the future is an error (a new write); off
/// at completion of a multipart upload, whose date was checked at its creation.
pub(crate) fn lock_terms(
    bucket: &BucketInfo,
    req: &LockRequest,
    now: Timestamp,
    refuse_past: bool,
) -> Result<LockTerms> {
    let Some(cfg) = &bucket.object_lock else {
        if req.is_empty() {
            return Ok(LockTerms::default());
        }
        return Err(Error::InvalidRequest("Bucket is missing Object Lock Configuration".into()));
    };
    let retention = match (req.retention, cfg.default_retention) {
        (Some(r), _) => {
            if refuse_past && r.until <= now {
                return Err(Error::InvalidArgument("The retain until date must be in the future!".into()));
            }
            Some(r)
        }
        (None, Some((mode, period))) => {
            Some(Retention { mode, until: Timestamp::from_millis(now.as_millis().saturating_add(period.millis())) })
        }
        (None, None) => None,
    };
    Ok(LockTerms { retention, legal_hold: req.legal_hold })
}

/// One entry of a ListObjectVersions page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionSummary {
    /// Key.
    pub key: String,
    /// Version id.
    pub version_id: VersionId,
    /// Whether this is the key's latest version (object or marker).
    pub is_latest: bool,
    /// Time of the write (or delete) that created it.
    pub last_modified: Timestamp,
    /// `None` for a delete marker; else size, ETag and storage class.
    pub object: Option<(u64, crate::types::ETag, Option<String>)>,
}

/// A ListObjectVersions request.
#[derive(Debug, Clone, Default)]
pub struct VersionQuery {
    /// Only keys starting with this.
    pub prefix: String,
    /// Roll keys up at this delimiter.
    pub delimiter: Option<String>,
    /// Start after this key (`key-marker`)…
    pub key_marker: Option<String>,
    /// …or after this version of it (`version-id-marker`).
    pub version_marker: Option<VersionId>,
    /// Page size (entries plus common prefixes).
    pub max_keys: usize,
}

/// A page of ListObjectVersions.
#[derive(Debug, Clone, Default)]
pub struct VersionPage {
    /// Versions and markers, by key, newest first per key.
    pub versions: Vec<VersionSummary>,
    /// Common prefixes.
    pub prefixes: Vec<String>,
    /// More follow.
    pub truncated: bool,
    /// Where the next page starts (`NextKeyMarker`, `NextVersionIdMarker`).
    pub next: Option<(String, VersionId)>,
    /// A common prefix ended the page: the next page starts after it.
    pub next_prefix: Option<String>,
}

impl Store {
    /// Reads every version of `key` (only the current one on a never-versioned bucket).
    pub(crate) fn key_versions(&self, bucket: &BucketInfo, key: &str) -> Result<KeyVersions> {
        let current = self.entry(&bucket.name, key)?;
        let mut others = Vec::new();
        if bucket.versioning != Versioning::Unversioned {
            let prefix = version_prefix(&bucket.name, key);
            for item in self.index.range(CF_VERSIONS, &prefix, prefix_end(&prefix))? {
                let (k, v) = item?;
                if k.len() != prefix.len() + 8 {
                    continue; // a longer key that shares the prefix
                }
                others.push((VersionRecord::decode(&v)?, false));
            }
        }
        Ok(KeyVersions {
            bucket: bucket.name.clone(),
            key: key.to_owned(),
            versioning: bucket.versioning,
            current,
            current_dirty: false,
            others,
            removed: Vec::new(),
            unref: Vec::new(),
        })
    }

    /// Whether some blob of `bucket` is evicted to a replication target (a scan of the
    /// tier records: an admin action's cost, not a request's).
    fn bucket_has_evicted_bytes(&self, bucket: &str) -> Result<bool> {
        let p = crate::index::TIER_BLOB_PREFIX;
        for item in self.index.range(CF_META, p, prefix_end(p))? {
            let (_, v) = item?;
            let loc: crate::types::RemoteLoc = crate::codec::decode(&v, "tier record")?;
            if loc.bucket == bucket {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn write_bucket_entry(&self, name: &BucketName, f: impl FnOnce(&mut BucketEntry) -> Result<()>) -> Result<()> {
        self.ensure_writable()?;
        // Exclusive: no write may run under the old configuration after this returns.
        let _w = self.bucket_lock.write();
        let bytes = self.index.get(CF_BUCKETS, name.as_str().as_bytes())?.ok_or(Error::NoSuchBucket)?;
        let mut entry = BucketEntry::decode(&bytes)?;
        f(&mut entry)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_BUCKETS)?, name.as_str().as_bytes(), entry.encode()?);
        self.commit(Vec::new(), batch)
    }

    /// `PutBucketVersioning`. A bucket with Object Lock cannot be suspended
    /// ([`Error::InvalidBucketState`]); no bucket returns to unversioned.
    pub fn set_versioning(&self, name: &BucketName, state: Versioning) -> Result<()> {
        self.write_bucket_entry(name, |e| {
            // Under the bucket lock: `put_tier_policy` holds it shared.
            let tiered = crate::index::tier_policy_bucket_prefix(name.as_str());
            let tiered = self.index.range(CF_META, &tiered, prefix_end(&tiered))?.next().is_some()
                || self.bucket_has_evicted_bytes(name.as_str())?;
            match state {
                Versioning::Unversioned => {
                    return Err(Error::InvalidArgument("versioning can be Enabled or Suspended".into()))
                }
                // The target holds one copy per key: an older version's evicted bytes would be overwritten there.
                _ if tiered => {
                    return Err(Error::InvalidBucketState(format!(
                        "bucket {name} has a tiering policy, so versioning cannot be enabled; remove it first \
                         (walstore tier remove {name}) and wait until `walstore tier status` shows no remote bytes"
                    )))
                }
                Versioning::Suspended if e.config.object_lock.is_some() => {
                    return Err(Error::InvalidBucketState(
                        "An Object Lock configuration is present on this bucket, so the versioning state cannot be \
                         changed."
                            .into(),
                    ))
                }
                _ => {}
            }
            e.config.versioning = state;
            Ok(())
        })
    }

    /// `PutObjectLockConfiguration`: enables Object Lock (on a bucket whose versioning
    /// is enabled, as S3 requires) and sets the default retention. Object Lock cannot
    /// be disabled again.
    pub fn set_object_lock(&self, name: &BucketName, config: ObjectLockConfig) -> Result<()> {
        self.write_bucket_entry(name, |e| {
            if e.config.versioning != Versioning::Enabled {
                return Err(Error::InvalidBucketState(
                    "Versioning must be 'Enabled' on the bucket to apply a Object Lock configuration".into(),
                ));
            }
            e.config.object_lock = Some(config);
            Ok(())
        })
    }

    /// Creates a bucket with Object Lock (and so versioning) enabled.
    pub fn create_locked_bucket(&self, name: &BucketName) -> Result<BucketInfo> {
        self.create_bucket_with(
            name,
            crate::index::BucketConfig {
                versioning: Versioning::Enabled,
                object_lock: Some(ObjectLockConfig::default()),
            },
        )
    }

    /// Metadata of one version of an object. A delete marker answers
    /// [`Error::DeleteMarker`] (S3: 405 for a version id, 404 for the latest).
    pub fn head_version(&self, bucket: &BucketName, key: &ObjectKey, id: VersionId) -> Result<ObjectInfo> {
        let b = self.bucket(bucket)?;
        let kv = self.key_versions(&b, key.as_str())?;
        let (e, latest) = kv.object(id)?;
        let mut info = info_of(bucket, key, e.clone());
        info.is_latest = latest;
        Ok(info)
    }

    /// `PutObjectRetention`: sets (or, `None`, removes) the retention of a version
    /// (`None`: the current one). COMPLIANCE can only be extended; GOVERNANCE can be
    /// shortened, removed or changed only with `bypass`.
    pub fn set_retention(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        id: Option<VersionId>,
        retention: Option<Retention>,
        bypass: bool,
    ) -> Result<()> {
        self.change_lock(bucket, key, id, |e, now| {
            let old = e.version.retention.filter(|r| r.until > now);
            let weaker = match (old, retention) {
                (None, _) => false,
                (Some(_), None) => true,
                (Some(o), Some(n)) => n.until < o.until || (o.mode == LockMode::Compliance && n.mode != o.mode),
            };
            if weaker {
                match old.map(|o| o.mode) {
                    Some(LockMode::Compliance) => {
                        return Err(Error::AccessDenied(
                            "a COMPLIANCE retention cannot be shortened, removed or changed to GOVERNANCE".into(),
                        ))
                    }
                    _ if !bypass => {
                        return Err(Error::AccessDenied(
                            "shortening or removing a GOVERNANCE retention needs \
                             x-amz-bypass-governance-retention and an administrator key"
                                .into(),
                        ))
                    }
                    _ => {}
                }
            }
            if let Some(n) = retention {
                if n.until <= now {
                    return Err(Error::InvalidArgument("The retain until date must be in the future!".into()));
                }
            }
            e.version.retention = retention;
            Ok(())
        })
    }

    /// `PutObjectLegalHold`.
    pub fn set_legal_hold(&self, bucket: &BucketName, key: &ObjectKey, id: Option<VersionId>, on: bool) -> Result<()> {
        self.change_lock(bucket, key, id, |e, _| {
            e.version.legal_hold = on;
            Ok(())
        })
    }

    fn change_lock(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        id: Option<VersionId>,
        f: impl FnOnce(&mut ObjectEntry, Timestamp) -> Result<()>,
    ) -> Result<()> {
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        let b = self.bucket(bucket)?;
        if b.object_lock.is_none() {
            return Err(Error::InvalidRequest("Bucket is missing Object Lock Configuration".into()));
        }
        let _k = self.key_locks.lock_all(&[object_lock(bucket, key)]);
        let now = self.now();
        let mut kv = self.key_versions(&b, key.as_str())?;
        f(kv.object_mut(id)?, now)?;
        let mut batch = WriteBatch::default();
        kv.flush(self, &mut batch, now)?;
        self.commit(Vec::new(), batch)
    }

    /// ListObjectVersions: keys in order, each key's versions newest first.
    pub fn list_versions(&self, bucket: &BucketName, q: &VersionQuery) -> Result<VersionPage> {
        let b = self.bucket(bucket)?;
        let bprefix = bucket_prefix(bucket);
        let mut start = bprefix.clone();
        start.extend_from_slice(q.prefix.as_bytes());
        let scope_end = prefix_end(&start);
        let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
        let mut page = VersionPage::default();
        // The lower bound of the next key name, as an index key.
        let mut lower = start.clone();
        let mut skip_in_first: Option<(String, Option<VersionId>)> = None;
        if let Some(marker) = q.key_marker.as_deref().filter(|m| !m.is_empty()) {
            match q.version_marker {
                // Continue inside the marker's key, after that version.
                Some(v) => {
                    let mut m = bprefix.clone();
                    m.extend_from_slice(marker.as_bytes());
                    if m > lower {
                        lower = m;
                    }
                    skip_in_first = Some((marker.to_owned(), Some(v)));
                }
                None => {
                    if !crate::store::resume_after(&mut lower, &bprefix, marker, &q.prefix, delimiter, 1) {
                        return Ok(page);
                    }
                }
            }
        }
        let mut count = 0usize;
        while let Some(name) = self.next_key_name(&lower, scope_end.as_deref(), b.versioning)? {
            let key = &name[bprefix.len()..];
            let key = std::str::from_utf8(key).map_err(|_| Error::Decode("object key is not UTF-8".into()))?;
            if let Some(d) = delimiter {
                if let Some(i) = key[q.prefix.len()..].find(d) {
                    let cp = key[..q.prefix.len() + i + d.len()].to_owned();
                    if count >= q.max_keys {
                        page.truncated = true;
                        return Ok(page);
                    }
                    let mut next = bprefix.clone();
                    next.extend_from_slice(cp.as_bytes());
                    page.prefixes.push(cp.clone());
                    count += 1;
                    page.next_prefix = Some(cp);
                    page.next = None;
                    match prefix_end(&next) {
                        Some(n) => lower = n,
                        None => break,
                    }
                    continue;
                }
            }
            let kv = self.key_versions(&b, key)?;
            let mut entries: Vec<VersionSummary> = Vec::with_capacity(kv.len());
            if let Some(c) = &kv.current {
                entries.push(summary(key, &VersionRecord::Object(c.clone()), true));
            }
            for (i, (r, _)) in kv.others.iter().enumerate() {
                entries.push(summary(key, r, i == 0 && kv.current.is_none()));
            }
            if let Some((mk, Some(mv))) = &skip_in_first {
                if mk == key {
                    if let Some(pos) = entries.iter().position(|e| e.version_id == *mv) {
                        entries.drain(..=pos);
                    }
                }
            }
            skip_in_first = None;
            for e in entries {
                if count >= q.max_keys {
                    page.truncated = true;
                    return Ok(page);
                }
                page.next = Some((e.key.clone(), e.version_id));
                page.next_prefix = None;
                page.versions.push(e);
                count += 1;
            }
            let mut n = name.clone();
            n.push(1);
            lower = n;
        }
        page.next = None;
        page.next_prefix = None;
        Ok(page)
    }

    /// The smallest `objects` or `versions` key name at or after `lower` (an index key
    /// `<bucket> 0x00 <name…>`), below `upper`; returned as `<bucket> 0x00 <name>`.
    pub(crate) fn next_key_name(
        &self,
        lower: &[u8],
        upper: Option<&[u8]>,
        versioning: Versioning,
    ) -> Result<Option<Vec<u8>>> {
        let mut best: Option<Vec<u8>> = None;
        let mut it = self.index.raw_iter(CF_OBJECTS, upper.map(<[u8]>::to_vec))?;
        it.seek(lower);
        if let Some(k) = it.key() {
            best = Some(k.to_vec());
        }
        it.status()?;
        if versioning != Versioning::Unversioned {
            let mut vit = self.index.raw_iter(CF_VERSIONS, upper.map(<[u8]>::to_vec))?;
            vit.seek(lower);
            if let Some(k) = vit.key() {
                // Strip `0x00 <8 bytes>`.
                if k.len() >= 9 {
                    let name = k[..k.len() - 9].to_vec();
                    if best.as_ref().is_none_or(|b| name < *b) {
                        best = Some(name);
                    }
                }
            }
            vit.status()?;
        }
        Ok(best)
    }
}

fn summary(key: &str, r: &VersionRecord, is_latest: bool) -> VersionSummary {
    VersionSummary {
        key: key.to_owned(),
        version_id: r.id(),
        is_latest,
        last_modified: r.last_modified(),
        object: match r {
            VersionRecord::Object(e) => Some((
                e.size,
                e.etag.clone(),
                e.meta.headers.iter().find(|(k, _)| k == "x-amz-storage-class").map(|(_, v)| v.clone()),
            )),
            VersionRecord::Marker(_) => None,
        },
    }
}
