//! The retention worker's deletions: the units an evaluation releases, deleted
//! in order (backups sentinel-first, then WAL oldest first), journaled so a
//! crash resumes the unit it was in, and `gc.delay` dwell times. On disk:
//! column family `journal`, `<bucket> 0x00 <prefix>` → the unit being deleted,
//! and `0xFF <bucket> 0x00 <prefix>` → when each candidate path first became
//! deletable.

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rocksdb::WriteBatch;
use serde::{Deserialize, Serialize};
use wal::horizon::Unit;

use std::sync::Arc;

use wal::horizon::Decision;

use crate::budget::Budget;
use crate::codec;
use crate::error::Result;
use crate::index::{object_key, CF_JOURNAL, CF_OBJECTS};
use crate::store::{object_lock, Store};
use crate::types::{BucketName, ObjectKey, Versioning};

use super::policies::policy_key;
use super::state::{Evaluation, RepoState};

/// WAL units deleted in one batch (one synced commit, one hold of the
/// repository's gate).
const WAL_BATCH: usize = 256;

/// What a retention run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RetentionOutcome {
    /// Objects deleted.
    pub objects: u64,
    /// Bytes of those objects.
    pub bytes: u64,
    /// Due units remain: the budget ran out first.
    pub more: bool,
    /// Released units left in place because a version in them is locked (Object
    /// Lock); they are deleted by a later run, once the locks expire.
    pub lock_waits: u64,
}

/// The evaluation a run's deletions are based on, and the repository
/// generation at which it still holds (the evaluation's own, plus the commits
/// this run made since).
struct Basis {
    ev: Arc<Evaluation>,
    expected: u64,
}

/// Progress of a unit deletion (crash resume).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct JournalEntry {
    paths: Vec<String>,
    next: usize,
}

/// Where `gc.delay` candidates of a repository are remembered (journal CF; the
/// leading 0xFF cannot start a bucket name, so it never meets a journal key).
fn pending_key(bucket: &BucketName, prefix: &str) -> Vec<u8> {
    let mut k = vec![0xFF];
    k.extend_from_slice(&object_key(bucket, prefix));
    k
}

impl Store {
    /// Deletes what the repository's policy releases: a fresh evaluation, then
    /// its due units in order (backups sentinel-first, then WAL oldest first),
    /// journaled so a crash resumes the unit it was in, until `budget` is spent.
    ///
    /// Every deletion starts under the repository's gate held exclusively,
    /// after checking that nothing was written since the evaluation (else the
    /// decision is taken again under the gate), so a `backup-mark` or a new
    /// sentinel can never race a deletion that it would have prevented.
    pub fn retention_run(&self, bucket: &BucketName, repo: &str, budget: &Budget) -> Result<RetentionOutcome> {
        let mut out = RetentionOutcome::default();
        // A recovery may be reading this repository through an as-of view: nothing
        // it could need is deleted until the view is dropped or expires.
        if self.retention_paused_by_view(bucket, repo)? {
            tracing::info!(bucket = %bucket, repo, "retention paused: an as-of view shows this repository");
            return Ok(out);
        }
        if !self.resume_journal(bucket, repo, budget, &mut out)? {
            out.more = true;
            return Ok(out);
        }
        let st = self.repo_state(bucket, repo);
        let ev = self.evaluate(bucket, repo)?;
        if ev.horizon.is_frozen() {
            return Ok(out);
        }
        let due: Vec<Unit> = self.due_units(bucket, repo, &ev)?.into_iter().cloned().collect();
        let mut basis = Basis { expected: ev.generation, ev };
        let (backups, wal): (Vec<&Unit>, Vec<&Unit>) = due.iter().partition(|u| matches!(u, Unit::Backup { .. }));
        for unit in backups {
            if budget.spent() {
                out.more = true;
                return Ok(out);
            }
            let Unit::Backup { paths, reason, .. } = unit else { continue };
            let keys: Vec<String> = paths.iter().map(|p| format!("{repo}{p}")).collect();
            if !self.delete_first_of_unit(bucket, repo, &st, &mut basis, &keys, reason, &mut out)? {
                continue;
            }
            let j = JournalEntry { paths: keys, next: 1 };
            let done = self.delete_journaled(bucket, repo, j, reason, budget, &mut basis.expected, &mut out)?;
            if !done {
                out.more = true;
                return Ok(out);
            }
        }
        for chunk in wal.chunks(WAL_BATCH) {
            if budget.spent() {
                out.more = true;
                return Ok(out);
            }
            self.delete_wal_batch(bucket, repo, &st, &mut basis, chunk, &mut out)?;
        }
        Ok(out)
    }

