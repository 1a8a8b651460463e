//! Object writes and deletes: PutObject, CopyObject, DeleteObject(s). Each
//! takes its locks, asks the WAL guard before it commits (split-brain check,
//! delete protection) and tells it after (the repository changed), around the
//! one durable-write routine [`Store::commit`].

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use wal::names::split_repo;

use crate::error::{Error, Result};
use crate::index::ObjectEntry;
use crate::store::{info_of, object_lock, Store};
use crate::types::{
    BlobRef, BucketName, Checksum, ETag, LockRequest, ObjectInfo, ObjectKey, ObjectMeta, Timestamp, VersionId,
};
use crate::versions::{lock_terms, KeyVersions, Removed};
use crate::wal::guard::DeleteAuth;
use crate::wal::identity::NewBytes;
use crate::wal::quarantine::{Quarantined, Verdict};
use crate::writer::StagedBlob;

/// Stale delete decisions (a write landed in the repository while the guard
/// decided) taken again before the next decision is taken under the gates.
const OPTIMISTIC_ATTEMPTS: usize = 3;

/// A write precondition (`If-None-Match: *`, `If-Match: "etag"`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum WriteCondition {
    /// Unconditional.
    #[default]
    None,
    /// Only if the key does not exist (`If-None-Match: *`).
    IfAbsent,
    /// Only if the current object has this ETag (`If-Match`).
    IfMatch(ETag),
}

impl WriteCondition {
    pub(crate) fn check(&self, current: Option<&ObjectEntry>) -> Result<()> {
        match (self, current) {
            (WriteCondition::None, _) => Ok(()),
            (WriteCondition::IfAbsent, None) => Ok(()),
            (WriteCondition::IfAbsent, Some(_)) => {
                Err(Error::PreconditionFailed("the object already exists (If-None-Match: *)".into()))
            }
            (WriteCondition::IfMatch(_), None) => Err(Error::NoSuchKey),
            (WriteCondition::IfMatch(e), Some(cur)) if e.as_str() == "*" || *e == cur.etag => Ok(()),
            (WriteCondition::IfMatch(_), Some(_)) => {
                Err(Error::PreconditionFailed("the object's ETag differs (If-Match)".into()))
            }
        }
    }
}

/// Preconditions of a conditional delete: S3's `If-Match`,
/// `x-amz-if-match-last-modified-time` and `x-amz-if-match-size` on DeleteObject, and the
/// `<ETag>`, `<LastModifiedTime>` and `<Size>` of an object in DeleteObjects. All given
/// must hold; none given is an unconditional delete.
///
/// A missing object fails an ETag condition ([`Error::NoSuchKey`], as S3 answers 404) but
/// not a time or size condition alone (S3 answers 204: there is nothing left to protect).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeleteCondition {
    /// The current object's ETag (`*`: any object, it must exist).
    pub etag: Option<ETag>,
    /// The current object's Last-Modified. Compared to the second when this has no
    /// milliseconds (HTTP dates, which `Last-Modified` headers carry, have none), else to
    /// the millisecond (what listings show).
    pub last_modified: Option<Timestamp>,
    /// The current object's size in bytes.
    pub size: Option<u64>,
}

impl DeleteCondition {
    pub(crate) fn check(&self, current: Option<&ObjectEntry>) -> Result<()> {
        let Some(cur) = current else {
            return if self.etag.is_some() { Err(Error::NoSuchKey) } else { Ok(()) };
        };
        if let Some(e) = &self.etag {
            if e.as_str() != "*" && *e != cur.etag {
                return Err(Error::PreconditionFailed("the object's ETag differs (If-Match)".into()));
            }
        }
        if let Some(t) = self.last_modified {
            let whole_seconds = t.as_millis().rem_euclid(1000) == 0;
            let current = cur.last_modified.as_millis();
            let current = if whole_seconds { current - current.rem_euclid(1000) } else { current };
            if current != t.as_millis() {
                return Err(Error::PreconditionFailed(
                    "the object's last-modified time differs (x-amz-if-match-last-modified-time)".into(),
                ));
            }
        }
        if let Some(size) = self.size {
            if size != cur.size {
                return Err(Error::PreconditionFailed("the object's size differs (x-amz-if-match-size)".into()));
            }
        }
        Ok(())
    }
}

