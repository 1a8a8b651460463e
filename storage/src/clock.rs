//! The store's clock, injectable so that tests can let days pass in a moment.
//!
//! Everything the store persists or decides by wall-clock time (an object's
//! LastModified, GC grace, multipart expiry, retention windows and dwell
//! times, scrub intervals) reads [`Clock::now`]. Budgets and timeouts of
//! running work use the monotonic clock instead; those are not a matter of
//! policy and need no injection.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::types::Timestamp;

/// A source of wall-clock time.
pub trait Clock: Send + Sync + fmt::Debug {
    /// The current time.
    fn now(&self) -> SystemTime;

    /// The current time as the store persists it.
    fn timestamp(&self) -> Timestamp {
        Timestamp::from_system(self.now())
    }
}

/// The operating system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to (tests and simulations).
#[derive(Debug)]
pub struct ManualClock {
    ms: AtomicI64,
}

impl ManualClock {
    /// A clock standing at `t`.
    pub fn new(t: SystemTime) -> Self {
        Self { ms: AtomicI64::new(Timestamp::from_system(t).as_millis()) }
    }

    /// A clock standing at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemTime::now())
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.ms.fetch_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }

    /// Sets the clock to `t` (also backwards: clock-anomaly tests).
    pub fn set(&self, t: SystemTime) {
        self.ms.store(Timestamp::from_system(t).as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(u64::try_from(self.ms.load(Ordering::SeqCst)).unwrap_or(0))
    }
}

impl<C: Clock + ?Sized> Clock for std::sync::Arc<C> {
    fn now(&self) -> SystemTime {
        (**self).now()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told() {
        let start = UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let c = ManualClock::new(start);
        assert_eq!(c.now(), start);
        c.advance(Duration::from_secs(86_400 * 7));
        assert_eq!(c.now(), start + Duration::from_secs(86_400 * 7));
        assert_eq!(c.timestamp().as_millis(), (1_800_000_000 + 86_400 * 7) * 1000);
        c.set(start - Duration::from_secs(60));
        assert_eq!(c.now(), start - Duration::from_secs(60));
    }
}
