//! The identity check: every upload that says which cluster wrote it (a WAL segment's
//! first page, a backup's stop sentinel or `metadata.json`) is compared with the identity
//! of its repository (system identifier, PostgreSQL major version, segment size; see
//! `wal::identity`), learned from the first such upload and stored in the index. A
//! mismatch is refused and quarantined (`enforce`), or counted and logged (`warn`), per
//! the repository's policy ([`IdentityCheck`]).
//!
//! A completed backup (its stop sentinel is stored) is also closed to writes: another
//! cluster's `backup-push` that happens to pick the same backup name (two fresh clusters
//! start at the same LSNs) would otherwise replace its tar parts one by one before the
//! sentinel's identity is ever checked. WAL-G itself only rewrites `metadata.json` of a
//! finished backup (`backup-mark`), which must name its own sentinel's system identifier;
//! keys the backup does not have are accepted for [`COMPLETED_GRACE`] after the sentinel
//! (copy tools may send it first).
//!
//! On disk: `meta` `identity/<bucket> 0x00 <repository prefix>` → [`IdentityRecord`],
//! written in the batch of the object that taught it, with an audit record.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::MutexGuard;
use rocksdb::WriteBatch;
use wal::identity::{check, major_name, ConflictKind, Evidence, Identity, Outcome, Subject};
use wal::names::{WalObject, BACKUP_DIR};

use crate::codec;
use crate::error::{Error, Result};
use crate::index::{prefix_end, CF_META};
use crate::store::Store;
use crate::types::{BlobRef, BucketName, ObjectKey};

use super::state::{
    IdentityCheck, IdentityCounters, IdentityRecord, RepoId, RepoIdentityStats, StoredPolicy, LEARNING_STRIPES,
};

/// Largest object whose plaintext the split-brain guard decodes for comparison.
pub(crate) const MAX_COMPARE_BYTES: usize = 64 << 20;

/// How long after its stop sentinel a completed backup still accepts objects it does not
/// have yet (never other bytes under a key it has).
pub const COMPLETED_GRACE: std::time::Duration = std::time::Duration::from_secs(3600);

/// How every refusal of the identity check begins (quarantine records are told apart by it).
pub(crate) const IDENTITY_CONFLICT: &str = "identity-conflict";

/// `meta` key prefix of repository identities.
const IDENTITY_PREFIX: &[u8] = b"identity/";

fn identity_key(bucket: &str, repo: &str) -> Vec<u8> {
    let mut k = IDENTITY_PREFIX.to_vec();
    k.extend_from_slice(bucket.as_bytes());
    k.push(0);
    k.extend_from_slice(repo.as_bytes());
    k
}

/// Kinds of refused (or, under `warn`, reported) uploads: those of `wal::identity`, and
/// a write into a completed backup.
pub const CONFLICT_KINDS: [&str; 5] =
    ["system_identifier", "pg_version", "segment_size", "segment_name", "completed_backup"];

fn kind_index(kind: ConflictKind) -> usize {
    ConflictKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
}

/// An identity an accepted upload teaches: written in the upload's own batch
/// ([`Learned::write_into`]), cached once committed ([`Learned::committed`]). Holds the
/// learning lock until dropped.
pub(crate) struct Learned<'a> {
    id: RepoId,
    record: IdentityRecord,
    _hold: MutexGuard<'a, ()>,
}

impl Learned<'_> {
    /// Adds the identity (and its audit record) to the upload's batch.
    pub(crate) fn write_into(&self, store: &Store, batch: &mut WriteBatch, actor: &str) -> Result<()> {
        batch.put_cf(store.index.cf(CF_META)?, identity_key(&self.id.0, &self.id.1), codec::encode(&self.record)?);
        store.audit_into(
            batch,
            actor,
            "identity-learned",
            &self.id.0,
            &self.record.learned_from,
            &describe(&self.record.identity),
        )
    }

    /// The batch is committed: later uploads are checked against this identity.
    pub(crate) fn committed(self, store: &Store) {
        store.guard.identity.counters.learned.fetch_add(1, Ordering::Relaxed);
        tracing::info!(bucket = %self.id.0, repo = %self.id.1, learned_from = %self.record.learned_from,
            "repository identity: {}", describe(&self.record.identity));
        store.guard.identity.known.lock().insert(self.id, Arc::new(self.record));
    }
}

