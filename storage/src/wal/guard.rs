//! Where the retention horizon meets the store: per-repository policies,
//! cached evaluations, the delete guard, the split-brain guard with its
//! quarantine, the retention worker's journaled deletions, and the audit log.
//!
//! On-disk names (column families, see [`crate::index`]): `policies`,
//! `quarantine`, `audit`, `journal`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{object_key, prefix_end, ObjectEntry, CF_AUDIT, CF_JOURNAL, CF_OBJECTS, CF_POLICIES, CF_QUARANTINE};
use crate::locks::lock_id;
use crate::store::{object_lock, Store};
use crate::types::{BlobRef, BucketName, ObjectKey, Timestamp};

use super::horizon::{compute, Decision, Horizon, Unit};
use super::names::{classify, split_repo, Codec, WalObject, WAL_DIR};
use super::policy::{DeleteProtection, RetentionPolicy};

/// How long a cached evaluation is used before a fresh snapshot is taken.
const REFRESH: Duration = Duration::from_secs(30);
/// Largest object whose plaintext the split-brain guard decodes for comparison.
const MAX_COMPARE_BYTES: usize = 64 << 20;
/// Refused deletes remembered for the status report.
const REFUSED_KEPT: usize = 200;

/// A stored policy.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The policy.
    pub policy: RetentionPolicy,
    /// Refuse a different upload for an existing WAL segment or history file.
    pub split_brain_guard: bool,
}

impl Default for StoredPolicy {
    fn default() -> Self {
        Self { policy: RetentionPolicy::default(), split_brain_guard: true }
    }
}

/// One evaluation of a repository.
#[derive(Debug)]
pub struct Evaluation {
    /// Bucket.
    pub bucket: BucketName,
    /// Repository prefix.
    pub prefix: String,
    /// The policy used.
    pub policy: StoredPolicy,
    /// The result.
    pub horizon: Horizon,
    /// When it was computed (monotonic).
    pub at: Instant,
    /// Write generation of the repository when the snapshot was taken; a later
    /// write makes the evaluation stale at once.
    generation: u64,
}

/// A refused client delete, kept for the status report (WAL-G ignores per-key errors).
#[derive(Clone, Debug, Serialize)]
pub struct RefusedDelete {
    /// When.
    pub time: Timestamp,
    /// Bucket.
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Access key that asked.
    pub principal: String,
    /// The rule.
    pub reason: String,
}

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

/// An audit record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When.
    pub time: Timestamp,
    /// Who (access key or `retention-worker`).
    pub actor: String,
    /// What (`override-delete`, `retention-delete`, `quarantine`, `policy-set`).
    pub action: String,
    /// Bucket.
    pub bucket: String,
    /// Key or prefix.
    pub key: String,
    /// Why.
    pub reason: String,
}

/// Progress of a unit deletion (crash resume).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JournalEntry {
    paths: Vec<String>,
    next: usize,
}

/// Counters for metrics.
#[derive(Debug, Default)]
pub struct GuardStats {
    /// Client deletes refused.
    pub refused_deletes: AtomicU64,
    /// Uploads refused by the split-brain guard.
    pub conflicts: AtomicU64,
    /// Objects deleted by the retention worker.
    pub retention_deletions: AtomicU64,
    /// Deletes allowed by an admin override.
    pub overrides: AtomicU64,
}

/// Who asks for a delete.
#[derive(Clone, Copy, Debug)]
pub enum DeleteAuth<'a> {
    /// A client, subject to the bucket's delete protection.
    Client {
        /// Access key id.
        principal: &'a str,
    },
    /// An admin override (audited).
    Override {
        /// Access key id.
        principal: &'a str,
        /// Stated reason.
        reason: &'a str,
    },
}

/// State of the WAL layer inside the store.
pub struct WalGuard {
    default: Mutex<StoredPolicy>,
    cache: Mutex<HashMap<(String, String), Arc<Evaluation>>>,
    generations: Mutex<HashMap<(String, String), u64>>,
    compute_lock: Mutex<()>,
    last_pass: Mutex<HashMap<(String, String), Timestamp>>,
    refused: Mutex<VecDeque<RefusedDelete>>,
    audit_seq: AtomicU64,
    /// Counters.
    pub stats: GuardStats,
}

