//! The storage engine's background jobs, each a [`Worker`] run by the
//! [`crate::worker::Scheduler`]: GC (with upload expiry and the orphan
//! sweep), evaluation of every WAL-G repository, retention enforcement, the
//! scrub and the index verification.

use std::time::{Duration, Instant};

use crate::budget::Budget;
use crate::error::Result;
use crate::index::VerifyCursor;
use crate::store::Store;
use crate::types::BucketName;
use crate::worker::{Progress, Worker};

/// How often the orphan sweep runs inside the GC job.
const ORPHAN_SWEEP_EVERY: Duration = Duration::from_secs(3600);

/// GC of unreferenced blobs past their grace period, expiry of abandoned
/// multipart uploads, and (hourly) removal of orphan blob files.
pub struct GcJob {
    interval: Duration,
    last_sweep: Option<Instant>,
}

impl GcJob {
    /// GC every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, last_sweep: None }
    }
}

impl Worker for GcJob {
    fn name(&self) -> &'static str {
        "gc"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn step(&mut self, s: &Store, budget: &mut Budget) -> Result<Progress> {
        let now = s.clock().now();
        let gc = s.gc_until_done(now, budget)?;
        if gc.reclaimed_blobs > 0 {
            tracing::info!(blobs = gc.reclaimed_blobs, bytes = gc.reclaimed_bytes, "GC reclaimed space");
        }
        if gc.more {
            return Ok(Progress::More);
        }
        let expired = s.expire_uploads(now)?;
        if expired > 0 {
            tracing::info!(uploads = expired, "expired abandoned multipart uploads");
        }
        if self.last_sweep.is_none_or(|t| t.elapsed() >= ORPHAN_SWEEP_EVERY) {
            let orphans = s.sweep_orphans(now)?;
            self.last_sweep = Some(Instant::now());
            if orphans > 0 {
                tracing::info!(files = orphans, "removed orphan blob files");
            }
        }
        Ok(Progress::Done)
    }
}

/// The repositories a pass over every bucket has still to visit, in order.
#[derive(Default)]
struct RepoQueue(Vec<(BucketName, String)>);

impl RepoQueue {
    /// Starts a pass unless one is under way; returns the repositories of a new pass.
    fn start(&mut self, s: &Store) -> Result<Option<&[(BucketName, String)]>> {
        if !self.0.is_empty() {
            return Ok(None);
        }
        self.0 = s.all_wal_repositories()?;
        self.0.reverse();
        Ok(Some(&self.0))
    }

    /// The next repository to visit.
    fn next(&self) -> Option<&(BucketName, String)> {
        self.0.last()
    }

    /// The next repository is done.
    fn done(&mut self) {
        self.0.pop();
    }
}

/// Keeps every WAL-G repository's evaluation current: lists the repositories
/// of every bucket and evaluates those written to (or whose policy changed)
/// since their last evaluation. Metrics and status read these evaluations;
/// they never compute one themselves.
pub struct EvaluateJob {
    interval: Duration,
    queue: RepoQueue,
}

impl EvaluateJob {
    /// A pass every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, queue: RepoQueue::default() }
    }
}

/// Name of the [`EvaluateJob`]; every write into a repository requests it.
pub(crate) const EVALUATE: &str = "evaluate";

/// Least time between evaluations that writes request (see
/// [`Worker::request_gap`]): under a stream of WAL pushes the gauges follow
/// within about this much, and evaluating costs a bounded share of a core.
const EVALUATE_GAP: Duration = Duration::from_millis(250);

impl Worker for EvaluateJob {
    fn name(&self) -> &'static str {
        EVALUATE
    }

    fn request_gap(&self) -> Duration {
        EVALUATE_GAP
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn step(&mut self, s: &Store, budget: &mut Budget) -> Result<Progress> {
        if let Some(all) = self.queue.start(s)? {
            s.set_listed_repositories(all.iter().map(|(b, r)| (b.as_str().to_owned(), r.clone())).collect());
        }
        while let Some((bucket, repo)) = self.queue.next() {
            if budget.spent() {
                return Ok(Progress::More);
            }
            match s.refresh_evaluation(bucket, repo) {
                Ok(_) | Err(crate::Error::NoSuchBucket) => {}
                Err(e) => return Err(e),
            }
            self.queue.done();
        }
        Ok(Progress::Done)
    }
}