/// One line for logs and audit records.
pub fn describe(i: &Identity) -> String {
    let mut s = format!("system identifier {}", i.system_identifier);
    if let Some(v) = i.pg_major {
        s.push_str(&format!(", PostgreSQL {}", major_name(v)));
    }
    if let Some(b) = i.segment_size {
        s.push_str(&format!(", {} MiB WAL segments", b >> 20));
    }
    s
}

impl Store {
    /// The identity of a repository, if one was learned.
    pub fn repo_identity(&self, bucket: &BucketName, repo: &str) -> Result<Option<IdentityRecord>> {
        Ok(self.identity_cached(bucket.as_str(), repo)?.map(|r| (*r).clone()))
    }

    /// What the identity check saw in a repository since the server started.
    pub fn repo_identity_stats(&self, bucket: &BucketName, repo: &str) -> RepoIdentityStats {
        let id = (bucket.as_str().to_owned(), repo.to_owned());
        self.guard.identity.stats.lock().get(&id).cloned().unwrap_or_default()
    }

    /// The identity check's counters.
    pub fn identity_counters(&self) -> &IdentityCounters {
        &self.guard.identity.counters
    }

    /// Forgets a repository's identity (audited with `reason`): the next upload that
    /// carries one teaches it again. For a repository reused on purpose (after
    /// `pg_upgrade`, or for a new cluster once the old one's backups are gone).
    /// Quarantined conflicts stay until resolved.
    pub fn reset_identity(&self, bucket: &BucketName, repo: &str, actor: &str, reason: &str) -> Result<IdentityRecord> {
        self.bucket(bucket)?;
        let _hold = self.learning_lock(bucket.as_str(), repo);
        let key = identity_key(bucket.as_str(), repo);
        let old: IdentityRecord = self.index.get_decoded(CF_META, &key)?.ok_or_else(|| {
            Error::InvalidArgument(format!("no identity is known for repository {}/{repo}", bucket.as_str()))
        })?;
        let mut batch = WriteBatch::default();
        batch.delete_cf(self.index.cf(CF_META)?, &key);
        let detail =
            format!("forgot {} (learned from {}); reason: {reason}", describe(&old.identity), old.learned_from);
        self.audit_into(&mut batch, actor, "identity-reset", bucket.as_str(), repo, &detail)?;
        self.index.write(batch)?;
        let id = (bucket.as_str().to_owned(), repo.to_owned());
        self.guard.identity.known.lock().remove(&id);
        self.guard.identity.stats.lock().remove(&id);
        tracing::warn!(bucket = %bucket, repo, actor, reason, "repository identity reset: {}", describe(&old.identity));
        Ok(old)
    }

    /// Every stored identity of a bucket: (repository prefix, record).
    pub fn repo_identities(&self, bucket: &BucketName) -> Result<Vec<(String, IdentityRecord)>> {
        let start = identity_key(bucket.as_str(), "");
        let mut out = Vec::new();
        for item in self.index.range(CF_META, &start, prefix_end(&start))? {
            let (k, v) = item?;
            out.push((String::from_utf8_lossy(&k[start.len()..]).into_owned(), codec::decode(&v, CF_META)?));
        }
        Ok(out)
    }

    /// Drops the identities of a bucket's repositories (the bucket is being deleted).
    pub(crate) fn drop_identities_into(&self, batch: &mut WriteBatch, bucket: &BucketName) -> Result<()> {
        let start = identity_key(bucket.as_str(), "");
        for item in self.index.range(CF_META, &start, prefix_end(&start))? {
            batch.delete_cf(self.index.cf(CF_META)?, item?.0);
        }
        self.guard.identity.known.lock().retain(|(b, _), _| b != bucket.as_str());
        Ok(())
    }

