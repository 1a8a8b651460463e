//! Multipart uploads. Each part is a blob with its own reference; completing an
//! upload writes the object entry as the ordered list of part blobs (no byte is
//! copied) and moves the parts' references to the object in one batch.

use rocksdb::WriteBatch;

use crate::checksum;
use crate::codec;
use crate::error::{Error, Result};
use crate::index::{
    object_key, part_key, prefix_end, upload_key, CompletedEntry, ObjectEntry, PartEntry, UploadEntry, CF_COMPLETED,
    CF_PARTS, CF_UPLOADS,
};
use crate::objects::WriteCondition;
use crate::store::{info_of, object_lock, upload_lock, Store};
use crate::types::{
    BlobRef, BucketName, Checksum, ChecksumAlgorithm, ChecksumType, ETag, LockRequest, ObjectInfo, ObjectKey,
    ObjectMeta, Timestamp, UploadId,
};
use crate::versions::lock_terms;
use crate::wal::identity::NewBytes;
use crate::wal::quarantine::{Quarantined, Verdict};
use crate::writer::StagedBlob;

/// Highest part number S3 allows.
pub const MAX_PART_NUMBER: u32 = 10_000;

/// Facts about an open upload.
#[derive(Debug, Clone)]
pub struct UploadInfo {
    /// Bucket.
    pub bucket: BucketName,
    /// Key.
    pub key: ObjectKey,
    /// Upload id.
    pub upload_id: UploadId,
    /// When it was created.
    pub initiated: Timestamp,
    /// Checksum algorithm chosen at creation.
    pub checksum_algorithm: Option<ChecksumAlgorithm>,
    /// Whether the final checksum is full-object (else composite).
    pub full_object_checksum: bool,
    /// Metadata given at creation.
    pub meta: ObjectMeta,
    /// Object Lock asked for at creation (applied at completion).
    pub lock: LockRequest,
}

/// One uploaded part, as listed.
#[derive(Debug, Clone)]
pub struct PartInfo {
    /// Part number.
    pub number: u32,
    /// ETag (hex MD5 of the part).
    pub etag: ETag,
    /// Size.
    pub size: u64,
    /// Upload time.
    pub last_modified: Timestamp,
    /// Stored checksum of the upload's algorithm.
    pub checksum: Option<Checksum>,
}

/// A part named in CompleteMultipartUpload.
#[derive(Debug, Clone)]
pub struct CompletedPart {
    /// Part number.
    pub number: u32,
    /// ETag the client received for it.
    pub etag: ETag,
    /// Checksum the client claims for it (base64), verified if present.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
}

/// A CompleteMultipartUpload request.
#[derive(Debug, Clone)]
pub struct CompleteRequest<'a> {
    /// Bucket.
    pub bucket: &'a BucketName,
    /// Key.
    pub key: &'a ObjectKey,
    /// The upload.
    pub upload_id: &'a UploadId,
    /// The parts, in the client's order (must ascend).
    pub parts: &'a [CompletedPart],
    /// `If-Match` / `If-None-Match: *`.
    pub condition: WriteCondition,
    /// What the client states about the whole object.
    pub expected: ExpectedObject,
    /// Access key of the caller (for the quarantine record).
    pub actor: &'a str,
}

/// What a client states about the whole object in CompleteMultipartUpload,
/// each verified before anything is written.
#[derive(Debug, Clone, Default)]
pub struct ExpectedObject {
    /// `x-amz-checksum-<algorithm>`: the object's checksum in base64 (a
    /// composite one with or without its `-N`). A mismatch is `BadDigest`.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    /// `x-amz-checksum-type`: `true` for `FULL_OBJECT`, `false` for `COMPOSITE`.
    pub full_object: Option<bool>,
    /// `x-amz-mp-object-size`: the object's size in bytes.
    pub size: Option<u64>,
}

