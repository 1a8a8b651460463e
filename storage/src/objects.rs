//! Object writes and deletes: PutObject, CopyObject, DeleteObject(s). Each
//! takes its locks, asks the WAL guard before it commits (split-brain check,
//! delete protection) and tells it after (the repository changed), around the
//! one durable-write routine [`Store::commit`].

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use wal::names::split_repo;

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{object_key, ObjectEntry, CF_OBJECTS};
use crate::store::{info_of, object_lock, Store};
use crate::types::{BlobRef, BucketName, Checksum, ETag, ObjectInfo, ObjectKey, ObjectMeta, Timestamp};
use crate::wal::guard::DeleteAuth;
use crate::wal::quarantine::{NewBytes, Quarantined, Verdict};
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
}

impl Store {
    /// Stores an object, replacing any previous one under the key.
    pub fn put_object(&self, req: PutRequest<'_>) -> Result<ObjectInfo> {
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        self.bucket(req.bucket)?;
        let mut locks = vec![object_lock(req.bucket, req.key)];
        locks.extend(Store::identity_lock(req.bucket, req.key));
        let _k = self.key_locks.lock_all(&locks);
        let old = self.entry(req.bucket, req.key.as_str())?;
        req.condition.check(old.as_ref())?;
        let now = self.now();
        let new = NewBytes::Staged(&req.blob);
        match self.wal_conflict(req.bucket, req.key, new)? {
            Verdict::Proceed => {}
            Verdict::Identical(existing) => {
                // An archive retry (or another codec of the same content): the
                // first upload stays as it is; the staged copy is dropped.
                let key = ObjectKey::parse(&existing)?;
                let e = self.entry(req.bucket, &existing)?.ok_or(Error::NoSuchKey)?;
                return Ok(info_of(req.bucket, &key, e));
            }
            Verdict::Conflict(reason) => {
                let blobs = if req.blob.size > 0 {
                    vec![BlobRef { hash: req.blob.hash, size: req.blob.size }]
                } else {
                    Vec::new()
                };
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
                self.quarantine_into(&mut batch, &q)?;
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
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_OBJECTS)?, object_key(req.bucket, req.key.as_str()), codec::encode(&entry)?);
        if let Some(old) = &old {
            self.unref(&mut batch, &old.blobs, now)?;
        }
        self.repo_write(req.bucket, req.key.as_str(), || self.commit(vec![req.blob], batch))?;
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
    /// key, whether it existed, or why its deletion was refused:
    /// [`Error::AccessDenied`] (delete protection; see [`crate::wal::guard`]),
    /// [`Error::PreconditionFailed`] or [`Error::NoSuchKey`] (its
    /// [`DeleteCondition`], checked under the key's lock, so no write slips
    /// between the check and the delete).
    ///
    /// `conditions` is empty (none) or one per key. A key named twice is decided
    /// by its first occurrence; later ones answer "did not exist" when it was
    /// deleted, or the same refusal.
    ///
    /// Leaving out keys whose condition fails never changes what the guard
    /// decided for the others: its decisions are per key (and per backup, which
    /// only adds refusals), taken on the repository as it is.
    ///
    /// The guard's decision is taken on a snapshot of each repository and
    /// committed only if no write landed in those repositories since: the
    /// check and the commit happen under the repositories' gates, held
    /// exclusively (see [`crate::wal::state::RepoState`]). A decision that went
    /// stale is taken again; after [`OPTIMISTIC_ATTEMPTS`] stale ones, it is
    /// taken under the gates, which holds writes into those repositories back
    /// for the time of one evaluation.
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
        self.bucket(bucket)?;
        let repos = self.repo_states_of(bucket, keys.iter().map(ObjectKey::as_str));
        let ids: Vec<u64> = keys.iter().map(|k| object_lock(bucket, k)).collect();
        let mut attempt = 0;
        loop {
            // Evaluations (possibly slow) happen before any lock is taken.
            let early = if attempt < OPTIMISTIC_ATTEMPTS { Some(self.plan_deletes(bucket, keys, who)?) } else { None };
            let _b = self.bucket_lock.read();
            self.bucket(bucket)?;
            let _k = self.key_locks.lock_all(&ids);
            let gates = self.repo_gates(&repos);
            let plan = match early {
                Some(plan) if plan.still_valid(&self.guard) => plan,
                Some(_) => {
                    attempt += 1;
                    continue;
                }
                None => self.plan_deletes(bucket, keys, who)?,
            };
            let now = self.now();
            let mut batch = WriteBatch::default();
            let mut existed: Vec<Result<bool>> = Vec::with_capacity(keys.len());
            let mut first = std::collections::HashMap::new();
            for (i, (key, refusal)) in keys.iter().zip(&plan.refusals).enumerate() {
                if let Some(&f) = first.get(key.as_str()) {
                    existed.push(repeat_outcome(&existed[f]));
                    continue;
                }
                first.insert(key.as_str(), i);
                if let Some(reason) = refusal {
                    existed.push(Err(Error::AccessDenied(reason.clone())));
                    continue;
                }
                let current = self.entry(bucket, key.as_str())?;
                if let Some(condition) = conditions.get(i) {
                    if let Err(e) = condition.check(current.as_ref()) {
                        existed.push(Err(e));
                        continue;
                    }
                }
                match current {
                    Some(old) => {
                        batch.delete_cf(self.index.cf(CF_OBJECTS)?, object_key(bucket, key.as_str()));
                        self.unref(&mut batch, &old.blobs, now)?;
                        if let DeleteAuth::Override { principal, reason } = who {
                            if split_repo(key.as_str()).is_some() {
                                self.guard.stats.overrides.fetch_add(1, Ordering::Relaxed);
                                self.audit_into(
                                    &mut batch,
                                    principal,
                                    "override-delete",
                                    bucket.as_str(),
                                    key.as_str(),
                                    reason,
                                )?;
                            }
                        }
                        existed.push(Ok(true));
                    }
                    None => existed.push(Ok(false)),
                }
            }
            let r = self.commit(Vec::new(), batch);
            gates.bump_all();
            if !gates.is_empty() {
                self.jobs.request(crate::jobs::EVALUATE);
            }
            r?;
            drop(gates);
            if let DeleteAuth::Client { principal } = who {
                for (key, e) in keys.iter().zip(&existed) {
                    if let Err(Error::AccessDenied(reason)) = e {
                        self.note_refused(bucket, key.as_str(), principal, reason);
                    }
                }
            }
            return Ok(existed);
        }
    }

