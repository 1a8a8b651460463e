//! How much a piece of background work may do before it yields: a deadline,
//! a stop signal, and an optional I/O rate. Long jobs (scrub, retention, GC)
//! take a [`Budget`] and check it between small steps, so a stop request is
//! honoured within one step and one job cannot hold up the others.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

/// A stop request shared by the scheduler and the work it runs. Waiting on it
/// ends early when stop is requested.
#[derive(Debug, Default)]
pub struct StopSignal {
    stopped: AtomicBool,
    lock: Mutex<()>,
    cv: Condvar,
}

impl StopSignal {
    /// A signal that has not been raised.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Raises the signal: every holder sees [`StopSignal::is_raised`] and every
    /// waiter wakes up.
    pub fn raise(&self) {
        self.stopped.store(true, Ordering::SeqCst);
        let _g = self.lock.lock();
        self.cv.notify_all();
    }

    /// Whether stop was requested.
    pub fn is_raised(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Sleeps for `d`, or less: until the signal is raised or a waiter is
    /// nudged. Returns true if raised.
    pub fn wait(&self, d: Duration) -> bool {
        let mut g = self.lock.lock();
        if !self.is_raised() {
            self.cv.wait_for(&mut g, d);
        }
        self.is_raised()
    }

    /// Wakes waiters without raising the signal (a worker was made due).
    pub fn nudge(&self) {
        let _g = self.lock.lock();
        self.cv.notify_all();
    }
}

/// The allowance of one step of background work.
#[derive(Debug)]
pub struct Budget {
    until: Option<Instant>,
    stop: Option<Arc<StopSignal>>,
    /// Bytes per second, and the pacing state: bytes read since `since`.
    rate: Option<(u64, Instant, u64)>,
}

impl Budget {
    /// No deadline, no stop signal, no rate: run to the end (CLI commands).
    pub fn unlimited() -> Self {
        Self { until: None, stop: None, rate: None }
    }

    /// Until `d` from now, or until `stop` is raised.
    pub fn for_step(d: Duration, stop: Arc<StopSignal>) -> Self {
        Self { until: Some(Instant::now() + d), stop: Some(stop), rate: None }
    }

    /// Paces reads to at most `bytes_per_sec` (0 = unpaced), see [`Budget::pace`].
    pub fn with_rate(mut self, bytes_per_sec: u64) -> Self {
        self.rate = (bytes_per_sec > 0).then(|| (bytes_per_sec, Instant::now(), 0));
        self
    }

    /// Stop was requested: leave the work in a resumable state and return now.
    pub fn stopped(&self) -> bool {
        self.stop.as_ref().is_some_and(|s| s.is_raised())
    }

    /// The step used its time (or stop was requested): save progress and return.
    pub fn spent(&self) -> bool {
        self.stopped() || self.until.is_some_and(|u| Instant::now() >= u)
    }

    /// Accounts `bytes` of I/O and sleeps as long as the rate requires (waking
    /// at once on stop). Returns false if stop was requested.
    pub fn pace(&mut self, bytes: u64) -> bool {
        let Some((rate, since, done)) = &mut self.rate else { return !self.stopped() };
        *done += bytes;
        let due = Duration::from_secs_f64(*done as f64 / *rate as f64);
        let elapsed = since.elapsed();
        if due > elapsed {
            let nap = due - elapsed;
            match &self.stop {
                Some(s) => {
                    if s.wait(nap) {
                        return false;
                    }
                }
                None => std::thread::sleep(nap),
            }
        }
        // A long-running pace keeps its window short, so a pause in reading
        // does not earn a burst later.
        if since.elapsed() > Duration::from_secs(10) {
            *since = Instant::now();
            *done = 0;
        }
        !self.stopped()
    }
}

/// Requests to run a job now (from the admin API), shared by the store and
/// the scheduler that runs its jobs.
#[derive(Default)]
pub(crate) struct JobRequests {
    pending: Mutex<Vec<&'static str>>,
    waker: Mutex<Option<Arc<StopSignal>>>,
}

impl JobRequests {
    pub(crate) fn attach(&self, waker: Arc<StopSignal>) {
        *self.waker.lock() = Some(waker);
    }

    pub(crate) fn request(&self, name: &'static str) -> bool {
        let mut p = self.pending.lock();
        if p.contains(&name) {
            // Already pending, so already nudged: writes that request a job
            // each time cost one lock, not a wake-up of every worker.
            return self.waker.lock().is_some();
        }
        p.push(name);
        drop(p);
        match &*self.waker.lock() {
            Some(w) => {
                w.nudge();
                true
            }
            None => false,
        }
    }

    pub(crate) fn has_request(&self, name: &str) -> bool {
        self.pending.lock().contains(&name)
    }

    pub(crate) fn take_request(&self, name: &str) -> bool {
        let mut p = self.pending.lock();
        match p.iter().position(|n| *n == name) {
            Some(i) => {
                p.swap_remove(i);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raised_signal_ends_a_wait_at_once() {
        let s = StopSignal::new();
        let s2 = s.clone();
        let t = std::thread::spawn(move || {
            let started = Instant::now();
            let raised = s2.wait(Duration::from_secs(30));
            (raised, started.elapsed())
        });
        std::thread::sleep(Duration::from_millis(50));
        s.raise();
        let (raised, waited) = t.join().expect("join");
        assert!(raised);
        assert!(waited < Duration::from_secs(5), "waited {waited:?}");
        let b = Budget::for_step(Duration::from_secs(60), s);
        assert!(b.stopped() && b.spent());
    }

    #[test]
    fn pacing_holds_the_rate() {
        let mut b = Budget::unlimited().with_rate(10 << 20);
        let started = Instant::now();
        for _ in 0..5 {
            assert!(b.pace(1 << 20));
        }
        // 5 MiB at 10 MiB/s: at least about half a second.
        assert!(started.elapsed() >= Duration::from_millis(450), "{:?}", started.elapsed());
        assert!(!Budget::unlimited().spent());
    }
}
