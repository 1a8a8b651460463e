//! The split-brain guard and its quarantine: an upload of different bytes for
//! a WAL file (any codec) or history file that is already stored is refused
//! and its bytes kept aside, referenced, until an operator resolves it. On
//! disk: column family `quarantine`, `<time ms BE> <random>` → [`Quarantined`].

use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use wal::names::{classify, split_repo, Codec, WalObject, WAL_DIR};
use wal::OpenConflict;

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{object_key, prefix_end, ObjectEntry, CF_OBJECTS, CF_QUARANTINE};
use crate::locks::lock_id;
use crate::store::{object_lock, Store};
use crate::types::{BlobRef, BucketName, ObjectKey, Timestamp};

use super::identity::{Learned, NewBytes, IDENTITY_CONFLICT, MAX_COMPARE_BYTES};

/// An upload refused by the split-brain guard, kept aside for an operator.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Quarantined {
    /// When.
    pub time: Timestamp,
    /// Bucket.
    pub bucket: String,
    /// Key the client wrote.
    pub key: String,
    /// Access key that wrote it.
    pub principal: String,
    /// Why it was refused.
    pub reason: String,
    /// The refused bytes (kept referenced so GC leaves them).
    pub blobs: Vec<BlobRef>,
    /// Size.
    pub size: u64,
    /// An operator resolved the conflict; the record stays for inspection and
    /// no longer freezes retention or raises an alert.
    pub resolved: bool,
}

/// A quarantine record with its id (for `walstore quarantine resolve`).
#[derive(Clone, Debug, Serialize)]
pub struct QuarantineEntry {
    /// Stable id of the record.
    pub id: String,
    /// The record.
    #[serde(flatten)]
    pub record: Quarantined,
}

/// Which copy an operator keeps when resolving a quarantined conflict.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    /// The object already stored stays; the quarantined bytes are released.
    First,
    /// The quarantined bytes replace the stored object, which moves into the
    /// quarantine (marked resolved) instead of being destroyed.
    Second,
}

/// Identity of a WAL file for the split-brain guard: the key without codec.
fn identity(repo: &str, class: &WalObject) -> Option<(String, Vec<String>, Codec)> {
    const EXTS: [&str; 8] = ["", ".", ".lz4", ".lzma", ".zst", ".br", ".lzo", ".gz"];
    let (base, codec) = match class {
        WalObject::Segment { name, codec } => (format!("{repo}{WAL_DIR}{name}"), *codec),
        WalObject::Partial { name, codec } => (format!("{repo}{WAL_DIR}{name}.partial"), *codec),
        WalObject::History { timeline, codec } => (format!("{repo}{WAL_DIR}{}.history", timeline.hex()), *codec),
        _ => return None,
    };
    let keys = EXTS.iter().map(|e| format!("{base}{e}")).collect();
    Some((base, keys, codec))
}

impl Store {
    /// Quarantined uploads, oldest first.
    pub fn quarantine(&self) -> Result<Vec<QuarantineEntry>> {
        let mut out = Vec::new();
        for item in self.index.range(CF_QUARANTINE, b"", None)? {
            let (k, v) = item?;
            out.push(QuarantineEntry { id: hex::encode(&k), record: codec::decode(&v, CF_QUARANTINE)? });
        }
        Ok(out)
    }

    /// Unresolved conflicts inside a repository, for the horizon: a history
    /// collision freezes retention, a WAL conflict raises an alert.
    pub(crate) fn open_conflicts(&self, bucket: &BucketName, repo: &str) -> Result<Vec<OpenConflict>> {
        let mut out = Vec::new();
        for q in self.quarantine()? {
            let r = q.record;
            if r.resolved || r.bucket != bucket.as_str() {
                continue;
            }
            let Some((r_repo, path)) = split_repo(&r.key) else { continue };
            if r_repo != repo {
                continue;
            }
            out.push(OpenConflict {
                id: q.id,
                path: path.to_owned(),
                history: matches!(classify(path), WalObject::History { .. }),
                foreign: r.reason.starts_with(IDENTITY_CONFLICT),
                time: r.time,
            });
        }
        Ok(out)
    }