    /// The learning stripe of a repository.
    fn learning_lock(&self, bucket: &str, repo: &str) -> MutexGuard<'_, ()> {
        let stripe = crate::locks::lock_id(&(bucket, repo)) as usize % LEARNING_STRIPES;
        self.guard.identity.learning[stripe].lock()
    }

    fn identity_cached(&self, bucket: &str, repo: &str) -> Result<Option<Arc<IdentityRecord>>> {
        let id = (bucket.to_owned(), repo.to_owned());
        // Held across the read on a miss: a reset (which removes the entry after its write)
        // then cannot be undone by a read that started before it.
        let mut known = self.guard.identity.known.lock();
        if let Some(r) = known.get(&id) {
            return Ok(Some(r.clone()));
        }
        let Some(rec) = self.index.get_decoded::<IdentityRecord>(CF_META, &identity_key(bucket, repo))? else {
            return Ok(None);
        };
        let rec = Arc::new(rec);
        known.insert(id, rec.clone());
        Ok(Some(rec))
    }

    /// The identity check of a write of `new` under `key` (called with the key's locks
    /// held, before the split-brain guard): `Some(reason)` refuses it (and the caller
    /// quarantines the bytes); the [`Learned`] identity, if any, goes into the write's batch.
    pub(crate) fn identity_verdict<'a>(
        &'a self,
        bucket: &BucketName,
        repo: &str,
        key: &ObjectKey,
        class: &WalObject,
        policy: &StoredPolicy,
        new: &NewBytes<'_>,
    ) -> Result<(Option<String>, Option<Learned<'a>>)> {
        let mode = policy.identity_check.unwrap_or_default();
        if mode == IdentityCheck::Off {
            return Ok((None, None));
        }
        if let Some(reason) = self.completed_backup_write(bucket, repo, key, class, new)? {
            return Ok((self.conflict(bucket, repo, key, mode, 4, reason), None));
        }
        let Some(subject) = Subject::of(class) else { return Ok((None, None)) };
        let (body, complete) = new.prefix(self, subject.bytes_needed())?;
        let ev = Evidence::read(&subject, &body, complete);
        if let Evidence::Segment { unknown_magic: Some(m), .. } = &ev {
            self.guard.identity.counters.unknown_version.fetch_add(1, Ordering::Relaxed);
            tracing::info!(bucket = %bucket, key = %key, "WAL page magic {m:#06X} names no PostgreSQL version walstore knows; checking the rest of the header");
        }
        if let (Subject::Metadata, Evidence::Document { identity }) = (&subject, &ev) {
            // `backup-mark` of a completed backup: it belongs to the cluster its sentinel
            // names (also after a reset-identity, for the backups of the cluster before).
            if let Some(theirs) = self.sentinel_identity(bucket, repo, class)? {
                if theirs.system_identifier == identity.system_identifier {
                    self.guard.identity.counters.verified.fetch_add(1, Ordering::Relaxed);
                    return Ok((None, None));
                }
                let reason = format!(
                    "identity-conflict: {} {key} does not belong to backup {}: system identifier {} received, its stop \
                     sentinel says {}",
                    subject.what(),
                    class.backup().map(|b| b.as_str()).unwrap_or_default(),
                    identity.system_identifier,
                    theirs.system_identifier
                );
                return Ok((self.conflict(bucket, repo, key, mode, 0, reason), None));
            }
        }
        let size = policy.policy.segment_size;
        let known = self.identity_cached(bucket.as_str(), repo)?;
        let mut outcome = check(known.as_ref().map(|r| &r.identity), size, &ev);
        let mut hold = None;
        if let Outcome::Learn(_) = outcome {
            // Decide again under the lock, against the stored identity: another first
            // upload may have taught one meanwhile.
            let h = self.learning_lock(bucket.as_str(), repo);
            let id = (bucket.as_str().to_owned(), repo.to_owned());
            self.guard.identity.known.lock().remove(&id);
            let fresh = self.identity_cached(bucket.as_str(), repo)?;
            outcome = check(fresh.as_ref().map(|r| &r.identity), size, &ev);
            hold = Some((h, fresh));
        }
        let repo_id = || (bucket.as_str().to_owned(), repo.to_owned());
        match outcome {
            Outcome::Verified => {
                self.guard.identity.counters.verified.fetch_add(1, Ordering::Relaxed);
                self.guard.identity.stats.lock().entry(repo_id()).or_default().verified += 1;
                Ok((None, None))
            }
            Outcome::Silent => Ok((None, None)),
            Outcome::Opaque(why) => {
                self.guard.identity.counters.opaque.fetch_add(1, Ordering::Relaxed);
                let mut stats = self.guard.identity.stats.lock();
                let s = stats.entry(repo_id()).or_default();
                s.opaque += 1;
                s.last_opaque = Some(format!("{key}: {why}"));
                Ok((None, None))
            }
            Outcome::Learn(identity) => {
                let Some((h, fresh)) = hold else { return Ok((None, None)) };
                let record = match fresh {
                    // Completing a known identity keeps where it was learned.
                    Some(old) => IdentityRecord { identity, ..(*old).clone() },
                    None => IdentityRecord { identity, learned_from: key.as_str().to_owned(), learned_at: self.now() },
                };
                Ok((None, Some(Learned { id: repo_id(), record, _hold: h })))
            }
            Outcome::Conflict(c) => {
                let known = hold.map(|(_, f)| f).unwrap_or(known);
                let source = match (&known, c.kind) {
                    (Some(r), ConflictKind::SystemIdentifier | ConflictKind::PgVersion | ConflictKind::SegmentSize) => {
                        format!(" (learned from {})", r.learned_from)
                    }
                    _ => String::new(),
                };
                let reason = format!(
                    "identity-conflict: {} {key} does not belong to repository {}/{repo}: {c}{source}",
                    subject.what(),
                    bucket.as_str(),
                );
                Ok((self.conflict(bucket, repo, key, mode, kind_index(c.kind), reason), None))
            }
        }
    }

    /// Counts and reports a conflict; under `enforce` the reason the upload is refused.
    fn conflict(
        &self,
        bucket: &BucketName,
        repo: &str,
        key: &ObjectKey,
        mode: IdentityCheck,
        kind: usize,
        reason: String,
    ) -> Option<String> {
        self.guard.identity.counters.conflicts[kind].fetch_add(1, Ordering::Relaxed);
        {
            let mut stats = self.guard.identity.stats.lock();
            let s = stats.entry((bucket.as_str().to_owned(), repo.to_owned())).or_default();
            s.conflicts += 1;
            s.last_conflict = Some((self.now(), reason.clone()));
        }
        match mode {
            IdentityCheck::Enforce => Some(format!(
                "{reason}; refusing the upload, its bytes are quarantined (walstore quarantine list). If the \
                 repository is reused on purpose (pg_upgrade, a new cluster), run `walstore repo reset-identity {}/{repo}`",
                bucket.as_str()
            )),
            _ => {
                tracing::warn!(bucket = %bucket, key = %key, "{reason} (identity check: warn; accepted)");
                None
            }
        }
    }

    /// The stored stop sentinel of the backup `class` belongs to, if the backup is complete.
    fn stored_sentinel(
        &self,
        bucket: &BucketName,
        repo: &str,
        class: &WalObject,
    ) -> Result<Option<crate::index::ObjectEntry>> {
        let Some(name) = class.backup() else { return Ok(None) };
        self.entry(bucket, &format!("{repo}{BACKUP_DIR}{}_backup_stop_sentinel.json", name.as_str()))
    }

    /// The identity the stored stop sentinel of a completed backup names, if it names one.
    fn sentinel_identity(&self, bucket: &BucketName, repo: &str, class: &WalObject) -> Result<Option<Identity>> {
        let Some(e) = self.stored_sentinel(bucket, repo, class)? else { return Ok(None) };
        if e.size as usize > wal::identity::MAX_DOCUMENT {
            return Ok(None);
        }
        let bytes = match self.read_refs(&e.blobs, e.size) {
            Ok(b) => b,
            Err(err @ Error::RemoteUnavailable(_)) => return Err(err),
            Err(_) => return Ok(None),
        };
        Ok(match Evidence::read(&Subject::Sentinel, &bytes, true) {
            Evidence::Document { identity } => Some(identity),
            _ => None,
        })
    }

    /// Why a write into a completed backup's folder (or of its sentinel) is refused, if it
    /// is: other bytes under a key it has, or a new key more than [`COMPLETED_GRACE`] after
    /// the sentinel arrived. `metadata.json` is checked against the sentinel instead.
    fn completed_backup_write(
        &self,
        bucket: &BucketName,
        repo: &str,
        key: &ObjectKey,
        class: &WalObject,
        new: &NewBytes<'_>,
    ) -> Result<Option<String>> {
        let Some(name) = class.backup() else { return Ok(None) };
        if matches!(class, WalObject::BackupMeta(_)) {
            return Ok(None);
        }
        let Some(sentinel) = self.stored_sentinel(bucket, repo, class)? else { return Ok(None) };
        match self.entry(bucket, key.as_str())? {
            Some(existing) if new.same_as(&existing.blobs) => return Ok(None),
            Some(_) => {}
            None => {
                // A copy tool that writes the sentinel before the parts (`wal-g copy` lists
                // breadth-first, eight uploads at a time; a parallel sync) fills it in now.
                let age = self.now().as_millis().saturating_sub(sentinel.last_modified.as_millis());
                if age < COMPLETED_GRACE.as_millis() as i64 {
                    return Ok(None);
                }
            }
        }
        Ok(Some(format!(
            "identity-conflict: backup {} in repository {}/{repo} is complete (its stop sentinel is stored) and \
             cannot change: refusing {key} (another cluster writing a backup of the same name?)",
            name.as_str(),
            bucket.as_str()
        )))
    }
}

