//! The WAL guard's in-memory state, held by the store: the default policy,
//! cached evaluations with the write generation of each repository, the
//! refused deletes kept for the status report, and counters. The logic that
//! reads and changes it is in [`super::guard`]; this module knows nothing of
//! the store, so the store can hold it without a cycle.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use wal::horizon::Horizon;
use wal::policy::RetentionPolicy;
use wal::Identity;

use crate::locks::OrderedRwLock;
use crate::types::{BucketName, Timestamp};

/// A stored policy. On disk (see `super::policies`): the retention policy and the
/// split-brain switch as written since the first release, then, only when it is not
/// the default, a trailer with the identity check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPolicy {
    /// The policy.
    pub policy: RetentionPolicy,
    /// Refuse a different upload for an existing WAL segment or history file.
    pub split_brain_guard: bool,
    /// What happens to an upload from another cluster (see [`IdentityCheck`]); `None` (a
    /// policy stored before the check existed): the server default's.
    /// [`crate::Store::policy_for`] always answers with it filled in.
    pub identity_check: Option<IdentityCheck>,
}

/// The server's built-in policy: split-brain guard on, identity check enforced.
impl Default for StoredPolicy {
    fn default() -> Self {
        Self {
            policy: RetentionPolicy::default(),
            split_brain_guard: true,
            identity_check: Some(IdentityCheck::Enforce),
        }
    }
}

/// What the identity check does with an upload whose WAL page header or backup
/// document names another cluster (system identifier), PostgreSQL version or
/// segment size than the repository's (see `wal::identity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IdentityCheck {
    /// Refuse it (`412 PreconditionFailed`) and keep its bytes in the quarantine.
    #[default]
    Enforce,
    /// Accept it; count, log and report the conflict.
    Warn,
    /// Do not look inside uploads (and learn no identity).
    Off,
}

impl IdentityCheck {
    /// Parses `enforce`, `warn` or `off`.
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "enforce" => Some(IdentityCheck::Enforce),
            "warn" => Some(IdentityCheck::Warn),
            "off" => Some(IdentityCheck::Off),
            _ => None,
        }
    }

    /// The name [`IdentityCheck::from_name`] reads.
    pub fn name(self) -> &'static str {
        match self {
            IdentityCheck::Enforce => "enforce",
            IdentityCheck::Warn => "warn",
            IdentityCheck::Off => "off",
        }
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
    /// When it was computed (the store's clock).
    pub at: Timestamp,
    /// Committed writes of the repository when its snapshot was taken: the
    /// evaluation describes the repository exactly while the count is unchanged.
    pub(crate) generation: u64,
    /// Policy changes (any repository) when it was computed.
    pub(crate) policy_epoch: u64,
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

/// State of the WAL layer inside the store.
///
/// Lock order (see `crate::locks`): bucket lock → key stripes → a repository's
/// `gate` (several: in ascending repository order) → blob stripes. A
/// repository's `evaluating` mutex and the maps here are leaves: nothing else
/// is taken while holding them, except that an evaluation reads the index.
pub struct WalGuard {
    pub(crate) default: Mutex<StoredPolicy>,
    /// Bumped by every policy change: evaluations computed under another epoch are stale.
    pub(crate) policy_epoch: AtomicU64,
    pub(crate) repos: Mutex<HashMap<RepoId, Arc<RepoState>>>,
    /// The repositories the last pass over all buckets found (their last
    /// evaluations are what metrics and status show).
    pub(crate) listed: Mutex<Vec<RepoId>>,
    pub(crate) refused: Mutex<VecDeque<RefusedDelete>>,
    pub(crate) audit_seq: AtomicU64,
    /// Counters.
    pub stats: GuardStats,
    /// Repository identities and the identity check's counters.
    pub(crate) identity: IdentityState,
}

impl Default for WalGuard {
    fn default() -> Self {
        Self {
            default: Mutex::new(StoredPolicy::default()),
            policy_epoch: AtomicU64::new(0),
            repos: Mutex::new(HashMap::new()),
            listed: Mutex::new(Vec::new()),
            refused: Mutex::new(VecDeque::new()),
            audit_seq: AtomicU64::new(0),
            stats: GuardStats::default(),
            identity: Default::default(),
        }
    }
}

/// A repository: its bucket and prefix.
pub(crate) type RepoId = (String, String);

/// What the store tracks per WAL-G repository.
///
/// `generation` counts committed writes (and deletes) into the repository. A
/// write bumps it after its batch is committed, while holding `gate` shared; a
/// delete that the horizon decided checks, while holding `gate` exclusively,
/// that the count is still the one its evaluation saw, and commits under that
/// same hold. So no write can land between the snapshot a delete decision was
/// made on and the delete itself.
#[derive(Default)]
pub(crate) struct RepoState {
    pub(crate) generation: AtomicU64,
    pub(crate) gate: OrderedRwLock,
    /// One evaluation of this repository at a time (others wait and reuse it).
    pub(crate) evaluating: Mutex<()>,
    pub(crate) last: Mutex<Option<Arc<Evaluation>>>,
    /// When the previous evaluation ran (the horizon's clock checks).
    pub(crate) last_pass: Mutex<Option<Timestamp>>,
}

/// A repository's identity and where it was learned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityRecord {
    /// The identity.
    pub identity: Identity,
    /// Key (in the bucket) of the upload that taught its system identifier.
    pub learned_from: String,
    /// When.
    pub learned_at: Timestamp,
}

/// Counters of the identity check since the server started (metrics).
#[derive(Debug, Default)]
pub struct IdentityCounters {
    /// Uploads whose identity matched the repository's.
    pub verified: AtomicU64,
    /// Uploads that taught (or completed) a repository's identity.
    pub learned: AtomicU64,
    /// Uploads that could not be read (encrypted, undecodable): accepted.
    pub opaque: AtomicU64,
    /// Segments whose page magic names no PostgreSQL version walstore knows.
    pub unknown_version: AtomicU64,
    /// Conflicts by kind ([`CONFLICT_KINDS`]), refused or (under `warn`) reported.
    pub conflicts: [AtomicU64; 5],
}

/// Stripes of [`IdentityState::learning`].
pub(crate) const LEARNING_STRIPES: usize = 16;

/// What one repository's identity check saw since the server started (status).
#[derive(Clone, Debug, Default, Serialize)]
pub struct RepoIdentityStats {
    /// Uploads verified.
    pub verified: u64,
    /// Uploads accepted without a check (encrypted or undecodable).
    pub opaque: u64,
    /// Conflicts (refused, or reported under `warn`).
    pub conflicts: u64,
    /// The newest conflict: when, and the message.
    pub last_conflict: Option<(Timestamp, String)>,
    /// Why the newest opaque upload could not be read.
    pub last_opaque: Option<String>,
}

/// The identity state the store holds in memory.
#[derive(Default)]
pub struct IdentityState {
    /// Known identities (a cache of the index; absent = not loaded or none).
    pub(crate) known: Mutex<HashMap<RepoId, Arc<IdentityRecord>>>,
    /// Held from the decision to learn a repository's identity until its batch is
    /// committed, so two first uploads from different clusters cannot both teach one
    /// (striped by repository: one repository's slow commit does not hold up another's).
    pub(crate) learning: [Mutex<()>; LEARNING_STRIPES],
    pub(crate) stats: Mutex<HashMap<RepoId, RepoIdentityStats>>,
    /// Counters.
    pub counters: IdentityCounters,
}