impl ExpectedObject {
    /// Checks a Complete against the object its parts make.
    fn verify(&self, upload: &UploadInfo, size: u64, checksum: Option<&Checksum>) -> Result<()> {
        if let Some(full) = self.full_object {
            // The type is the upload's, chosen at creation (no algorithm: full-object CRC64NVME).
            let upload_full = upload.checksum_algorithm.is_none()
                || upload.full_object_checksum
                || upload.checksum_algorithm == Some(ChecksumAlgorithm::Crc64Nvme);
            if full != upload_full {
                return Err(Error::InvalidRequest(format!(
                    "x-amz-checksum-type is {}, but the upload was created for {} checksums",
                    type_word(full),
                    type_word(upload_full)
                )));
            }
        }
        if let Some((algo, _)) = &self.checksum {
            let created = upload.checksum_algorithm.unwrap_or(ChecksumAlgorithm::Crc64Nvme);
            if *algo != created {
                return Err(Error::InvalidRequest(format!(
                    "the upload was created with the {} checksum algorithm; CompleteMultipartUpload sent {}",
                    created.name(),
                    algo.header_name()
                )));
            }
            if checksum.is_none() {
                return Err(Error::InvalidRequest(format!(
                    "{} cannot be verified: not every part was uploaded with a {} checksum",
                    algo.header_name(),
                    algo.name()
                )));
            }
        }
        self.verify_kept(size, checksum)
    }

    /// Checks the size and checksum value (also of a repeated Complete,
    /// against the kept answer).
    fn verify_kept(&self, size: u64, checksum: Option<&Checksum>) -> Result<()> {
        if let Some(want) = self.size {
            if want != size {
                return Err(Error::InvalidRequest(format!(
                    "x-amz-mp-object-size is {want}, but the parts add up to {size} bytes"
                )));
            }
        }
        let Some((algo, claimed)) = &self.checksum else { return Ok(()) };
        let Some(actual) = checksum.filter(|c| c.algorithm == *algo) else {
            return Err(Error::InvalidRequest(format!("the object has no {} checksum to compare", algo.name())));
        };
        let wire = actual.to_wire();
        let claimed = claimed.trim();
        let matches = match actual.kind {
            ChecksumType::FullObject => claimed == wire,
            // The client may send the checksum of the part checksums with or without "-N".
            ChecksumType::Composite { .. } => {
                claimed == wire || wire.rsplit_once('-').is_some_and(|(b, _)| b == claimed)
            }
        };
        if !matches {
            return Err(Error::BadDigest(format!(
                "{} is {claimed}, but the object's {} checksum is {wire}",
                algo.header_name(),
                algo.name()
            )));
        }
        Ok(())
    }
}

fn type_word(full: bool) -> &'static str {
    if full {
        "FULL_OBJECT"
    } else {
        "COMPOSITE"
    }
}

/// Page of ListParts.
#[derive(Debug, Clone, Default)]
pub struct PartsPage {
    /// Parts in ascending order.
    pub parts: Vec<PartInfo>,
    /// More parts follow after the last one.
    pub truncated: bool,
}

/// Page of ListMultipartUploads.
#[derive(Debug, Clone, Default)]
pub struct UploadsPage {
    /// Uploads ordered by key, then upload id.
    pub uploads: Vec<UploadInfo>,
    /// Common prefixes when a delimiter was given.
    pub prefixes: Vec<String>,
    /// More follow.
    pub truncated: bool,
}