    /// Copies an object without copying bytes: the new entry references the same
    /// blobs. `meta` replaces the metadata (`REPLACE` directive) when given.
    pub fn copy_object(
        &self,
        src_bucket: &BucketName,
        src_key: &ObjectKey,
        dst_bucket: &BucketName,
        dst_key: &ObjectKey,
        meta: Option<ObjectMeta>,
        condition: WriteCondition,
    ) -> Result<ObjectInfo> {
        self.ensure_writable()?;
        let _b = self.bucket_lock.read();
        self.bucket(src_bucket)?;
        self.bucket(dst_bucket)?;
        // Holding the source's key lock keeps its blobs referenced until our batch
        // adds references of its own.
        let _k = self.key_locks.lock_all(&[object_lock(src_bucket, src_key), object_lock(dst_bucket, dst_key)]);
        let src = self.entry(src_bucket, src_key.as_str())?.ok_or(Error::NoSuchKey)?;
        let old = self.entry(dst_bucket, dst_key.as_str())?;
        condition.check(old.as_ref())?;
        let now = self.now();
        let entry = ObjectEntry { last_modified: now, meta: meta.unwrap_or_else(|| src.meta.clone()), ..src };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_OBJECTS)?, object_key(dst_bucket, dst_key.as_str()), codec::encode(&entry)?);
        self.add_refs(&mut batch, &entry.blobs)?;
        if let Some(old) = &old {
            self.unref(&mut batch, &old.blobs, now)?;
        }
        self.repo_write(dst_bucket, dst_key.as_str(), || self.commit(Vec::new(), batch))?;
        Ok(info_of(dst_bucket, dst_key, entry))
    }
}

/// What a repeated key of one DeleteObjects request answers, given its first occurrence's
/// outcome: deleted by it ("did not exist" now), or refused the same way.
fn repeat_outcome(first: &Result<bool>) -> Result<bool> {
    match first {
        Ok(_) => Ok(false),
        Err(Error::AccessDenied(r)) => Err(Error::AccessDenied(r.clone())),
        Err(Error::PreconditionFailed(r)) => Err(Error::PreconditionFailed(r.clone())),
        Err(Error::NoSuchKey) => Err(Error::NoSuchKey),
        Err(other) => Err(Error::PreconditionFailed(format!("an earlier occurrence of this key failed: {other}"))),
    }
}