/// A PutObject request after the body has been received.
pub struct PutRequest<'a> {
    /// Target bucket.
    pub bucket: &'a BucketName,
    /// Target key.
    pub key: &'a ObjectKey,
    /// The received body.
    pub blob: StagedBlob,
    /// Metadata to store.
    pub meta: ObjectMeta,
    /// Checksum to store (already verified by the caller).
    pub checksum: Option<Checksum>,
    /// Precondition.
    pub condition: WriteCondition,
    /// Access key of the writer (recorded if the upload is quarantined).
    pub actor: &'a str,
    /// Object Lock asked for (`x-amz-object-lock-*`); refused on a bucket without it.
    pub lock: LockRequest,
}

/// One key (or one version of it) of a DeleteObject(s) request.
#[derive(Debug, Clone)]
pub struct DeleteTarget {
    /// Key.
    pub key: ObjectKey,
    /// A version to delete for good; `None`: the current object (on a versioned
    /// bucket, a delete marker is added instead).
    pub version: Option<VersionId>,
    /// Preconditions, checked against the version deleted (the current one without
    /// a version id).
    pub condition: DeleteCondition,
}

/// What deleting one [`DeleteTarget`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deleted {
    /// Something was removed (or hidden by a new delete marker).
    pub existed: bool,
    /// The version deleted, or the delete marker created.
    pub version_id: Option<VersionId>,
    /// The version deleted or created is a delete marker.
    pub delete_marker: bool,
}

