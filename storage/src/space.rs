//! The disk-space reserve: new bytes are refused while the data directory's
//! filesystem has less than the reserve free, so deletes, the retention worker
//! and RocksDB (its WAL, flushes and compactions) always find room. A disk that
//! fills up during a burst of WAL therefore turns into `503 SlowDown` answers
//! that clients retry, never into a wedged index or a half-written blob.
//!
//! Accounting: a write that announces its length ([`SpaceGuard::admit`]) books
//! that length as *pending* until its bytes are on disk, so eight concurrent
//! 16 MiB uploads cannot each see the same free space. Bytes beyond the
//! announced length (or of an upload without one) are checked against the
//! filesystem every [`RECHECK_EVERY`] bytes. Only the reserve decides, so
//! writes resume by themselves as soon as space is freed.
//!
//! The filesystem is asked (`statvfs`) by a thread of the guard's own every
//! [`SAMPLE_EVERY`], never by a request: admission runs on the async runtime's
//! threads, and a slow `statvfs` (a hung network filesystem) must not stall
//! them. Bytes written since the last sample are subtracted from its free
//! space, so a burst between two samples is still counted.

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::units::parse_size;

/// Bytes written past the announced length between two checks of the filesystem.
pub(crate) const RECHECK_EVERY: u64 = 4 << 20;

/// How often the guard's thread samples the filesystem's free space.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_millis(50);

/// How much free space writes must leave on the data directory's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpaceReserve {
    /// 1 GiB or 5 % of the filesystem, whichever is smaller (the default).
    #[default]
    Auto,
    /// A fixed number of bytes (`0` turns the reserve off).
    Bytes(u64),
    /// A percentage (0–50) of the filesystem's size.
    Percent(u8),
}

impl SpaceReserve {
    /// The reserve in bytes on a filesystem of `total` bytes.
    pub fn resolve(self, total: u64) -> u64 {
        match self {
            SpaceReserve::Auto => (1u64 << 30).min(total / 20),
            SpaceReserve::Bytes(n) => n,
            SpaceReserve::Percent(p) => total / 100 * u64::from(p),
        }
    }
}

impl FromStr for SpaceReserve {
    type Err = String;

    /// `auto`, a size (`0`, `512MiB`, `2GiB`) or a percentage (`5%`).
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") {
            return Ok(SpaceReserve::Auto);
        }
        if let Some(p) = t.strip_suffix('%') {
            let p: u8 =
                p.trim().parse().ok().filter(|p| *p <= 50).ok_or_else(|| {
                    format!("invalid reserve {s:?}: a percentage must be a whole number from 0% to 50%")
                })?;
            return Ok(SpaceReserve::Percent(p));
        }
        parse_size(t).map(SpaceReserve::Bytes).map_err(|e| {
            format!("invalid reserve {s:?}: expected auto, a size like 1GiB or a percentage like 5% ({e})")
        })
    }
}

/// Free and total bytes of the filesystem holding `path`.
pub(crate) fn disk_space(path: &Path) -> Result<(u64, u64)> {
    let st = nix::sys::statvfs::statvfs(path)
        .map_err(|e| Error::io("statvfs of the data directory", std::io::Error::from(e)))?;
    let frag = st.fragment_size() as u64;
    Ok((st.blocks_available() as u64 * frag, st.blocks() as u64 * frag))
}

/// Admission of new bytes against the reserve; shared by every writer.
#[derive(Debug)]
pub(crate) struct SpaceGuard {
    dir: PathBuf,
    reserve: SpaceReserve,
    /// Bytes announced by admitted writes and not yet written.
    pending: AtomicU64,
    /// The last sample of the filesystem.
    sample: Mutex<Sample>,
    /// Bytes written since that sample was taken.
    landed: AtomicU64,
}

#[derive(Debug, Clone)]
struct Sample {
    /// Free and total bytes, or why `statvfs` failed.
    space: std::result::Result<(u64, u64), String>,
}

impl SpaceGuard {
    /// A guard for the filesystem holding `dir`, sampling it on a thread of
    /// its own (which ends when the guard is dropped).
    pub(crate) fn new(dir: PathBuf, reserve: SpaceReserve) -> Arc<Self> {
        let sample = Sample { space: disk_space(&dir).map_err(|e| e.to_string()) };
        let g = Arc::new(Self {
            dir,
            reserve,
            pending: AtomicU64::new(0),
            sample: Mutex::new(sample),
            landed: AtomicU64::new(0),
        });
        if reserve != SpaceReserve::Bytes(0) {
            let weak = Arc::downgrade(&g);
            let spawned = std::thread::Builder::new().name("walstore-statvfs".into()).spawn(move || sampler(weak));
            if let Err(e) = spawned {
                tracing::warn!(error = %e, "no thread to sample free space; sampling on each write instead");
                g.sample.lock().space = Err(format!("no sampling thread: {e}"));
            }
        }
        g
    }

    /// Takes a new sample of the filesystem.
    fn refresh(&self) {
        let space = disk_space(&self.dir).map_err(|e| e.to_string());
        let mut s = self.sample.lock();
        s.space = space;
        self.landed.store(0, Ordering::Relaxed);
    }

    /// Free and total bytes now: the last sample less what landed since.
    fn space(&self) -> Result<(u64, u64)> {
        let s = self.sample.lock().clone();
        match s.space {
            Ok((free, total)) => Ok((free.saturating_sub(self.landed.load(Ordering::Relaxed)), total)),
            // The sampler could not run or failed: ask directly.
            Err(_) => disk_space(&self.dir),
        }
    }