    /// Resolves a quarantined conflict (audited). See [`Keep`].
    pub fn resolve_quarantine(&self, id: &str, keep: Keep, actor: &str) -> Result<QuarantineEntry> {
        let qkey = hex::decode(id).map_err(|_| Error::InvalidArgument(format!("{id:?} is not a quarantine id")))?;
        let _b = self.bucket_lock.read();
        let rec: Quarantined = self
            .index
            .get_decoded(CF_QUARANTINE, &qkey)?
            .ok_or_else(|| Error::InvalidArgument(format!("no quarantine record {id}")))?;
        let bucket = BucketName::parse(&rec.bucket)?;
        let key = ObjectKey::parse(&rec.key)?;
        let mut locks = vec![object_lock(&bucket, &key)];
        locks.extend(Store::identity_lock(&bucket, &key));
        let _k = self.key_locks.lock_all(&locks);
        let now = self.now();
        let mut batch = WriteBatch::default();
        let qcf = self.index.cf(CF_QUARANTINE)?;
        match keep {
            Keep::First => {
                batch.delete_cf(qcf, &qkey);
                self.unref(&mut batch, &rec.blobs, now)?;
                self.audit_into(
                    &mut batch,
                    actor,
                    "quarantine-discard",
                    &rec.bucket,
                    &rec.key,
                    "kept the stored copy",
                )?;
            }
            Keep::Second => {
                if rec.resolved {
                    return Err(Error::InvalidArgument(format!(
                        "quarantine record {id} is already resolved; resolve it with keep=first to release it"
                    )));
                }
                // The stored copy may carry another codec extension (same identity).
                let stored = match split_repo(key.as_str()).and_then(|(repo, path)| identity(repo, &classify(path))) {
                    Some((_, candidates, _)) => {
                        let mut found = None;
                        for c in candidates {
                            if let Some(e) = self.entry(&bucket, &c)? {
                                found = Some((c, e));
                                break;
                            }
                        }
                        found
                    }
                    None => self.entry(&bucket, key.as_str())?.map(|e| (key.as_str().to_owned(), e)),
                };
                // The replaced copy is kept (as a quarantine record or an older version)
                // while its key gets other bytes on the replication target: bytes evicted
                // to that target come back first (see `crate::tier`).
                if let Some((_, old)) = &stored {
                    for b in &old.blobs {
                        self.rehydrate_blob(&b.hash, false)?;
                    }
                }
                let bytes = self.read_refs(&rec.blobs, rec.size)?;
                let md5: [u8; 16] = md5::Md5::digest(&bytes).into();
                let entry = ObjectEntry {
                    size: rec.size,
                    etag: crate::types::ETag::from_md5(&md5),
                    last_modified: now,
                    meta: Default::default(),
                    checksum: None,
                    parts_count: None,
                    blobs: rec.blobs.clone(),
                    version: Default::default(),
                };
                batch.delete_cf(qcf, &qkey);
                let info = self.bucket(&bucket)?;
                if info.versioning != crate::types::Versioning::Unversioned {
                    // The stored copy stays as a non-current version (its references
                    // with it); the quarantined upload becomes the current one.
                    if let Some((old_key, _)) = stored.as_ref().filter(|(k, _)| k != key.as_str()) {
                        let mut kv = self.key_versions(&info, old_key)?;
                        kv.remove_current(now)?;
                        kv.flush(self, &mut batch, now)?;
                    }
                    let mut kv = self.key_versions(&info, key.as_str())?;
                    kv.place(entry, Default::default(), now)?;
                    kv.flush(self, &mut batch, now)?;
                } else {
                    if let Some((old_key, old)) = stored {
                        batch.delete_cf(self.index.cf(CF_OBJECTS)?, object_key(&bucket, &old_key));
                        self.journal_change(&mut batch, &bucket, &old_key, None, now)?;
                        let moved = Quarantined {
                            time: now,
                            bucket: rec.bucket.clone(),
                            key: old_key,
                            principal: actor.to_owned(),
                            reason: format!("replaced by the quarantined upload of {} on resolution", rec.key),
                            blobs: old.blobs,
                            size: old.size,
                            resolved: true,
                        };
                        let mut k = (now.as_millis() as u64).to_be_bytes().to_vec();
                        k.extend_from_slice(&rand::random::<[u8; 8]>());
                        batch.put_cf(qcf, k, codec::encode(&moved)?);
                    }
                    batch.put_cf(self.index.cf(CF_OBJECTS)?, object_key(&bucket, key.as_str()), entry.encode()?);
                    self.journal_change(&mut batch, &bucket, key.as_str(), Some(&entry), now)?;
                }
                self.audit_into(
                    &mut batch,
                    actor,
                    "quarantine-restore",
                    &rec.bucket,
                    &rec.key,
                    "the quarantined upload replaced the stored copy",
                )?;
            }
        }
        self.repo_write(&bucket, key.as_str(), || self.commit(Vec::new(), batch))?;
        Ok(QuarantineEntry { id: id.to_owned(), record: Quarantined { resolved: true, ..rec } })
    }