impl Store {
    /// Starts a multipart upload.
    pub fn create_multipart(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        meta: ObjectMeta,
        checksum_algorithm: Option<ChecksumAlgorithm>,
        full_object_checksum: bool,
        lock: LockRequest,
    ) -> Result<UploadId> {
        let _b = self.bucket_lock.read();
        let info = self.bucket(bucket)?;
        // Refused now (no lock on this bucket, a date in the past), not at completion.
        lock_terms(&info, &lock, self.now(), true)?;
        if full_object_checksum
            && matches!(checksum_algorithm, Some(ChecksumAlgorithm::Sha1 | ChecksumAlgorithm::Sha256))
        {
            return Err(Error::InvalidArgument(
                "the FULL_OBJECT checksum type is only available for CRC algorithms".into(),
            ));
        }
        let id = UploadId::random();
        let entry = UploadEntry { initiated: self.now(), meta, checksum_algorithm, full_object_checksum, lock };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_UPLOADS)?, upload_key(bucket, key, &id), entry.encode()?);
        self.commit(Vec::new(), batch)?;
        Ok(id)
    }

    /// Facts about an upload (`NoSuchUpload` if it is not open).
    pub fn upload(&self, bucket: &BucketName, key: &ObjectKey, id: &UploadId) -> Result<UploadInfo> {
        let v = self.index.get(CF_UPLOADS, &upload_key(bucket, key, id))?.ok_or(Error::NoSuchUpload)?;
        let e = UploadEntry::decode(&v)?;
        Ok(upload_info(bucket, key, id, e))
    }

    /// Stores one part, replacing a previous upload of the same number.
    pub fn upload_part(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        id: &UploadId,
        number: u32,
        blob: StagedBlob,
        checksum: Option<Checksum>,
    ) -> Result<PartInfo> {
        if !(1..=MAX_PART_NUMBER).contains(&number) {
            return Err(Error::InvalidArgument(format!("part number must be 1..={MAX_PART_NUMBER}")));
        }
        let _b = self.bucket_lock.read();
        let _k = self.key_locks.lock_all(&[upload_lock(id)]);
        self.upload(bucket, key, id)?;
        // Without a client checksum the part keeps its CRC64NVME, so completion
        // can combine a full-object checksum without re-reading any byte.
        let checksum = checksum.or_else(|| blob.checksum(ChecksumAlgorithm::Crc64Nvme).cloned());
        let now = self.now();
        let pk = part_key(id, number);
        let old: Option<PartEntry> = self.index.get_decoded(CF_PARTS, &pk)?;
        let entry = PartEntry {
            blob: BlobRef { hash: blob.hash, size: blob.size },
            md5: blob.md5,
            last_modified: now,
            checksum: checksum.clone(),
        };
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_PARTS)?, &pk, codec::encode(&entry)?);
        if let Some(old) = old {
            self.unref(&mut batch, &part_blobs(&old), now)?;
        }
        self.commit(vec![blob], batch)?;
        Ok(PartInfo { number, etag: ETag::from_md5(&entry.md5), size: entry.blob.size, last_modified: now, checksum })
    }

    fn parts_of(&self, id: &UploadId) -> Result<Vec<(u32, PartEntry)>> {
        let start = id.as_str().as_bytes().to_vec();
        let mut out = Vec::new();
        for item in self.index.range(CF_PARTS, &start, prefix_end(&start))? {
            let (k, v) = item?;
            let n =
                k[start.len()..].try_into().map(u32::from_be_bytes).map_err(|_| Error::Decode("part key".into()))?;
            out.push((n, codec::decode(&v, CF_PARTS)?));
        }
        Ok(out)
    }

    /// Lists parts with numbers greater than `marker`.
    pub fn list_parts(
        &self,
        bucket: &BucketName,
        key: &ObjectKey,
        id: &UploadId,
        marker: u32,
        max: usize,
    ) -> Result<PartsPage> {
        self.upload(bucket, key, id)?;
        let mut page = PartsPage::default();
        for (number, p) in self.parts_of(id)?.into_iter().filter(|(n, _)| *n > marker) {
            if page.parts.len() >= max {
                page.truncated = true;
                break;
            }
            page.parts.push(PartInfo {
                number,
                etag: ETag::from_md5(&p.md5),
                size: p.blob.size,
                last_modified: p.last_modified,
                checksum: p.checksum,
            });
        }
        Ok(page)
    }

    /// Completes an upload: validates the part list and what the client
    /// states about the whole object, and writes the object.
    ///
    /// Idempotent, as S3 is and as SDKs rely on when an answer is lost: the
    /// answer is kept (in the same batch as the object) until the multipart
    /// expiry, and a repeated Complete of the same upload with the same part
    /// list gets it again — even after a restart, and even if the object was
    /// overwritten or deleted since. Another part list answers `NoSuchUpload`.
    /// An upload whose Complete was refused (split-brain quarantine) keeps no
    /// answer: a retry answers `NoSuchUpload`.
    pub fn complete_multipart(&self, req: &CompleteRequest<'_>) -> Result<ObjectInfo> {
        let (bucket, key, id, parts) = (req.bucket, req.key, req.upload_id, req.parts);
        let _b = self.bucket_lock.read();
        let binfo = self.bucket(bucket)?;
        let mut locks = vec![object_lock(bucket, key), upload_lock(id)];
        locks.extend(Store::identity_lock(bucket, key));
        let _k = self.key_locks.lock_all(&locks);
        let upload = match self.upload(bucket, key, id) {
            Ok(u) => u,
            Err(Error::NoSuchUpload) => return self.completed_answer(req),
            Err(e) => return Err(e),
        };
        if parts.is_empty() {
            return Err(Error::InvalidArgument("CompleteMultipartUpload needs at least one part".into()));
        }
        if parts.windows(2).any(|w| w[0].number >= w[1].number) {
            return Err(Error::InvalidPartOrder);
        }
        let stored = self.parts_of(id)?;
        let find = |n: u32| stored.binary_search_by_key(&n, |(num, _)| *num).ok().map(|i| &stored[i].1);
        let mut chosen: Vec<&PartEntry> = Vec::with_capacity(parts.len());
        for (i, p) in parts.iter().enumerate() {
            let entry =
                find(p.number).ok_or_else(|| Error::InvalidPart(format!("part {} was not uploaded", p.number)))?;
            if ETag::from_md5(&entry.md5) != p.etag {
                return Err(Error::InvalidPart(format!("part {}: ETag {} does not match", p.number, p.etag.as_str())));
            }
            if let Some((algo, claimed)) = &p.checksum {
                match &entry.checksum {
                    Some(c) if c.algorithm == *algo && c.to_wire() == *claimed => {}
                    _ => {
                        return Err(Error::InvalidPart(format!(
                            "part {}: {} checksum does not match the uploaded part",
                            p.number,
                            algo.name()
                        )))
                    }
                }
            }
            let last = i + 1 == parts.len();
            if !last && entry.blob.size < self.config.min_part_size {
                return Err(Error::EntityTooSmall {
                    part: p.number,
                    size: entry.blob.size,
                    min: self.config.min_part_size,
                });
            }
            chosen.push(entry);
        }
        let checksum = final_checksum(&upload, &chosen);
        let size = chosen.iter().map(|p| p.blob.size).sum();
        req.expected.verify(&upload, size, checksum.as_ref())?;
        let now = self.now();
        let md5s: Vec<[u8; 16]> = chosen.iter().map(|p| p.md5).collect();
        let blobs: Vec<BlobRef> = chosen.iter().filter(|p| p.blob.size > 0).map(|p| p.blob).collect();
        let mut entry = ObjectEntry {
            size,
            etag: ETag::multipart(&md5s),
            last_modified: now,
            meta: upload.meta.clone(),
            checksum,
            parts_count: Some(parts.len() as u32),
            blobs,
            version: Default::default(),
        };
        let mut kv = self.key_versions(&binfo, key.as_str())?;
        req.condition.check(kv.current.as_ref())?;
        let mut batch = WriteBatch::default();
        let (verdict, learned) =
            self.wal_conflict(bucket, key, NewBytes::Stored { blobs: &entry.blobs, size: entry.size })?;
        let requarantined = matches!(verdict, Verdict::Conflict(_) | Verdict::Foreign(_))
            && self.quarantined_already(bucket, key, &entry.blobs)?;
        // The answer the client gets, kept for a retry.
        let answer = match &verdict {
            Verdict::Refuse(reason) => return Err(Error::PreconditionFailed(reason.clone())),
            Verdict::Proceed => {
                // A retention date that passed while the parts were uploaded is kept as
                // asked (it no longer locks anything); S3 does not refuse the Complete.
                let terms = lock_terms(&binfo, &upload.lock, now, false)?;
                kv.place(entry.clone(), terms, now)?;
                entry = kv.current.clone().ok_or(Error::NoSuchKey)?;
                Some(ObjectEntry { blobs: Vec::new(), ..entry.clone() })
            }
            // Same content already stored: the upload completes without a second copy.
            Verdict::Identical(existing) => {
                let e = self.entry(bucket, existing)?.ok_or(Error::NoSuchKey)?;
                Some(ObjectEntry { blobs: Vec::new(), ..e })
            }
            // A retry of a refused completion: refused again, its parts released.
            Verdict::Conflict(_) | Verdict::Foreign(_) if requarantined => {
                if matches!(verdict, Verdict::Conflict(_)) {
                    self.wal_guard().stats.conflicts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                None
            }
            Verdict::Conflict(reason) | Verdict::Foreign(reason) => {
                let q = Quarantined {
                    time: now,
                    bucket: bucket.as_str().to_owned(),
                    key: key.as_str().to_owned(),
                    principal: req.actor.to_owned(),
                    reason: reason.clone(),
                    blobs: entry.blobs.clone(),
                    size: entry.size,
                    resolved: false,
                };
                self.quarantine_into(&mut batch, &q, matches!(verdict, Verdict::Conflict(_)))?;
                None
            }
        };
        if let Some(object) = &answer {
            let record = CompletedEntry {
                bucket: bucket.as_str().to_owned(),
                key: key.as_str().to_owned(),
                parts: parts.iter().zip(&md5s).map(|(p, md5)| (p.number, *md5)).collect(),
                completed: now,
                object: object.clone(),
            };
            batch.put_cf(self.index.cf(CF_COMPLETED)?, id.as_str().as_bytes(), codec::encode(&record)?);
        }
        batch.delete_cf(self.index.cf(CF_UPLOADS)?, upload_key(bucket, key, id));
        let parts_cf = self.index.cf(CF_PARTS)?;
        // Used parts hand their reference to the object entry; unused ones drop it.
        let used: std::collections::HashSet<u32> = parts.iter().map(|p| p.number).collect();
        let mut dropped = Vec::new();
        for (n, p) in &stored {
            batch.delete_cf(parts_cf, part_key(id, *n));
            if !used.contains(n) {
                dropped.extend(part_blobs(p));
            }
        }
        // Zero-length parts carry no blob reference at all.
        if matches!(verdict, Verdict::Identical(_)) || (answer.is_none() && requarantined) {
            // The parts' references are not handed to any entry: release them.
            dropped.extend(entry.blobs.iter().copied());
        }
        self.unref(&mut batch, &dropped, now)?;
        if let Verdict::Proceed = &verdict {
            kv.flush(self, &mut batch, now)?;
        }
        if let Some(l) = &learned {
            l.write_into(self, &mut batch, req.actor)?;
        }
        self.repo_write(bucket, key.as_str(), || self.commit(Vec::new(), batch))?;
        if let Some(l) = learned {
            l.committed(self);
        }
        crate::failpoint::hit("complete-after-commit");
        match verdict {
            Verdict::Proceed => Ok(info_of(bucket, key, entry)),
            Verdict::Identical(existing) => {
                let k = ObjectKey::parse(&existing)?;
                let e = self.entry(bucket, &existing)?.ok_or(Error::NoSuchKey)?;
                Ok(info_of(bucket, &k, e))
            }
            Verdict::Conflict(reason) | Verdict::Foreign(reason) | Verdict::Refuse(reason) => {
                Err(Error::PreconditionFailed(reason))
            }
        }
    }

    /// The kept answer of an upload that is no longer open, for a retried
    /// Complete with the same part list; `NoSuchUpload` otherwise.
    fn completed_answer(&self, req: &CompleteRequest<'_>) -> Result<ObjectInfo> {
        let Some(done) = self.index.get_decoded::<CompletedEntry>(CF_COMPLETED, req.upload_id.as_str().as_bytes())?
        else {
            return Err(Error::NoSuchUpload);
        };
        let same_parts = done.parts.len() == req.parts.len()
            && done.parts.iter().zip(req.parts).all(|((n, md5), p)| *n == p.number && ETag::from_md5(md5) == p.etag);
        if done.bucket != req.bucket.as_str() || done.key != req.key.as_str() || !same_parts {
            return Err(Error::NoSuchUpload);
        }
        let o = &done.object;
        req.expected.verify_kept(o.size, o.checksum.as_ref())?;
        tracing::info!(
            bucket = %req.bucket, key = %req.key, upload = %req.upload_id,
            "CompleteMultipartUpload repeated: answering as the first time"
        );
        Ok(info_of(req.bucket, req.key, done.object))
    }

    /// Forgets the answers of uploads completed before `cutoff`.
    pub(crate) fn expire_completed(&self, cutoff: Timestamp) -> Result<u64> {
        let cf = CF_COMPLETED;
        let mut batch = WriteBatch::default();
        let mut n = 0;
        for item in self.index.range(cf, b"", None)? {
            let (k, v) = item?;
            let done: CompletedEntry = codec::decode(&v, cf)?;
            if done.completed < cutoff {
                batch.delete_cf(self.index.cf(cf)?, &k);
                n += 1;
            }
        }
        if n > 0 {
            self.index.write(batch)?;
        }
        Ok(n)
    }

    /// Aborts an upload and releases its parts.
    pub fn abort_multipart(&self, bucket: &BucketName, key: &ObjectKey, id: &UploadId) -> Result<()> {
        let _k = self.key_locks.lock_all(&[upload_lock(id)]);
        self.upload(bucket, key, id)?;
        self.drop_upload(bucket, key, id)
    }

    pub(crate) fn drop_upload(&self, bucket: &BucketName, key: &ObjectKey, id: &UploadId) -> Result<()> {
        let now = self.now();
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_UPLOADS)?, upload_key(bucket, key, id));
        let parts_cf = self.index.cf(CF_PARTS)?;
        let mut dropped = Vec::new();
        for (n, p) in self.parts_of(id)? {
            batch.delete_cf(parts_cf, part_key(id, n));
            dropped.extend(part_blobs(&p));
        }
        self.unref(&mut batch, &dropped, now)?;
        self.commit(Vec::new(), batch)
    }

    /// Lists open uploads in key order.
    pub fn list_uploads(
        &self,
        bucket: &BucketName,
        prefix: &str,
        delimiter: Option<&str>,
        key_marker: Option<&str>,
        upload_id_marker: Option<&str>,
        max: usize,
    ) -> Result<UploadsPage> {
        self.bucket(bucket)?;
        let start = object_key(bucket, prefix);
        let mut page = UploadsPage::default();
        for item in self.index.range(CF_UPLOADS, &start, prefix_end(&start))? {
            let (k, v) = item?;
            let (key, id) = split_upload_key(&k, bucket)?;
            if let Some(m) = key_marker {
                let after_marker = match upload_id_marker {
                    Some(idm) if key.as_str() == m => id.as_str() > idm,
                    _ => key.as_str() > m,
                };
                if !after_marker {
                    continue;
                }
            }
            if let Some(d) = delimiter.filter(|d| !d.is_empty()) {
                if let Some(i) = key.as_str()[prefix.len()..].find(d) {
                    let cp = key.as_str()[..prefix.len() + i + d.len()].to_owned();
                    if page.prefixes.last() != Some(&cp) {
                        if page.uploads.len() + page.prefixes.len() >= max {
                            page.truncated = true;
                            break;
                        }
                        page.prefixes.push(cp);
                    }
                    continue;
                }
            }
            if page.uploads.len() + page.prefixes.len() >= max {
                page.truncated = true;
                break;
            }
            let e = UploadEntry::decode(&v)?;
            page.uploads.push(upload_info(bucket, &key, &id, e));
        }
        Ok(page)
    }
}

