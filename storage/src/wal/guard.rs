//! The delete guard: evaluations of a repository (a snapshot of its catalog
//! through the pure horizon), cached per repository and invalidated by its
//! write generation, and the decision for client deletes, which the caller
//! validates against those generations while the deletes commit (see
//! [`DeletePlan`]).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use wal::horizon::{compute, Decision};
use wal::names::{classify, split_repo};
use wal::policy::DeleteProtection;

use crate::error::Result;
use crate::store::Store;
use crate::types::{BucketName, ObjectKey};

use super::state::{Evaluation, RefusedDelete, RepoState, WalGuard};

/// How long a cached evaluation is used before a fresh snapshot is taken, even
/// without writes: the horizon depends on the time (windows move, grace
/// periods end), and a stale answer only ever keeps more than needed.
const REFRESH: Duration = Duration::from_secs(30);
/// Refused deletes remembered for the status report.
const REFUSED_KEPT: usize = 200;

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

/// The guard's decision for a set of deletes of one bucket, and what it was
/// based on. It holds only while nothing was written into the repositories it
/// looked at since: check [`DeletePlan::still_valid`] while holding those
/// repositories' gates exclusively, and commit under the same hold.
pub(crate) struct DeletePlan {
    /// Per key: `None` = may be deleted, `Some(reason)` = refused.
    pub(crate) refusals: Vec<Option<String>>,
    /// The repositories whose evaluation decided, with the generation each
    /// evaluation saw.
    basis: Vec<(Arc<RepoState>, u64)>,
    /// Policy epoch when the plan was made.
    policy_epoch: u64,
}

impl DeletePlan {
    /// True if no write and no policy change happened since the plan was made.
    pub(crate) fn still_valid(&self, guard: &WalGuard) -> bool {
        guard.policy_epoch.load(Ordering::SeqCst) == self.policy_epoch
            && self.basis.iter().all(|(st, g)| st.generation.load(Ordering::SeqCst) == *g)
    }
}

impl Store {
    /// The guard (policies, counters, refused deletes).
    pub fn wal_guard(&self) -> &WalGuard {
        &self.guard
    }

    /// Evaluates a repository now (fresh snapshot) and caches the result.
    /// Evaluations of one repository take turns; different repositories are
    /// evaluated in parallel.
    pub fn evaluate(&self, bucket: &BucketName, repo: &str) -> Result<Arc<Evaluation>> {
        let st = self.repo_state(bucket, repo);
        let _one = st.evaluating.lock();
        self.evaluate_locked(bucket, repo, &st)
    }

    /// The cached evaluation if it still describes the repository (no write,
    /// no policy change, younger than [`REFRESH`]), else a new one.
    pub fn evaluation(&self, bucket: &BucketName, repo: &str) -> Result<Arc<Evaluation>> {
        let st = self.repo_state(bucket, repo);
        if let Some(ev) = self.fresh(&st) {
            return Ok(ev);
        }
        let _one = st.evaluating.lock();
        // Whoever held the lock before may just have computed it.
        if let Some(ev) = self.fresh(&st) {
            return Ok(ev);
        }
        self.evaluate_locked(bucket, repo, &st)
    }

    /// Evaluates the repository if it changed (a write, a policy change) since
    /// its last evaluation, or was never evaluated; else returns that one.
    pub fn refresh_evaluation(&self, bucket: &BucketName, repo: &str) -> Result<Arc<Evaluation>> {
        let st = self.repo_state(bucket, repo);
        let _one = st.evaluating.lock();
        if let Some(ev) = st.last.lock().clone() {
            if ev.generation == st.generation.load(Ordering::SeqCst)
                && ev.policy_epoch == self.guard.policy_epoch.load(Ordering::SeqCst)
            {
                return Ok(ev);
            }
        }
        self.evaluate_locked(bucket, repo, &st)
    }

    /// The last evaluation of every repository the retention worker found in
    /// its last pass, by bucket and prefix. Never computes one: `/metrics`
    /// and status pages read this, however often they are asked.
    pub fn last_evaluations(&self) -> Vec<Arc<Evaluation>> {
        let listed = self.guard.listed.lock().clone();
        let repos = self.guard.repos.lock();
        listed.iter().filter_map(|id| repos.get(id)).filter_map(|st| st.last.lock().clone()).collect()
    }

    /// Records the repositories a pass over all buckets found (see
    /// [`Store::last_evaluations`]).
    pub(crate) fn set_listed_repositories(&self, mut ids: Vec<(String, String)>) {
        ids.sort();
        *self.guard.listed.lock() = ids;
    }

