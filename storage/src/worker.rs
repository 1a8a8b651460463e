//! One shape for background work, and the scheduler that runs it.
//!
//! A [`Worker`] does its job in small steps: [`Worker::step`] does as much as
//! its [`Budget`] allows (a deadline per step, a stop signal, an optional I/O
//! rate) and says whether work remains. Anything a restart must not redo
//! (the scrub's position) a worker persists itself, in the index.
//!
//! The [`Scheduler`] gives every worker its own thread, so a long job (a scrub
//! of a multi-terabyte store) never holds up another (GC, retention,
//! metrics). Workers that touch the same objects are safe side by side
//! because each takes the store's locks for what it changes, like a request
//! does. [`Scheduler::stop`] raises the stop signal, which every budget checks
//! between steps and every wait ends on, and joins the threads within a bound.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;

use crate::budget::{Budget, StopSignal};
use crate::error::Result;
use crate::store::Store;

/// What a step left behind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// The job is done until its next interval.
    Done,
    /// Work remains: call [`Worker::step`] again (the budget ran out).
    More,
}

/// A background job, done in steps.
pub trait Worker: Send {
    /// Name in logs and metrics (`gc`, `retention`, `scrub`, …).
    fn name(&self) -> &'static str;

    /// How long after finishing the job is due again. `None` disables it.
    fn interval(&self) -> Option<Duration>;

    /// How long after start the first run is due (default: at once).
    fn first_run(&self, _store: &Store) -> Duration {
        Duration::ZERO
    }

    /// Bytes per second of I/O a step may do (0 = unpaced), see [`Budget::pace`].
    fn io_rate(&self) -> u64 {
        0
    }

    /// Shortest time between the end of a run and a run made at once by a
    /// request ([`Store::request_job`]); requested runs also keep to four
    /// times the last run's duration, so a job requested by every write
    /// takes at most a fifth of a core. Zero (the default) runs a request
    /// at once.
    fn request_gap(&self) -> Duration {
        Duration::ZERO
    }

    /// Does as much of the job as `budget` allows.
    fn step(&mut self, store: &Store, budget: &mut Budget) -> Result<Progress>;
}

/// A worker made of a closure (for jobs that live outside the storage crate,
/// such as refreshing metrics).
pub struct FnWorker<F> {
    name: &'static str,
    interval: Option<Duration>,
    f: F,
}

impl<F: FnMut(&Store, &mut Budget) -> Result<Progress> + Send> FnWorker<F> {
    /// A worker named `name`, due every `interval`, doing `f`.
    pub fn new(name: &'static str, interval: Option<Duration>, f: F) -> Self {
        Self { name, interval, f }
    }
}

impl<F: FnMut(&Store, &mut Budget) -> Result<Progress> + Send> Worker for FnWorker<F> {
    fn name(&self) -> &'static str {
        self.name
    }
    fn interval(&self) -> Option<Duration> {
        self.interval
    }
    fn step(&mut self, store: &Store, budget: &mut Budget) -> Result<Progress> {
        (self.f)(store, budget)
    }
}

/// What the scheduler knows about one worker (for metrics and status).
#[derive(Debug)]
pub struct WorkerStatus {
    /// The worker's name.
    pub name: &'static str,
    /// A run is in progress.
    pub running: AtomicBool,
    /// Unix time (s) of the last run that finished without error (0 = never).
    pub last_success: AtomicU64,
    /// Runs that ended with an error.
    pub errors: AtomicU64,
    /// Steps taken.
    pub steps: AtomicU64,
    /// Time spent in steps, in milliseconds.
    pub busy_ms: AtomicU64,
    /// The last error, if the last run failed.
    pub last_error: Mutex<Option<String>>,
}

impl WorkerStatus {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            running: AtomicBool::new(false),
            last_success: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            steps: AtomicU64::new(0),
            busy_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }
}

/// Called after every finished run: (worker, status, the run's error if any).
pub type RunHook = Arc<dyn Fn(&WorkerStatus, Option<&crate::Error>) + Send + Sync>;

/// Settings of the scheduler.
#[derive(Clone)]
pub struct SchedulerOptions {
    /// Longest a step runs before the worker yields and saves its progress.
    pub step: Duration,
    /// Called after every run (metrics).
    pub on_run: Option<RunHook>,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self { step: Duration::from_secs(1), on_run: None }
    }
}

/// Runs workers, one thread each, until stopped.
pub struct Scheduler {
    stop: Arc<StopSignal>,
    threads: Vec<JoinHandle<()>>,
    statuses: Vec<Arc<WorkerStatus>>,
}