/// The bytes of a write being checked: staged (not yet stored) or already-stored blobs.
pub(crate) enum NewBytes<'a> {
    /// A staged single PUT.
    Staged(&'a crate::writer::StagedBlob),
    /// Blobs already stored (multipart parts, copy source).
    Stored { blobs: &'a [BlobRef], size: u64 },
}

impl NewBytes<'_> {
    pub(crate) fn same_as(&self, blobs: &[BlobRef]) -> bool {
        match self {
            NewBytes::Staged(s) => (s.size == 0 && blobs.is_empty()) || (blobs.len() == 1 && blobs[0].hash == s.hash),
            NewBytes::Stored { blobs: b, .. } => *b == blobs,
        }
    }

    /// The first `n` bytes (fewer if the body is shorter), and whether that is all of it.
    pub(crate) fn prefix(&self, store: &Store, n: usize) -> Result<(Vec<u8>, bool)> {
        let mut out = Vec::new();
        let total = match self {
            NewBytes::Staged(s) => {
                match &s.body {
                    crate::writer::StagedBody::Inline(bytes) => out.extend_from_slice(&bytes[..bytes.len().min(n)]),
                    crate::writer::StagedBody::File(staging) => {
                        use std::io::Read;
                        let f =
                            std::fs::File::open(staging.path()).map_err(|e| Error::io("reading a staged upload", e))?;
                        f.take(n as u64).read_to_end(&mut out).map_err(|e| Error::io("reading a staged upload", e))?;
                    }
                }
                s.size
            }
            NewBytes::Stored { blobs, size } => {
                for b in blobs.iter() {
                    if out.len() >= n {
                        break;
                    }
                    let want = (n - out.len()).min(b.size as usize) as u64;
                    let mut r = store.read_blob(b, 0..want)?;
                    while let Some(c) = r.next_chunk()? {
                        out.extend_from_slice(&c);
                    }
                }
                *size
            }
        };
        out.truncate(n);
        let complete = out.len() as u64 == total;
        Ok((out, complete))
    }

    pub(crate) fn bytes(&self, store: &Store) -> Result<Vec<u8>> {
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