impl Default for WalGuard {
    fn default() -> Self {
        Self {
            default: Mutex::new(StoredPolicy::default()),
            cache: Mutex::new(HashMap::new()),
            generations: Mutex::new(HashMap::new()),
            compute_lock: Mutex::new(()),
            last_pass: Mutex::new(HashMap::new()),
            refused: Mutex::new(VecDeque::new()),
            audit_seq: AtomicU64::new(0),
            stats: GuardStats::default(),
        }
    }
}

fn policy_key(bucket: &BucketName, prefix: &str) -> Vec<u8> {
    object_key(bucket, prefix)
}

/// Where `gc.delay` candidates of a repository are remembered (journal CF; the
/// leading 0xFF cannot start a bucket name, so it never meets a journal key).
fn pending_key(bucket: &BucketName, prefix: &str) -> Vec<u8> {
    let mut k = vec![0xFF];
    k.extend_from_slice(&object_key(bucket, prefix));
    k
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
    /// The guard (policies, counters, refused deletes).
    pub fn wal_guard(&self) -> &WalGuard {
        &self.guard
    }

    /// Sets the policy used where no bucket or repository policy is stored.
    pub fn set_default_policy(&self, p: StoredPolicy) {
        *self.guard.default.lock() = p;
        self.guard.cache.lock().clear();
    }

    /// Stores a policy for a bucket (`prefix` empty) or a repository prefix.
    pub fn set_policy(&self, bucket: &BucketName, prefix: &str, p: &StoredPolicy, actor: &str) -> Result<()> {
        self.bucket(bucket)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(self.index.cf(CF_POLICIES)?, policy_key(bucket, prefix), codec::encode(p));
        self.audit_into(&mut batch, actor, "policy-set", bucket.as_str(), prefix, &format!("{p:?}"))?;
        self.index.write(batch)?;
        self.guard.cache.lock().clear();
        Ok(())
    }

    /// Removes a stored policy.
    pub fn remove_policy(&self, bucket: &BucketName, prefix: &str, actor: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_POLICIES)?, policy_key(bucket, prefix));
        self.audit_into(&mut batch, actor, "policy-remove", bucket.as_str(), prefix, "")?;
        self.index.write(batch)?;
        self.guard.cache.lock().clear();
        Ok(())
    }

    /// Stored policies of a bucket: (prefix, policy).
    pub fn policies(&self, bucket: &BucketName) -> Result<Vec<(String, StoredPolicy)>> {
        let start = crate::index::bucket_prefix(bucket);
        let mut out = Vec::new();
        for item in self.index.range(CF_POLICIES, &start, prefix_end(&start))? {
            let (k, v) = item?;
            let prefix = String::from_utf8_lossy(&k[start.len()..]).into_owned();
            out.push((prefix, codec::decode(&v, CF_POLICIES)?));
        }
        Ok(out)
    }

    /// The policy in force for a repository: the longest stored prefix that
    /// contains it, else the bucket's, else the server default.
    pub fn policy_for(&self, bucket: &BucketName, repo: &str) -> Result<StoredPolicy> {
        let best = self
            .policies(bucket)?
            .into_iter()
            .filter(|(p, _)| repo.starts_with(p.as_str()))
            .max_by_key(|(p, _)| p.len())
            .map(|(_, p)| p);
        Ok(best.unwrap_or_else(|| self.guard.default.lock().clone()))
    }

    /// Evaluates a repository now (fresh snapshot) and caches the result.
    pub fn evaluate(&self, bucket: &BucketName, repo: &str) -> Result<Arc<Evaluation>> {
        let _one = self.guard.compute_lock.lock();
        let policy = self.policy_for(bucket, repo)?;
        let k = (bucket.as_str().to_owned(), repo.to_owned());
        let generation = self.generation(&k);
        let mut snap = self.wal_snapshot(bucket, repo)?;
        snap.conflicts = self.open_conflicts(bucket, repo)?;
        let last = self.guard.last_pass.lock().get(&k).copied();
        let horizon = compute(&snap, &policy.policy, SystemTime::now(), last);
        self.guard.last_pass.lock().insert(k.clone(), Timestamp::now());
        for f in &horizon.frozen {
            tracing::warn!(bucket = %bucket, repo, reason = %f, "retention frozen");
        }
        let ev = Arc::new(Evaluation {
            bucket: bucket.clone(),
            prefix: repo.to_owned(),
            policy,
            horizon,
            at: Instant::now(),
            generation,
        });
        self.guard.cache.lock().insert(k, ev.clone());
        Ok(ev)
    }

    /// The cached evaluation if fresh enough, else a new one.
    pub fn evaluation(&self, bucket: &BucketName, repo: &str) -> Result<Arc<Evaluation>> {
        let k = (bucket.as_str().to_owned(), repo.to_owned());
        if let Some(e) = self.guard.cache.lock().get(&k) {
            if e.at.elapsed() < REFRESH && e.generation == self.generation(&k) {
                return Ok(e.clone());
            }
        }
        self.evaluate(bucket, repo)
    }

    fn generation(&self, k: &(String, String)) -> u64 {
        self.guard.generations.lock().get(k).copied().unwrap_or(0)
    }

    /// Notes a committed write or delete of `key`: a cached evaluation of its
    /// repository no longer describes it (a `backup-mark` just made a backup
    /// permanent, a sentinel just completed one), so the next decision takes a
    /// fresh snapshot.
    pub(crate) fn wal_written(&self, bucket: &BucketName, key: &str) {
        if let Some((repo, _)) = split_repo(key) {
            *self.guard.generations.lock().entry((bucket.as_str().to_owned(), repo.to_owned())).or_insert(0) += 1;
        }
    }

    /// Decides, per key, whether a delete may proceed (`None`) or is refused
    /// (`Some(reason)`). Keys of one backup in one request share one decision,
    /// so no backup is ever half-deleted by a batch.
    pub(crate) fn check_deletes(
        &self,
        bucket: &BucketName,
        keys: &[ObjectKey],
        who: DeleteAuth<'_>,
    ) -> Result<Vec<Option<String>>> {
        let mut out: Vec<Option<String>> = vec![None; keys.len()];
        if let DeleteAuth::Override { principal, reason } = who {
            for k in keys {
                if split_repo(k.as_str()).is_some() {
                    self.guard.stats.overrides.fetch_add(1, Ordering::Relaxed);
                    self.audit(principal, "override-delete", bucket.as_str(), k.as_str(), reason)?;
                }
            }
            return Ok(out);
        }
        let mut backup_denied: HashMap<(String, String), String> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let Some((repo, path)) = split_repo(k.as_str()) else { continue };
            let p = self.policy_for(bucket, repo)?;
            let decision = match p.policy.protection {
                DeleteProtection::Allow => Decision::Allow,
                DeleteProtection::DenyAll => Decision::Deny("delete protection of this bucket is deny-all".into()),
                DeleteProtection::ProtectRequired => self.evaluation(bucket, repo)?.horizon.decide(path),
            };
            if let Decision::Deny(why) = decision {
                if let Some(b) = classify(path).backup() {
                    backup_denied.insert((repo.to_owned(), b.to_string()), why.clone());
                }
                out[i] = Some(why);
            }
        }
        for (i, k) in keys.iter().enumerate() {
            if out[i].is_some() {
                continue;
            }
            if let Some((repo, path)) = split_repo(k.as_str()) {
                if let Some(b) = classify(path).backup() {
                    if let Some(why) = backup_denied.get(&(repo.to_owned(), b.to_string())) {
                        out[i] = Some(format!("another object of backup {b} in this request is protected: {why}"));
                    }
                }
            }
        }
        if let DeleteAuth::Client { principal } = who {
            for (k, r) in keys.iter().zip(&out) {
                if let Some(reason) = r {
                    self.note_refused(bucket, k.as_str(), principal, reason);
                }
            }
        }
        Ok(out)
    }

    fn note_refused(&self, bucket: &BucketName, key: &str, principal: &str, reason: &str) {
        self.guard.stats.refused_deletes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bucket = %bucket, key, principal, reason, "delete refused by retention protection");
        let mut q = self.guard.refused.lock();
        if q.len() >= REFUSED_KEPT {
            q.pop_front();
        }
        q.push_back(RefusedDelete {
            time: Timestamp::now(),
            bucket: bucket.as_str().to_owned(),
            key: key.to_owned(),
            principal: principal.to_owned(),
            reason: reason.to_owned(),
        });
    }

    /// The most recent refused deletes (newest last).
    pub fn refused_deletes(&self) -> Vec<RefusedDelete> {
        self.guard.refused.lock().iter().cloned().collect()
    }

    pub(crate) fn audit_into(
        &self,
        batch: &mut WriteBatch,
        actor: &str,
        action: &str,
        bucket: &str,
        key: &str,
        reason: &str,
    ) -> Result<()> {
        let now = Timestamp::now();
        let mut k = (now.as_millis() as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&self.guard.audit_seq.fetch_add(1, Ordering::Relaxed).to_be_bytes());
        let rec = AuditRecord {
            time: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            bucket: bucket.to_owned(),
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        tracing::info!(actor, action, bucket, key, reason, "audit");
        batch.put_cf(self.index.cf(CF_AUDIT)?, k, codec::encode(&rec));
        Ok(())
    }

    fn audit(&self, actor: &str, action: &str, bucket: &str, key: &str, reason: &str) -> Result<()> {
        let mut batch = WriteBatch::default();
        self.audit_into(&mut batch, actor, action, bucket, key, reason)?;
        self.index.write(batch)
    }

    /// The audit log, oldest first (at most `limit` newest records).
    pub fn audit_log(&self, limit: usize) -> Result<Vec<AuditRecord>> {
        let mut all: Vec<AuditRecord> = Vec::new();
        for item in self.index.range(CF_AUDIT, b"", None)? {
            let (_, v) = item?;
            all.push(codec::decode(&v, CF_AUDIT)?);
        }
        let skip = all.len().saturating_sub(limit);
        Ok(all.split_off(skip))
    }

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
    fn open_conflicts(&self, bucket: &BucketName, repo: &str) -> Result<Vec<OpenConflict>> {
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
        let now = Timestamp::now();
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
                };
                batch.delete_cf(qcf, &qkey);
                if let Some((old_key, old)) = stored {
                    batch.delete_cf(self.index.cf(CF_OBJECTS)?, object_key(&bucket, &old_key));
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
                    batch.put_cf(qcf, k, codec::encode(&moved));
                }
                batch.put_cf(self.index.cf(CF_OBJECTS)?, object_key(&bucket, key.as_str()), codec::encode(&entry));
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
        self.commit(Vec::new(), batch)?;
        self.wal_written(&bucket, key.as_str());
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
    pub(crate) fn wal_conflict(&self, bucket: &BucketName, key: &ObjectKey, new: NewBytes<'_>) -> Result<Verdict> {
        let Some((repo, path)) = split_repo(key.as_str()) else { return Ok(Verdict::Proceed) };
        let class = classify(path);
        if let WalObject::Sentinel(name) = &class {
            return self.sentinel_check(bucket, repo, name.as_str());
        }
        let Some((_, candidates, new_codec)) = identity(repo, &class) else { return Ok(Verdict::Proceed) };
        if !self.policy_for(bucket, repo)?.split_brain_guard {
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
            let old_plain =
                self.read_refs(&existing.blobs, existing.size).ok().and_then(|b| plaintext_digest(ecodec, &b));
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
        let folder = object_key(bucket, &format!("{repo}{}{name}/", super::names::BACKUP_DIR));
        if self.index.range(CF_OBJECTS, &folder, prefix_end(&folder))?.next().is_some() {
            return Ok(Verdict::Proceed);
        }
        Ok(Verdict::Refuse(format!(
            "backup-incomplete: backup {name} has no data stored under {repo}{}{name}/ (never uploaded, or \
             collected by retention as an abandoned backup); refusing its stop sentinel",
            super::names::BACKUP_DIR
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

    /// Records a refused upload in the quarantine (holding its blob references).
    pub(crate) fn quarantine_into(&self, batch: &mut WriteBatch, q: &Quarantined) -> Result<()> {
        let mut k = (q.time.as_millis() as u64).to_be_bytes().to_vec();
        k.extend_from_slice(&rand::random::<[u8; 8]>());
        batch.put_cf(self.index.cf(CF_QUARANTINE)?, k, codec::encode(q));
        self.guard.stats.conflicts.fetch_add(1, Ordering::Relaxed);
        self.audit_into(batch, &q.principal, "quarantine", &q.bucket, &q.key, &q.reason)
    }

    // --------------------------------------------------------------- retention worker

    /// Executes the deletions of an evaluation (fresh evaluation, then units in
    /// order: backups sentinel-first, then WAL oldest first), journaled so a
    /// crash resumes the unit it was in. Returns (objects, bytes) deleted.
    pub fn retention_run(&self, bucket: &BucketName, repo: &str, max_units: usize) -> Result<(u64, u64)> {
        let (mut objects, mut bytes) = self.resume_journal(bucket, repo)?;
        let ev = self.evaluate(bucket, repo)?;
        if ev.horizon.is_frozen() {
            return Ok((objects, bytes));
        }
        let due = self.due_units(bucket, repo, &ev)?;
        for unit in due.into_iter().take(max_units) {
            let paths: Vec<String> = unit.paths().iter().map(|p| format!("{repo}{p}")).collect();
            let reason = match unit {
                Unit::Backup { reason, .. } | Unit::Wal { reason, .. } => reason.clone(),
            };
            let (o, b) = self.delete_unit(bucket, repo, JournalEntry { paths, next: 0 }, &reason)?;
            objects += o;
            bytes += b;
        }
        self.guard.cache.lock().remove(&(bucket.as_str().to_owned(), repo.to_owned()));
        Ok((objects, bytes))
    }

    /// `gc.delay`: the units that have been deletable in every evaluation for
    /// at least the policy's delay. Each path remembers when it first became a
    /// candidate (durably, next to the journal); a path that stops being a
    /// candidate forgets it, so a backup that is needed again starts over.
    fn due_units<'e>(&self, bucket: &BucketName, repo: &str, ev: &'e Evaluation) -> Result<Vec<&'e Unit>> {
        let delay = i64::try_from(ev.policy.policy.gc_delay.as_millis()).unwrap_or(i64::MAX);
        let pkey = pending_key(bucket, repo);
        let cf = self.index.cf(CF_JOURNAL)?;
        if delay == 0 {
            let mut batch = WriteBatch::default();
            batch.delete_cf(cf, &pkey);
            self.index.write(batch)?;
            return Ok(ev.horizon.deletable.iter().collect());
        }
        let since: HashMap<String, i64> = self.index.get_decoded(CF_JOURNAL, &pkey)?.unwrap_or_default();
        let now = Timestamp::now().as_millis();
        let mut next = HashMap::new();
        let mut due = Vec::new();
        for unit in &ev.horizon.deletable {
            let mut newest = i64::MIN;
            for p in unit.paths() {
                let t = since.get(p).copied().unwrap_or(now);
                newest = newest.max(t);
                next.insert(p.to_owned(), t);
            }
            if now.saturating_sub(newest) >= delay {
                due.push(unit);
            }
        }
        let mut batch = WriteBatch::default();
        if next.is_empty() {
            batch.delete_cf(cf, &pkey);
        } else {
            batch.put_cf(cf, &pkey, codec::encode(&next));
        }
        self.index.write(batch)?;
        Ok(due)
    }

    fn resume_journal(&self, bucket: &BucketName, repo: &str) -> Result<(u64, u64)> {
        match self.index.get_decoded::<JournalEntry>(CF_JOURNAL, &policy_key(bucket, repo))? {
            Some(j) => {
                tracing::info!(bucket = %bucket, repo, "resuming an interrupted retention deletion");
                self.delete_unit(bucket, repo, j, "resumed after a restart")
            }
            None => Ok((0, 0)),
        }
    }

    fn delete_unit(&self, bucket: &BucketName, repo: &str, mut j: JournalEntry, reason: &str) -> Result<(u64, u64)> {
        let jkey = policy_key(bucket, repo);
        let (mut objects, mut bytes) = (0, 0);
        while j.next < j.paths.len() {
            let key = ObjectKey::parse(&j.paths[j.next])?;
            j.next += 1;
            let _b = self.bucket_lock.read();
            let _k = self.key_locks.lock_all(&[object_lock(bucket, &key)]);
            let mut batch = WriteBatch::default();
            if j.next < j.paths.len() {
                batch.put_cf(self.index.cf(CF_JOURNAL)?, &jkey, codec::encode(&j));
            } else {
                batch.delete_cf(self.index.cf(CF_JOURNAL)?, &jkey);
            }
            if let Some(old) = self.entry(bucket, key.as_str())? {
                batch.delete_cf(self.index.cf(CF_OBJECTS)?, object_key(bucket, key.as_str()));
                self.unref(&mut batch, &old.blobs, Timestamp::now())?;
                self.audit_into(
                    &mut batch,
                    "retention-worker",
                    "retention-delete",
                    bucket.as_str(),
                    key.as_str(),
                    reason,
                )?;
                objects += 1;
                bytes += old.size;
                self.guard.stats.retention_deletions.fetch_add(1, Ordering::Relaxed);
            }
            self.commit(Vec::new(), batch)?;
        }
        Ok((objects, bytes))
    }
}

/// An unresolved quarantined conflict of a repository (input of the horizon).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenConflict {
    /// Quarantine record id.
    pub id: String,
    /// Path inside the repository the refused upload was for.
    pub path: String,
    /// A timeline history file (two nodes promoted to the same timeline).
    pub history: bool,
    /// When it was refused.
    pub time: Timestamp,
}

/// The bytes of a write being checked: staged (not yet stored) or already-stored blobs.
pub(crate) enum NewBytes<'a> {
    /// A staged single PUT.
    Staged(&'a crate::writer::StagedBlob),
    /// Blobs already stored (multipart parts, copy source).
    Stored { blobs: &'a [BlobRef], size: u64 },
}

impl NewBytes<'_> {
    fn same_as(&self, blobs: &[BlobRef]) -> bool {
        match self {
            NewBytes::Staged(s) => (s.size == 0 && blobs.is_empty()) || (blobs.len() == 1 && blobs[0].hash == s.hash),
            NewBytes::Stored { blobs: b, .. } => *b == blobs,
        }
    }

    fn bytes(&self, store: &Store) -> Result<Vec<u8>> {
        match self {
            NewBytes::Staged(s) => {
                if s.size as usize > MAX_COMPARE_BYTES {
                    return Err(Error::InvalidArgument("object too large to compare".into()));
                }
                match &s.body {
                    crate::writer::StagedBody::Inline(bytes) => Ok(bytes.to_vec()),
                    crate::writer::StagedBody::File(staging) => {
                        std::fs::read(staging.path()).map_err(|e| Error::io("reading a staged upload", e))
                    }
                }
            }
            NewBytes::Stored { blobs, size } => store.read_refs(blobs, *size),
        }
    }
}

fn plaintext_digest(codec: Codec, bytes: &[u8]) -> Option<[u8; 32]> {
    let plain = super::codec::decode(codec, bytes, MAX_COMPARE_BYTES).ok()?;
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
    /// Refuse without keeping the bytes (a sentinel for a backup without data).
    Refuse(String),
}