/// Deletes what each repository's policy releases, where the policy says
/// the server enforces retention.
pub struct RetentionJob {
    interval: Duration,
    queue: RepoQueue,
}

impl RetentionJob {
    /// A pass every `interval`.
    pub fn new(interval: Duration) -> Self {
        Self { interval, queue: RepoQueue::default() }
    }
}

impl Worker for RetentionJob {
    fn name(&self) -> &'static str {
        "retention"
    }

    fn interval(&self) -> Option<Duration> {
        Some(self.interval)
    }

    fn step(&mut self, s: &Store, budget: &mut Budget) -> Result<Progress> {
        self.queue.start(s)?;
        while let Some((bucket, repo)) = self.queue.next() {
            if budget.spent() {
                return Ok(Progress::More);
            }
            let policy = match s.policy_for(bucket, repo) {
                Ok(p) => p,
                Err(crate::Error::NoSuchBucket) => {
                    self.queue.done();
                    continue;
                }
                Err(e) => return Err(e),
            };
            if policy.policy.enforce {
                let out = s.retention_run(bucket, repo, budget)?;
                if out.objects > 0 {
                    tracing::info!(bucket = %bucket, repo, objects = out.objects, bytes = out.bytes, "retention deleted what the policy releases");
                }
                if out.more {
                    return Ok(Progress::More);
                }
            }
            self.queue.done();
        }
        Ok(Progress::Done)
    }
}

/// Re-hashes every blob (size, block CRCs, SHA-256), paced to `rate` bytes
/// per second, resuming where it stopped (also across restarts).
pub struct ScrubJob {
    interval: Option<Duration>,
    rate: u64,
}

impl ScrubJob {
    /// A scrub every `interval` (`None` or zero: only when requested), reading
    /// at most `rate` bytes per second (0 = unpaced).
    pub fn new(interval: Option<Duration>, rate: u64) -> Self {
        Self { interval: interval.filter(|d| !d.is_zero()), rate }
    }
}

impl Worker for ScrubJob {
    fn name(&self) -> &'static str {
        "scrub"
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn io_rate(&self) -> u64 {
        self.rate
    }

    /// A scrub in progress continues at once; otherwise the next one is due an
    /// interval after the last completed one (a fresh store waits a whole
    /// interval: a restart must not re-read everything).
    fn first_run(&self, s: &Store) -> Duration {
        let Some(interval) = self.interval else { return Duration::ZERO };
        match s.scrub_state() {
            Ok(st) if st.cursor.is_some() => Duration::ZERO,
            Ok(st) => match st.last {
                Some(last) => {
                    let due = last.completed.plus(interval);
                    Duration::from_millis(u64::try_from(due.as_millis() - s.now().as_millis()).unwrap_or(0))
                }
                None => interval,
            },
            Err(_) => interval,
        }
    }

    fn step(&mut self, s: &Store, budget: &mut Budget) -> Result<Progress> {
        match s.scrub_step(budget)? {
            None => Ok(Progress::More),
            Some(r) => {
                if r.corrupt.is_empty() {
                    tracing::info!(blobs = r.blobs, bytes = r.bytes, "scrub found no corruption");
                } else {
                    for c in &r.corrupt {
                        tracing::error!(blob = %c.hash, problem = %c.problem, objects = ?c.objects, "scrub: corrupt blob");
                    }
                }
                Ok(Progress::Done)
            }
        }
    }
}

/// Reads the whole index with checksums verified: a damaged block is otherwise
/// met only by the read that needs it. At start, then every `interval`.
pub struct IndexVerifyJob {
    interval: Option<Duration>,
    cursor: Option<VerifyCursor>,
}

impl IndexVerifyJob {
    /// A verification at start and every `interval`.
    pub fn new(interval: Option<Duration>) -> Self {
        Self { interval: interval.filter(|d| !d.is_zero()), cursor: None }
    }
}

impl Worker for IndexVerifyJob {
    fn name(&self) -> &'static str {
        "index-verify"
    }

    fn interval(&self) -> Option<Duration> {
        self.interval
    }

    fn step(&mut self, s: &Store, budget: &mut Budget) -> Result<Progress> {
        let cur = self.cursor.get_or_insert_with(VerifyCursor::default);
        if s.verify_index_step(cur, &|| !budget.spent())? {
            tracing::info!(entries = cur.entries, "index verified: every block's checksum matches");
            self.cursor = None;
            Ok(Progress::Done)
        } else {
            Ok(Progress::More)
        }
    }
}