impl Store {
    /// Stores an object, replacing any previous one under the key.
    pub fn put_object(&self, req: PutRequest<'_>) -> Result<ObjectInfo> {
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        let binfo = self.bucket(req.bucket)?;
        let now = self.now();
        let terms = lock_terms(&binfo, &req.lock, now, true)?;
        let mut locks = vec![object_lock(req.bucket, req.key)];
        locks.extend(Store::identity_lock(req.bucket, req.key));
        let _k = self.key_locks.lock_all(&locks);
        let mut kv = self.key_versions(&binfo, req.key.as_str())?;
        req.condition.check(kv.current.as_ref())?;
        let new = NewBytes::Staged(&req.blob);
        let (verdict, learned) = self.wal_conflict(req.bucket, req.key, new)?;
        let split_brain = matches!(verdict, Verdict::Conflict(_));
        match verdict {
            Verdict::Proceed => {}
            Verdict::Identical(existing) => {
                // An archive retry (or another codec of the same content): the
                // first upload stays as it is; the staged copy is dropped.
                let key = ObjectKey::parse(&existing)?;
                let e = self.entry(req.bucket, &existing)?.ok_or(Error::NoSuchKey)?;
                return Ok(info_of(req.bucket, &key, e));
            }
            Verdict::Conflict(reason) | Verdict::Foreign(reason) => {
                let blobs = if req.blob.size > 0 {
                    vec![BlobRef { hash: req.blob.hash, size: req.blob.size }]
                } else {
                    Vec::new()
                };
                if self.quarantined_already(req.bucket, req.key, &blobs)? {
                    if split_brain {
                        self.wal_guard().stats.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::warn!(bucket = %req.bucket, key = %req.key, principal = req.actor, "{reason} (again)");
                    return Err(Error::PreconditionFailed(reason));
                }
                let q = Quarantined {
                    time: now,
                    bucket: req.bucket.as_str().to_owned(),
                    key: req.key.as_str().to_owned(),
                    principal: req.actor.to_owned(),
                    reason: reason.clone(),
                    size: req.blob.size,
                    blobs,
                    resolved: false,
                };
                let mut batch = WriteBatch::default();
                self.quarantine_into(&mut batch, &q, split_brain)?;
                self.repo_write(req.bucket, req.key.as_str(), || self.commit(vec![req.blob], batch))?;
                tracing::warn!(bucket = %req.bucket, key = %req.key, principal = req.actor, "{reason}");
                return Err(Error::PreconditionFailed(reason));
            }
            Verdict::Refuse(reason) => {
                tracing::warn!(bucket = %req.bucket, key = %req.key, principal = req.actor, "{reason}");
                return Err(Error::PreconditionFailed(reason));
            }
        }
        let blobs =
            if req.blob.size > 0 { vec![BlobRef { hash: req.blob.hash, size: req.blob.size }] } else { Vec::new() };
        let entry = ObjectEntry {
            size: req.blob.size,
            etag: ETag::from_md5(&req.blob.md5),
            last_modified: now,
            meta: req.meta,
            checksum: req.checksum,
            parts_count: None,
            blobs,
            version: Default::default(),
        };
        kv.place(entry, terms, now)?;
        let entry = kv.current.clone().ok_or(Error::NoSuchKey)?;
        let mut batch = WriteBatch::default();
        kv.flush(self, &mut batch, now)?;
        if let Some(l) = &learned {
            l.write_into(self, &mut batch, req.actor)?;
        }
        self.repo_write(req.bucket, req.key.as_str(), || self.commit(vec![req.blob], batch))?;
        if let Some(l) = learned {
            l.committed(self);
        }
        Ok(info_of(req.bucket, req.key, entry))
    }

    /// Deletes an object; returns whether it existed. Deleting a missing key is
    /// not an error (S3 semantics). Refused with [`Error::AccessDenied`] when the
    /// bucket's delete protection keeps the object.
    pub fn delete_object(&self, bucket: &BucketName, key: &ObjectKey, who: DeleteAuth<'_>) -> Result<bool> {
        self.delete_object_if(bucket, key, &DeleteCondition::default(), who)
    }

    /// [`Store::delete_object`] if `condition` holds, else [`Error::PreconditionFailed`]
    /// (or [`Error::NoSuchKey`]: an ETag condition on a missing object).
    pub fn delete_object_if(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        condition: &DeleteCondition,
        who: DeleteAuth<'_>,
    ) -> Result<bool> {
        let conditions = std::slice::from_ref(condition);
        self.delete_objects(bucket, std::slice::from_ref(key), conditions, who)?.pop().unwrap_or(Ok(false))
    }

    /// Deletes several keys of one bucket in one durable batch; returns, per
    /// key, whether it existed, or why its deletion was refused. See
    /// [`Store::delete_versions`], which this is without version ids.
    pub fn delete_objects(
        &self,
        bucket: &BucketName,
        keys: &[ObjectKey],
        conditions: &[DeleteCondition],
        who: DeleteAuth<'_>,
    ) -> Result<Vec<Result<bool>>> {
        if !conditions.is_empty() && conditions.len() != keys.len() {
            return Err(Error::InvalidRequest(format!(
                "{} delete conditions for {} keys",
                conditions.len(),
                keys.len()
            )));
        }
        let targets: Vec<DeleteTarget> = keys
            .iter()
            .enumerate()
            .map(|(i, k)| DeleteTarget {
                key: k.clone(),
                version: None,
                condition: conditions.get(i).cloned().unwrap_or_default(),
            })
            .collect();
        let out = self.delete_versions(bucket, &targets, who, false)?;
        Ok(out.into_iter().map(|r| r.map(|d| d.existed)).collect())
    }

    /// Deletes several keys or versions of one bucket in one durable batch; returns,
    /// per target, what was done, or why it was refused:
    /// [`Error::AccessDenied`] (delete protection, see [`crate::wal::guard`]; or an
    /// Object Lock on the version, which `bypass_governance` lifts for GOVERNANCE
    /// retention only), [`Error::PreconditionFailed`] or [`Error::NoSuchKey`] (its
    /// [`DeleteCondition`], checked under the key's lock, so no write slips between
    /// the check and the delete).
    ///
    /// A target named twice (same key and version) is decided by its first
    /// occurrence; later ones answer "did not exist" when it was deleted, or the same
    /// refusal. Several versions of one key are applied in order to the key's
    /// versions in memory and written once (WAL-G deletes every version of a key in
    /// one request).
    ///
    /// Delete protection decides per key, whichever version is named: on a versioned
    /// bucket a required WAL file keeps all its versions. Leaving out keys whose
    /// condition fails never changes what the guard decided for the others: its
    /// decisions are per key (and per backup, which only adds refusals), taken on the
    /// repository as it is.
    ///
    /// The guard's decision is taken on a snapshot of each repository and
    /// committed only if no write landed in those repositories since: the
    /// check and the commit happen under the repositories' gates, held
    /// exclusively (see [`crate::wal::state::RepoState`]). A decision that went
    /// stale is taken again; after [`OPTIMISTIC_ATTEMPTS`] stale ones, it is
    /// taken under the gates, which holds writes into those repositories back
    /// for the time of one evaluation.
    pub fn delete_versions(
        &self,
        bucket: &BucketName,
        targets: &[DeleteTarget],
        who: DeleteAuth<'_>,
        bypass_governance: bool,
    ) -> Result<Vec<Result<Deleted>>> {
        self.bucket(bucket)?;
        let keys: Vec<ObjectKey> = targets.iter().map(|t| t.key.clone()).collect();
        let repos = self.repo_states_of(bucket, keys.iter().map(ObjectKey::as_str));
        let ids: Vec<u64> = keys.iter().map(|k| object_lock(bucket, k)).collect();
        let mut attempt = 0;
        loop {
            // Evaluations (possibly slow) happen before any lock is taken.
            let early = if attempt < OPTIMISTIC_ATTEMPTS { Some(self.plan_deletes(bucket, &keys, who)?) } else { None };
            let _b = self.bucket_lock.read();
            let binfo = self.bucket(bucket)?;
            let _k = self.key_locks.lock_all(&ids);
            let gates = self.repo_gates(&repos);
            let plan = match early {
                Some(plan) if plan.still_valid(&self.guard) => plan,
                Some(_) => {
                    attempt += 1;
                    continue;
                }
                None => self.plan_deletes(bucket, &keys, who)?,
            };
            let now = self.now();
            let mut batch = WriteBatch::default();
            let mut outcomes: Vec<Result<Deleted>> = Vec::with_capacity(targets.len());
            let mut first = std::collections::HashMap::new();
            let mut kvs: std::collections::HashMap<&str, KeyVersions> = std::collections::HashMap::new();
            for (i, (t, refusal)) in targets.iter().zip(&plan.refusals).enumerate() {
                if let Some(&f) = first.get(&(t.key.as_str(), t.version)) {
                    outcomes.push(repeat_outcome(&outcomes[f], t.version));
                    continue;
                }
                first.insert((t.key.as_str(), t.version), i);
                if let Some(reason) = refusal {
                    outcomes.push(Err(Error::AccessDenied(reason.clone())));
                    continue;
                }
                let kv = match kvs.entry(t.key.as_str()) {
                    std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::hash_map::Entry::Vacant(v) => {
                        v.insert(self.key_versions(&binfo, t.key.as_str())?)
                    }
                };
                let outcome = match t.version {
                    None => t.condition.check(kv.current.as_ref()).and_then(|()| {
                        let existed = kv.exists();
                        let marker = kv.remove_current(now)?;
                        Ok(Deleted { existed, version_id: marker, delete_marker: marker.is_some() })
                    }),
                    Some(v) => {
                        let target = match kv.object(v) {
                            Ok((e, _)) => Some(e),
                            Err(_) => None,
                        };
                        let checked = if target.is_some() || t.condition.etag.is_some() {
                            t.condition.check(target)
                        } else {
                            Ok(())
                        };
                        checked.and_then(|()| {
                            Ok(match kv.delete_version(v, now, bypass_governance)? {
                                Removed::Nothing => {
                                    Deleted { existed: false, version_id: Some(v), delete_marker: false }
                                }
                                Removed::Object(_) => {
                                    Deleted { existed: true, version_id: Some(v), delete_marker: false }
                                }
                                Removed::Marker => Deleted { existed: true, version_id: Some(v), delete_marker: true },
                            })
                        })
                    }
                };
                if let (Ok(d), DeleteAuth::Override { principal, reason }) = (&outcome, who) {
                    if d.existed && split_repo(t.key.as_str()).is_some() {
                        self.guard.stats.overrides.fetch_add(1, Ordering::Relaxed);
                        self.audit_into(
                            &mut batch,
                            principal,
                            "override-delete",
                            bucket.as_str(),
                            t.key.as_str(),
                            reason,
                        )?;
                    }
                }
                outcomes.push(outcome);
            }
            for (_, kv) in kvs {
                kv.flush(self, &mut batch, now)?;
            }
            let r = self.commit(Vec::new(), batch);
            gates.bump_all();
            if !gates.is_empty() {
                self.jobs.request(crate::jobs::EVALUATE);
            }
            r?;
            drop(gates);
            if let DeleteAuth::Client { principal } = who {
                for (t, e) in targets.iter().zip(&outcomes) {
                    if let Err(Error::AccessDenied(reason)) = e {
                        self.note_refused(bucket, t.key.as_str(), principal, reason);
                    }
                }
            }
            return Ok(outcomes);
        }
    }

    /// Copies an object without copying bytes: the new entry references the same
    /// blobs (bytes evicted to a target are read back and stored locally). `meta` replaces the metadata (`REPLACE` directive) when given.
    pub fn copy_object(
        &self,
        src: (&BucketName, &ObjectKey, Option<VersionId>),
        dst_bucket: &BucketName,
        dst_key: &ObjectKey,
        meta: Option<ObjectMeta>,
        condition: WriteCondition,
        lock: LockRequest,
    ) -> Result<ObjectInfo> {
        let (src_bucket, src_key, src_version) = src;
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        let sinfo = self.bucket(src_bucket)?;
        let dinfo = self.bucket(dst_bucket)?;
        let now = self.now();
        let terms = lock_terms(&dinfo, &lock, now, true)?;
        // Holding the source's key lock keeps its blobs referenced until our batch
        // adds references of its own.
        let _k = self.key_locks.lock_all(&[object_lock(src_bucket, src_key), object_lock(dst_bucket, dst_key)]);
        let src = match src_version {
            None => self.entry(src_bucket, src_key.as_str())?.ok_or(Error::NoSuchKey)?,
            Some(v) => self.key_versions(&sinfo, src_key.as_str())?.object(v)?.0.clone(),
        };
        let mut kv = self.key_versions(&dinfo, dst_key.as_str())?;
        condition.check(kv.current.as_ref())?;
        let entry = ObjectEntry { last_modified: now, meta: meta.unwrap_or_else(|| src.meta.clone()), ..src };
        let mut batch = WriteBatch::default();
        // An evicted blob belongs to exactly one object (see `crate::tier`): a copy
        // brings its bytes back instead of sharing the reference.
        let (mut staged, mut shared) = (Vec::new(), Vec::new());
        for b in &entry.blobs {
            match self.tier_loc(&b.hash)? {
                Some(loc) => staged.push(self.stage_tiered(&b.hash, &loc)?),
                None => shared.push(*b),
            }
        }
        self.add_refs(&mut batch, &shared)?;
        kv.place(entry, terms, now)?;
        let entry = kv.current.clone().ok_or(Error::NoSuchKey)?;
        kv.flush(self, &mut batch, now)?;
        self.repo_write(dst_bucket, dst_key.as_str(), || self.commit(staged, batch))?;
        Ok(info_of(dst_bucket, dst_key, entry))
    }
}

/// What a repeated key of one DeleteObjects request answers, given its first occurrence's
/// outcome: deleted by it ("did not exist" now), or refused the same way.
fn repeat_outcome(first: &Result<Deleted>, version: Option<VersionId>) -> Result<Deleted> {
    match first {
        Ok(d) => Ok(Deleted { existed: false, version_id: version.or(d.version_id), delete_marker: d.delete_marker }),
        Err(Error::AccessDenied(r)) => Err(Error::AccessDenied(r.clone())),
        Err(Error::PreconditionFailed(r)) => Err(Error::PreconditionFailed(r.clone())),
        Err(Error::NoSuchKey) => Err(Error::NoSuchKey),
        Err(other) => Err(Error::PreconditionFailed(format!("an earlier occurrence of this key failed: {other}"))),
    }
}