impl Scheduler {
    /// Starts every worker on its own thread.
    pub fn start(store: Arc<Store>, workers: Vec<Box<dyn Worker>>, opts: SchedulerOptions) -> std::io::Result<Self> {
        let stop = StopSignal::new();
        store.jobs.attach(stop.clone());
        let mut threads = Vec::new();
        let mut statuses = Vec::new();
        for w in workers {
            let status = Arc::new(WorkerStatus::new(w.name()));
            statuses.push(status.clone());
            let (store, stop, opts) = (store.clone(), stop.clone(), opts.clone());
            let handle = std::thread::Builder::new()
                .name(format!("walstore-{}", w.name()))
                .spawn(move || run_worker(w, &store, &stop, &status, &opts))?;
            threads.push(handle);
        }
        Ok(Self { stop, threads, statuses })
    }

    /// The status of every worker, in start order.
    pub fn statuses(&self) -> &[Arc<WorkerStatus>] {
        &self.statuses
    }

    /// Asks every worker to stop and waits up to `within` for them. Returns
    /// false if some did not finish in time (they are left to end with the
    /// process; whatever they were doing is crash-safe).
    pub fn stop(self, within: Duration) -> bool {
        self.stop.raise();
        let deadline = Instant::now() + within;
        let mut all = true;
        for t in self.threads {
            let name = t.thread().name().unwrap_or("worker").to_owned();
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                tracing::warn!(worker = name, "did not stop in time; leaving it to end with the process");
                all = false;
            }
        }
        all
    }
}

/// Longest a sleeping worker goes without looking for a request to run now.
const REQUEST_POLL: Duration = Duration::from_secs(1);

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn run_worker(
    mut w: Box<dyn Worker>,
    store: &Store,
    stop: &Arc<StopSignal>,
    status: &WorkerStatus,
    opts: &SchedulerOptions,
) {
    let name = w.name();
    let mut next = Instant::now() + w.first_run(store);
    // When the last run ended and how long it took (for `request_gap`).
    let mut last: Option<(Instant, Duration)> = None;
    loop {
        // Sleep until due, a request to run now, or stop.
        loop {
            if stop.is_raised() {
                return;
            }
            if store.jobs.has_request(name) {
                let gap = w.request_gap();
                let earliest = match last {
                    Some((ended, took)) if !gap.is_zero() => ended + gap.max(took * 4),
                    _ => Instant::now(),
                };
                let wait = earliest.saturating_duration_since(Instant::now());
                if wait.is_zero() {
                    store.jobs.take_request(name);
                    break;
                }
                stop.wait(wait);
                continue;
            }
            let now = Instant::now();
            let Some(wait) = w.interval().map(|_| next.saturating_duration_since(now)) else {
                // Disabled: only a request runs it.
                stop.wait(REQUEST_POLL);
                continue;
            };
            if wait.is_zero() {
                break;
            }
            // A request made just before this wait began only nudged the
            // previous one: wake up now and then to look.
            stop.wait(wait.min(REQUEST_POLL));
        }
        status.running.store(true, Ordering::SeqCst);
        let run_started = Instant::now();
        let error = loop {
            let mut budget = Budget::for_step(opts.step, stop.clone()).with_rate(w.io_rate());
            let started = Instant::now();
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w.step(store, &mut budget)));
            status.steps.fetch_add(1, Ordering::Relaxed);
            status.busy_ms.fetch_add(started.elapsed().as_millis() as u64, Ordering::Relaxed);
            match r {
                Ok(Ok(Progress::More)) if !stop.is_raised() => continue,
                Ok(Ok(_)) => break None,
                Ok(Err(e)) => break Some(e),
                Err(_) => break Some(crate::Error::Index(format!("the {name} worker panicked"))),
            }
        };
        status.running.store(false, Ordering::SeqCst);
        last = Some((Instant::now(), run_started.elapsed()));
        match &error {
            None if !stop.is_raised() => {
                status.last_success.store(unix_now(), Ordering::Relaxed);
                *status.last_error.lock() = None;
            }
            None => {}
            Some(e) => {
                status.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(worker = name, error = %e, "background job failed");
                *status.last_error.lock() = Some(e.to_string());
            }
        }
        if let Some(hook) = &opts.on_run {
            hook(status, error.as_ref());
        }
        next = Instant::now() + w.interval().unwrap_or(Duration::from_secs(3600));
    }
}