    // --------------------------------------------------------------- split-brain guard

    /// Stripe identity for the WAL file a key names (all codecs share it).
    pub(crate) fn identity_lock(bucket: &BucketName, key: &ObjectKey) -> Option<u64> {
        let (repo, path) = split_repo(key.as_str())?;
        let (base, _, _) = identity(repo, &classify(path))?;
        Some(lock_id(&(2u8, bucket.as_str(), base)))
    }

    /// Checks a write of `new` bytes under `key` against an existing upload of
    /// the same WAL file (any codec). Called with the key's and identity's
    /// locks held.
    ///
    /// The identity check comes first (see [`super::identity`]); an identity the write
    /// teaches comes back with [`Verdict::Proceed`], for the write's batch.
    pub(crate) fn wal_conflict<'a>(
        &'a self,
        bucket: &BucketName,
        key: &ObjectKey,
        new: NewBytes<'_>,
    ) -> Result<(Verdict, Option<Learned<'a>>)> {
        let Some((repo, path)) = split_repo(key.as_str()) else { return Ok((Verdict::Proceed, None)) };
        let class = classify(path);
        let policy = self.policy_for(bucket, repo)?;
        let (refused, learned) = self.identity_verdict(bucket, repo, key, &class, &policy, &new)?;
        if let Some(reason) = refused {
            return Ok((Verdict::Foreign(reason), None));
        }
        let verdict = self.split_brain(bucket, repo, key, &class, &policy, new)?;
        Ok(match verdict {
            Verdict::Proceed => (verdict, learned),
            other => (other, None),
        })
    }

    fn split_brain(
        &self,
        bucket: &BucketName,
        repo: &str,
        key: &ObjectKey,
        class: &WalObject,
        policy: &super::state::StoredPolicy,
        new: NewBytes<'_>,
    ) -> Result<Verdict> {
        if let WalObject::Sentinel(name) = class {
            return self.sentinel_check(bucket, repo, name.as_str());
        }
        let Some((_, candidates, new_codec)) = identity(repo, class) else { return Ok(Verdict::Proceed) };
        if !policy.split_brain_guard {
            return Ok(Verdict::Proceed);
        }
        let history = matches!(class, WalObject::History { .. });
        for cand in candidates {
            let Some(existing) = self.entry(bucket, &cand)? else { continue };
            let ecodec = match classify(&cand[repo.len()..]) {
                WalObject::Segment { codec, .. }
                | WalObject::Partial { codec, .. }
                | WalObject::History { codec, .. } => codec,
                _ => continue,
            };
            // Same bytes (same codec): an archive retry.
            if cand == key.as_str() && new.same_as(&existing.blobs) {
                return Ok(Verdict::Identical(cand));
            }
            if ecodec == new_codec && new.same_as(&existing.blobs) {
                return Ok(Verdict::Identical(cand));
            }
            // Different encodings of possibly the same content: compare plaintext.
            // A stored copy on a tier target that is down cannot be compared: retry later
            // (503), never call it a conflict.
            let old_plain = match self.read_refs(&existing.blobs, existing.size) {
                Ok(b) => plaintext_digest(ecodec, &b),
                Err(e @ Error::RemoteUnavailable(_)) => return Err(e),
                Err(_) => None,
            };
            let new_plain = new.bytes(self).ok().and_then(|b| plaintext_digest(new_codec, &b));
            if let (Some(a), Some(b)) = (old_plain, new_plain) {
                if a == b {
                    return Ok(Verdict::Identical(cand));
                }
            }
            let what = if history { "timeline history file" } else { "WAL file" };
            let detail = match (old_plain, new_plain) {
                (Some(_), Some(_)) => "its content differs",
                _ => "its bytes differ and could not be compared decoded",
            };
            return Ok(Verdict::Conflict(format!(
                "{what} {cand} already exists and {detail}: refusing the upload (split brain suspected); the new bytes are quarantined"
            )));
        }
        Ok(Verdict::Proceed)
    }

    /// A stop sentinel completes a backup whose data was uploaded before it.
    /// With nothing stored under the backup's folder the sentinel would list a
    /// backup that cannot be restored: either its parts never arrived or
    /// retention collected them as an abandoned backup (a late sentinel must
    /// not resurrect it).
    fn sentinel_check(&self, bucket: &BucketName, repo: &str, name: &str) -> Result<Verdict> {
        let folder = object_key(bucket, &format!("{repo}{}{name}/", wal::names::BACKUP_DIR));
        if self.index.range(CF_OBJECTS, &folder, prefix_end(&folder))?.next().is_some() {
            return Ok(Verdict::Proceed);
        }
        Ok(Verdict::Refuse(format!(
            "backup-incomplete: backup {name} has no data stored under {repo}{}{name}/ (never uploaded, or \
             collected by retention as an abandoned backup); refusing its stop sentinel",
            wal::names::BACKUP_DIR
        )))
    }

    /// Reads whole objects (small WAL files) into memory.
    pub(crate) fn read_refs(&self, blobs: &[BlobRef], size: u64) -> Result<Vec<u8>> {
        if size as usize > MAX_COMPARE_BYTES {
            return Err(Error::InvalidArgument("object too large to compare".into()));
        }
        let mut out = Vec::with_capacity(size as usize);
        for b in blobs {
            let mut r = self.read_blob(b, 0..b.size)?;
            while let Some(c) = r.next_chunk()? {
                out.extend_from_slice(&c);
            }
        }
        Ok(out)
    }

    /// Whether an unresolved quarantine record already holds these bytes for this key: a
    /// client retrying a refused upload (PostgreSQL's archiver retries a failed
    /// `archive_command` forever) is refused again without a record per attempt.
    pub(crate) fn quarantined_already(&self, bucket: &BucketName, key: &ObjectKey, blobs: &[BlobRef]) -> Result<bool> {
        for item in self.index.range(CF_QUARANTINE, b"", None)? {
            let (_, v) = item?;
            let r: Quarantined = codec::decode(&v, CF_QUARANTINE)?;
            if !r.resolved && r.bucket == bucket.as_str() && r.key == key.as_str() && r.blobs == blobs {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Records a refused upload in the quarantine (holding its blob references);
    /// `split_brain`: counted as a split-brain conflict (else the identity check counted it).
    pub(crate) fn quarantine_into(&self, batch: &mut WriteBatch, q: &Quarantined, split_brain: bool) -> Result<()> {
        let mut k = (q.time.as_millis() as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&rand::random::<[u8; 8]>());
        batch.put_cf(self.index.cf(CF_QUARANTINE)?, k, codec::encode(q)?);
        if split_brain {
            self.guard.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        }
        self.audit_into(batch, &q.principal, "quarantine", &q.bucket, &q.key, &q.reason)
    }
}

fn plaintext_digest(codec: Codec, bytes: &[u8]) -> Option<[u8; 32]> {
    let plain = wal::codec::decode(codec, bytes, MAX_COMPARE_BYTES).ok()?;
    Some(Sha256::digest(&plain).into())
}

/// Outcome of the split-brain check.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// No existing upload of this WAL file.
    Proceed,
    /// The same content is already stored under this key.
    Identical(String),
    /// Different content: refuse (the reason names the existing key) and quarantine the bytes.
    Conflict(String),
    /// From another cluster (the identity check): refuse and quarantine the bytes.
    Foreign(String),
    /// Refuse without keeping the bytes (a sentinel for a backup without data).
    Refuse(String),
}