fn part_blobs(p: &PartEntry) -> Vec<BlobRef> {
    if p.blob.size > 0 {
        vec![p.blob]
    } else {
        Vec::new()
    }
}

fn upload_info(bucket: &BucketName, key: &ObjectKey, id: &UploadId, e: UploadEntry) -> UploadInfo {
    UploadInfo {
        bucket: bucket.clone(),
        key: key.clone(),
        upload_id: id.clone(),
        initiated: e.initiated,
        checksum_algorithm: e.checksum_algorithm,
        full_object_checksum: e.full_object_checksum,
        meta: e.meta,
        lock: e.lock,
    }
}

pub(crate) fn split_upload_key(k: &[u8], bucket: &BucketName) -> Result<(ObjectKey, UploadId)> {
    let rest = &k[bucket.as_str().len() + 1..];
    let bad = || Error::Decode("upload key".into());
    if rest.len() < 33 || rest[rest.len() - 33] != 0 {
        return Err(bad());
    }
    let key = std::str::from_utf8(&rest[..rest.len() - 33]).map_err(|_| bad())?;
    let id = std::str::from_utf8(&rest[rest.len() - 32..]).map_err(|_| bad())?;
    Ok((ObjectKey::parse(key)?, UploadId::parse(id)?))
}

/// The object's checksum. With an algorithm chosen at creation: composite
/// (checksum of the part checksums, `-N`) unless FULL_OBJECT was requested or the
/// algorithm is CRC64NVME (always full-object in S3). Without one: a full-object
/// CRC64NVME combined from the parts, which is what S3 stores when the client
/// asked for nothing. `None` if a part lacks the needed checksum.
fn final_checksum(upload: &UploadInfo, parts: &[&PartEntry]) -> Option<Checksum> {
    let algorithm = upload.checksum_algorithm.unwrap_or(ChecksumAlgorithm::Crc64Nvme);
    let values: Vec<&Checksum> =
        parts.iter().map(|p| p.checksum.as_ref().filter(|c| c.algorithm == algorithm)).collect::<Option<_>>()?;
    let full =
        upload.checksum_algorithm.is_none() || upload.full_object_checksum || algorithm == ChecksumAlgorithm::Crc64Nvme;
    if !full {
        let raw: Vec<&[u8]> = values.iter().map(|c| c.value.as_slice()).collect();
        return Some(checksum::composite(algorithm, &raw));
    }
    let crcs: Vec<(u64, u64)> = values
        .iter()
        .zip(parts)
        .map(|(c, p)| checksum::crc_value(&c.value).map(|v| (v, p.blob.size)))
        .collect::<Option<_>>()?;
    checksum::combine_full(algorithm, &crcs)
}