    fn fresh(&self, st: &RepoState) -> Option<Arc<Evaluation>> {
        let ev = st.last.lock().clone()?;
        let age = self.now().as_millis().saturating_sub(ev.at.as_millis());
        let current = ev.generation == st.generation.load(Ordering::SeqCst)
            && ev.policy_epoch == self.guard.policy_epoch.load(Ordering::SeqCst)
            && (0..REFRESH.as_millis() as i64).contains(&age);
        current.then_some(ev)
    }

    /// Called with `st.evaluating` held.
    fn evaluate_locked(&self, bucket: &BucketName, repo: &str, st: &RepoState) -> Result<Arc<Evaluation>> {
        // Both counters are read before anything they guard: a write or policy
        // change that the snapshot may have missed bumps them after.
        let policy_epoch = self.guard.policy_epoch.load(Ordering::SeqCst);
        let generation = st.generation.load(Ordering::SeqCst);
        let policy = self.policy_for(bucket, repo)?;
        let mut snap = self.wal_snapshot(bucket, repo)?;
        snap.conflicts = self.open_conflicts(bucket, repo)?;
        let now = self.now();
        let last = st.last_pass.lock().replace(now);
        let horizon = compute(&snap, &policy.policy, now.to_system(), last);
        for f in &horizon.frozen {
            tracing::warn!(bucket = %bucket, repo, reason = %f, "retention frozen");
        }
        let ev = Arc::new(Evaluation {
            bucket: bucket.clone(),
            prefix: repo.to_owned(),
            policy,
            horizon,
            at: now,
            generation,
            policy_epoch,
        });
        *st.last.lock() = Some(ev.clone());
        Ok(ev)
    }

    /// Decides, per key, whether a delete may proceed or is refused. Keys of
    /// one backup in one request share one decision, so no backup is ever
    /// half-deleted by a batch. Takes no lock but the evaluations' own; may
    /// evaluate repositories.
    pub(crate) fn plan_deletes(
        &self,
        bucket: &BucketName,
        keys: &[ObjectKey],
        who: DeleteAuth<'_>,
    ) -> Result<DeletePlan> {
        let policy_epoch = self.guard.policy_epoch.load(Ordering::SeqCst);
        let mut plan = DeletePlan { refusals: vec![None; keys.len()], basis: Vec::new(), policy_epoch };
        if let DeleteAuth::Override { .. } = who {
            return Ok(plan);
        }
        let mut evaluations: HashMap<&str, Arc<Evaluation>> = HashMap::new();
        let mut backup_denied: HashMap<(String, String), String> = HashMap::new();
        for (i, k) in keys.iter().enumerate() {
            let Some((repo, path)) = split_repo(k.as_str()) else { continue };
            let p = self.policy_for(bucket, repo)?;
            let decision = match p.policy.protection {
                DeleteProtection::Allow => Decision::Allow,
                DeleteProtection::DenyAll => Decision::Deny("delete protection of this bucket is deny-all".into()),
                DeleteProtection::ProtectRequired => {
                    let ev = match evaluations.get(repo) {
                        Some(ev) => ev.clone(),
                        None => {
                            let ev = self.evaluation(bucket, repo)?;
                            plan.basis.push((self.repo_state(bucket, repo), ev.generation));
                            evaluations.insert(repo, ev.clone());
                            ev
                        }
                    };
                    ev.horizon.decide(path)
                }
            };
            if let Decision::Deny(why) = decision {
                if let Some(b) = classify(path).backup() {
                    backup_denied.insert((repo.to_owned(), b.to_string()), why.clone());
                }
                plan.refusals[i] = Some(why);
            }
        }
        for (i, k) in keys.iter().enumerate() {
            if plan.refusals[i].is_some() {
                continue;
            }
            if let Some((repo, path)) = split_repo(k.as_str()) {
                if let Some(b) = classify(path).backup() {
                    if let Some(why) = backup_denied.get(&(repo.to_owned(), b.to_string())) {
                        plan.refusals[i] =
                            Some(format!("another object of backup {b} in this request is protected: {why}"));
                    }
                }
            }
        }
        // An evaluation above may have used a policy newer than `policy_epoch`:
        // then the epoch moved, and the plan is not valid (the caller retries).
        Ok(plan)
    }

    pub(crate) fn note_refused(&self, bucket: &BucketName, key: &str, principal: &str, reason: &str) {
        self.guard.stats.refused_deletes.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(bucket = %bucket, key, principal, reason, "delete refused by retention protection");
        let mut q = self.guard.refused.lock();
        if q.len() >= REFUSED_KEPT {
            q.pop_front();
        }
        q.push_back(RefusedDelete {
            time: self.now(),
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
}