    /// Takes the basis again if a write or policy change landed since it was
    /// taken. Called with `st.gate` held exclusively, so the new evaluation is
    /// exact until the gate is released.
    fn revalidate(&self, bucket: &BucketName, repo: &str, st: &RepoState, basis: &mut Basis) -> Result<()> {
        let stale = st.generation.load(Ordering::SeqCst) != basis.expected
            || self.guard.policy_epoch.load(Ordering::SeqCst) != basis.ev.policy_epoch;
        if stale {
            let ev = self.evaluate(bucket, repo)?;
            basis.expected = ev.generation;
            basis.ev = ev;
        }
        Ok(())
    }

    /// Deletes the first object of a backup unit (its sentinel) and journals
    /// the rest, if the basis still releases every object of the unit. Returns
    /// false if the unit is no longer deletable.
    #[allow(clippy::too_many_arguments)]
    fn delete_first_of_unit(
        &self,
        bucket: &BucketName,
        repo: &str,
        st: &RepoState,
        basis: &mut Basis,
        keys: &[String],
        reason: &str,
        out: &mut RetentionOutcome,
    ) -> Result<bool> {
        let Some(first) = keys.first() else { return Ok(false) };
        let key = ObjectKey::parse(first)?;
        let _b = self.bucket_lock.read();
        let _k = self.key_locks.lock_all(&[object_lock(bucket, &key)]);
        let _g = st.gate.write();
        self.revalidate(bucket, repo, st, basis)?;
        let releases = |k: &String| basis.ev.horizon.decide(&k[repo.len()..]) == Decision::Allow;
        if basis.ev.horizon.is_frozen() || !keys.iter().all(releases) {
            return Ok(false);
        }
        // A backup is deleted whole or not at all: one locked file keeps all of it.
        if let Some(why) = self.lock_wait(bucket, keys)? {
            tracing::info!(bucket = %bucket, repo, "a released backup waits for its Object Lock: {why}");
            out.lock_waits += 1;
            return Ok(false);
        }
        let mut batch = WriteBatch::default();
        if keys.len() > 1 {
            let j = JournalEntry { paths: keys.to_vec(), next: 1 };
            batch.put_cf(self.index.cf(CF_JOURNAL)?, policy_key(bucket, repo), codec::encode(&j)?);
        }
        self.retention_delete_into(&mut batch, bucket, &key, reason, out)?;
        let r = self.commit(Vec::new(), batch);
        st.generation.fetch_add(1, Ordering::SeqCst);
        self.jobs.request(crate::jobs::EVALUATE);
        basis.expected += 1;
        r?;
        Ok(true)
    }

    /// Deletes a batch of WAL units in one commit, those the basis (taken
    /// again under the gate if stale) still releases.
    fn delete_wal_batch(
        &self,
        bucket: &BucketName,
        repo: &str,
        st: &RepoState,
        basis: &mut Basis,
        units: &[&Unit],
        out: &mut RetentionOutcome,
    ) -> Result<()> {
        let mut keys = Vec::with_capacity(units.len());
        for u in units {
            if let Unit::Wal { path, reason } = u {
                keys.push((ObjectKey::parse(&format!("{repo}{path}"))?, path.as_str(), reason.as_str()));
            }
        }
        let ids: Vec<u64> = keys.iter().map(|(k, _, _)| object_lock(bucket, k)).collect();
        let _b = self.bucket_lock.read();
        let _k = self.key_locks.lock_all(&ids);
        let _g = st.gate.write();
        self.revalidate(bucket, repo, st, basis)?;
        if basis.ev.horizon.is_frozen() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        for (key, path, reason) in &keys {
            if basis.ev.horizon.decide(path) == Decision::Allow {
                self.retention_delete_into(&mut batch, bucket, key, reason, out)?;
            }
        }
        if batch.is_empty() {
            return Ok(());
        }
        let r = self.commit(Vec::new(), batch);
        st.generation.fetch_add(1, Ordering::SeqCst);
        self.jobs.request(crate::jobs::EVALUATE);
        basis.expected += 1;
        r
    }

