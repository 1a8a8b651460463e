//! Per-repository write generations and gates (see [`RepoState`]): every
//! write or delete of a key inside a WAL-G repository runs through
//! [`Store::repo_write`]; a delete decided by the horizon validates its
//! decision with [`Store::repo_gates`].

use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::RwLockWriteGuard;
use wal::names::split_repo;

use crate::error::Result;
use crate::locks::{Held, OrderedRwLock};
use crate::store::Store;
use crate::types::BucketName;

use super::state::{RepoId, RepoState};

/// Exclusive holds on the gates of several repositories, in ascending
/// repository order (the only order in which more than one is ever taken).
pub(crate) struct Gates<'a> {
    states: &'a [Arc<RepoState>],
    _held: Held<Vec<RwLockWriteGuard<'a, ()>>>,
}

impl Gates<'_> {
    /// Notes one committed change in each held repository.
    pub(crate) fn bump_all(&self) {
        for st in self.states {
            st.generation.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// True if no repository is held (the keys were outside every repository).
    pub(crate) fn is_empty(&self) -> bool {
        self.states.is_empty()
    }
}

impl Store {
    /// The tracked state of a repository (created on first use, never removed:
    /// a writer and a deleter of one repository must always meet in the same one).
    pub(crate) fn repo_state(&self, bucket: &BucketName, repo: &str) -> Arc<RepoState> {
        let id: RepoId = (bucket.as_str().to_owned(), repo.to_owned());
        self.guard.repos.lock().entry(id).or_default().clone()
    }

    /// The states of the repositories that `keys` fall into, in ascending
    /// repository order, each once.
    pub(crate) fn repo_states_of<'k>(
        &self,
        bucket: &BucketName,
        keys: impl IntoIterator<Item = &'k str>,
    ) -> Vec<Arc<RepoState>> {
        let mut repos: Vec<&str> = keys.into_iter().filter_map(|k| split_repo(k).map(|(r, _)| r)).collect();
        repos.sort_unstable();
        repos.dedup();
        repos.into_iter().map(|r| self.repo_state(bucket, r)).collect()
    }

    /// Runs `commit`, a write or delete of `key`, as a change of the WAL-G
    /// repository the key belongs to (if any): the repository's gate is held
    /// shared around it and its generation is bumped after it, so a delete
    /// decided on an older snapshot of the repository notices (see
    /// [`RepoState`]). Keys outside any repository just run `commit`.
    pub(crate) fn repo_write<T>(
        &self,
        bucket: &BucketName,
        key: &str,
        commit: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let Some((repo, _)) = split_repo(key) else { return commit() };
        let st = self.repo_state(bucket, repo);
        let _shared = st.gate.read();
        let r = commit();
        // Also after a failed commit: a spurious bump costs a re-evaluation,
        // a missing one could cost a backup.
        st.generation.fetch_add(1, Ordering::SeqCst);
        // The metrics follow the change within about a second, not at the
        // next periodic evaluation.
        self.jobs.request(crate::jobs::EVALUATE);
        r
    }

    /// Holds the gates of `states` exclusively: no write into those
    /// repositories can commit until the returned value is dropped.
    pub(crate) fn repo_gates<'a>(&self, states: &'a [Arc<RepoState>]) -> Gates<'a> {
        Gates { states, _held: OrderedRwLock::write_all(states.iter().map(|st| &st.gate)) }
    }
}