    /// The reserve in bytes now (it follows the filesystem's size).
    pub(crate) fn reserve_bytes(&self) -> Result<u64> {
        Ok(self.reserve.resolve(self.space()?.1))
    }

    /// Admits a write of `expected` bytes (0 if unknown) or refuses it with
    /// [`Error::InsufficientStorage`].
    pub(crate) fn admit(self: &Arc<Self>, expected: u64) -> Result<SpaceTicket> {
        self.check(expected.saturating_add(self.pending.load(Ordering::Relaxed)), expected)?;
        self.pending.fetch_add(expected, Ordering::Relaxed);
        Ok(SpaceTicket { guard: self.clone(), booked: expected, written: 0, checked_at: expected })
    }

    fn check(&self, needed: u64, asked: u64) -> Result<()> {
        if self.reserve == SpaceReserve::Bytes(0) {
            return Ok(());
        }
        let (free, total) = self.space()?;
        let reserve = self.reserve.resolve(total);
        if free < reserve.saturating_add(needed) {
            return Err(Error::InsufficientStorage(format!(
                "{free} bytes free on the data directory's filesystem, {reserve} reserved for deletes and the index, \
                 {asked} more asked for"
            )));
        }
        Ok(())
    }
}

fn sampler(guard: Weak<SpaceGuard>) {
    loop {
        std::thread::sleep(SAMPLE_EVERY);
        let Some(g) = guard.upgrade() else { return };
        let started = Instant::now();
        g.refresh();
        if started.elapsed() > Duration::from_secs(1) {
            tracing::warn!(took = ?started.elapsed(), "statvfs of the data directory is slow");
        }
    }
}

/// One admitted write; releases its booking as bytes land and when dropped.
#[derive(Debug)]
pub(crate) struct SpaceTicket {
    guard: Arc<SpaceGuard>,
    booked: u64,
    written: u64,
    /// Written bytes at the last filesystem check.
    checked_at: u64,
}

impl SpaceTicket {
    /// Records `n` more bytes written; refuses to go on once the write has run
    /// past its announced length and the filesystem is down to the reserve.
    pub(crate) fn wrote(&mut self, n: u64) -> Result<()> {
        let before = self.written;
        self.written = self.written.saturating_add(n);
        self.guard.landed.fetch_add(n, Ordering::Relaxed);
        let release = self.booked.min(self.written) - self.booked.min(before);
        if release > 0 {
            self.guard.pending.fetch_sub(release, Ordering::Relaxed);
        }
        if self.written > self.booked && self.written - self.checked_at >= RECHECK_EVERY {
            self.checked_at = self.written;
            self.guard.check(0, self.written)?;
        }
        Ok(())
    }
}

impl Drop for SpaceTicket {
    fn drop(&mut self) {
        let unreleased = self.booked.saturating_sub(self.written);
        if unreleased > 0 {
            self.guard.pending.fetch_sub(unreleased, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_resolves() {
        assert_eq!("auto".parse::<SpaceReserve>(), Ok(SpaceReserve::Auto));
        assert_eq!("0".parse::<SpaceReserve>(), Ok(SpaceReserve::Bytes(0)));
        assert_eq!("64MiB".parse::<SpaceReserve>(), Ok(SpaceReserve::Bytes(64 << 20)));
        assert_eq!("5%".parse::<SpaceReserve>(), Ok(SpaceReserve::Percent(5)));
        for bad in ["", "51%", "-1", "x%", "1 parsec"] {
            let e = bad.parse::<SpaceReserve>().expect_err(bad);
            assert!(e.contains("invalid reserve"), "{e}");
        }
        assert_eq!(SpaceReserve::Auto.resolve(100 << 30), 1 << 30);
        assert_eq!(SpaceReserve::Auto.resolve(1 << 30), (1 << 30) / 20);
        assert_eq!(SpaceReserve::Percent(10).resolve(1000), 100);
    }

    #[test]
    fn bookings_are_released_as_bytes_land_and_on_drop() {
        let dir = tempfile::tempdir().expect("tempdir");
        let g = SpaceGuard::new(dir.path().to_owned(), SpaceReserve::Bytes(1));
        let mut t = g.admit(100).expect("admit");
        assert_eq!(g.pending.load(Ordering::Relaxed), 100);
        t.wrote(30).expect("wrote");
        assert_eq!(g.pending.load(Ordering::Relaxed), 70);
        t.wrote(200).expect("past the announced length");
        assert_eq!(g.pending.load(Ordering::Relaxed), 0);
        drop(t);
        assert_eq!(g.pending.load(Ordering::Relaxed), 0);
        let t = g.admit(50).expect("admit");
        drop(t);
        assert_eq!(g.pending.load(Ordering::Relaxed), 0, "an aborted write releases its booking");
    }

    #[test]
    fn refuses_what_would_eat_into_the_reserve() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (free, _) = disk_space(dir.path()).expect("statvfs");
        let g = SpaceGuard::new(dir.path().to_owned(), SpaceReserve::Bytes(free.saturating_sub(1 << 20)));
        let small = g.admit(1024).expect("well within the free space");
        let e = g.admit(64 << 20).expect_err("would cross the reserve");
        assert!(matches!(e, Error::InsufficientStorage(ref m) if m.contains("reserved")), "{e}");
        drop(small);
        let off = SpaceGuard::new(dir.path().to_owned(), SpaceReserve::Bytes(0));
        off.admit(u64::MAX / 2).expect("reserve 0 turns admission off");
    }
}