    /// The reason the first locked key of `keys` cannot be deleted now (buckets with
    /// Object Lock only; `None` elsewhere): what `retention plan` shows a unit waiting for.
    pub fn lock_wait(&self, bucket: &BucketName, keys: &[String]) -> Result<Option<String>> {
        let info = self.bucket(bucket)?;
        if info.object_lock.is_none() {
            return Ok(None);
        }
        let now = self.now();
        for k in keys {
            if let Some(why) = self.key_versions(&info, k)?.locked_reason(now) {
                return Ok(Some(format!("{k}: {why}")));
            }
        }
        Ok(None)
    }

    /// Adds the deletion of `key` (if it exists) with its audit record to `batch`.
    fn retention_delete_into(
        &self,
        batch: &mut WriteBatch,
        bucket: &BucketName,
        key: &ObjectKey,
        reason: &str,
        out: &mut RetentionOutcome,
    ) -> Result<()> {
        let info = self.bucket(bucket)?;
        if info.versioning != Versioning::Unversioned {
            // Every version goes, as WAL-G's own delete does on a versioned bucket; a
            // locked one keeps the key whole until a later run.
            let now = self.now();
            let mut kv = self.key_versions(&info, key.as_str())?;
            if kv.len() == 0 {
                return Ok(());
            }
            if kv.locked_reason(now).is_some() {
                out.lock_waits += 1;
                return Ok(());
            }
            let size = kv.delete_all(now)?;
            kv.flush(self, batch, now)?;
            self.audit_into(batch, "retention-worker", "retention-delete", bucket.as_str(), key.as_str(), reason)?;
            out.objects += 1;
            out.bytes += size;
            self.guard.stats.retention_deletions.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        if let Some(old) = self.entry(bucket, key.as_str())? {
            batch.delete_cf(self.index.cf(CF_OBJECTS)?, object_key(bucket, key.as_str()));
            self.unref(batch, &old.blobs, self.now())?;
            self.audit_into(batch, "retention-worker", "retention-delete", bucket.as_str(), key.as_str(), reason)?;
            out.objects += 1;
            out.bytes += old.size;
            self.guard.stats.retention_deletions.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
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
        let now = self.now().as_millis();
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
            batch.put_cf(cf, &pkey, codec::encode(&next)?);
        }
        self.index.write(batch)?;
        Ok(due)
    }

    /// Finishes a unit a crash (or a stop) left half-deleted. Returns false if
    /// the budget ran out before it was done.
    fn resume_journal(
        &self,
        bucket: &BucketName,
        repo: &str,
        budget: &Budget,
        out: &mut RetentionOutcome,
    ) -> Result<bool> {
        match self.index.get_decoded::<JournalEntry>(CF_JOURNAL, &policy_key(bucket, repo))? {
            Some(j) => {
                tracing::info!(bucket = %bucket, repo, "resuming an interrupted retention deletion");
                let mut commits = 0;
                self.delete_journaled(bucket, repo, j, "resumed after a restart", budget, &mut commits, out)
            }
            None => Ok(true),
        }
    }

    /// Deletes the journaled unit's objects from `j.next` on, one commit each
    /// with the journal's progress. Once a unit's sentinel is gone the backup
    /// cannot be restored, so the rest goes whatever was written meanwhile.
    /// Returns false if the budget ran out first (the journal resumes it).
    #[allow(clippy::too_many_arguments)]
    fn delete_journaled(
        &self,
        bucket: &BucketName,
        repo: &str,
        mut j: JournalEntry,
        reason: &str,
        budget: &Budget,
        commits: &mut u64,
        out: &mut RetentionOutcome,
    ) -> Result<bool> {
        let jkey = policy_key(bucket, repo);
        while j.next < j.paths.len() {
            if budget.stopped() {
                return Ok(false);
            }
            let key = ObjectKey::parse(&j.paths[j.next])?;
            j.next += 1;
            let _b = self.bucket_lock.read();
            let _k = self.key_locks.lock_all(&[object_lock(bucket, &key)]);
            let mut batch = WriteBatch::default();
            if j.next < j.paths.len() {
                batch.put_cf(self.index.cf(CF_JOURNAL)?, &jkey, codec::encode(&j)?);
            } else {
                batch.delete_cf(self.index.cf(CF_JOURNAL)?, &jkey);
            }
            self.retention_delete_into(&mut batch, bucket, &key, reason, out)?;
            self.repo_write(bucket, key.as_str(), || self.commit(Vec::new(), batch))?;
            *commits += 1;
        }
        Ok(true)
    }
}
