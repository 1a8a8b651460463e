//! Striped mutexes, and the lock order.
//!
//! Every lock the store takes belongs to one level, and a thread takes levels
//! only in increasing order (several locks of one level in a single call, in
//! ascending order), so no two operations can deadlock:
//! 1. [`Level::Bucket`]: the bucket lock (readers: any write into a bucket;
//!    writer: bucket creation and deletion);
//! 2. [`Level::Key`]: key stripes (an object key or an upload id): serialise
//!    read-modify-write of one index entry;
//! 3. [`Level::Gate`]: a WAL-G repository's gate (see
//!    [`crate::wal::state::RepoState`]), several in ascending repository order;
//! 4. [`Level::Blob`]: blob stripes (a content hash): make "is this blob
//!    present?" + "add a reference" atomic with respect to GC removing it.
//!
//! Leaf locks (a repository's evaluation mutex, the guard's maps, the GC
//! cursor) are taken after any of these and hold nothing else while held.
//!
//! With `debug_assertions` or the `lock-order` feature (which the crate's own
//! tests turn on), every acquisition is checked against the levels the thread
//! already holds and a violation panics, naming both.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use parking_lot::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The identity used to pick a stripe for any hashable item.
pub(crate) fn lock_id(item: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    item.hash(&mut h);
    h.finish()
}

/// Levels of the lock order (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    Bucket = 1,
    Key = 2,
    Gate = 3,
    Blob = 4,
}

/// Proof that the thread entered a level; leaves it when dropped.
#[must_use]
pub(crate) struct LevelGuard {
    #[cfg(any(debug_assertions, feature = "lock-order"))]
    level: Level,
}

#[cfg(any(debug_assertions, feature = "lock-order"))]
thread_local! {
    static HELD: std::cell::RefCell<Vec<Level>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Records that the thread is about to take a lock of `level`; panics (in
/// checked builds) if it already holds one of the same or a higher level.
pub(crate) fn enter(level: Level) -> LevelGuard {
    #[cfg(any(debug_assertions, feature = "lock-order"))]
    {
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(top) = h.iter().max() {
                assert!(
                    *top < level,
                    "lock order violated: taking a {level:?} lock while holding a {top:?} lock (see storage::locks)"
                );
            }
            h.push(level);
        });
        LevelGuard { level }
    }
    #[cfg(not(any(debug_assertions, feature = "lock-order")))]
    {
        let _ = level;
        LevelGuard {}
    }
}

impl Drop for LevelGuard {
    fn drop(&mut self) {
        #[cfg(any(debug_assertions, feature = "lock-order"))]
        HELD.with(|h| {
            let mut h = h.borrow_mut();
            if let Some(i) = h.iter().rposition(|l| *l == self.level) {
                h.remove(i);
            }
        });
    }
}

/// A fixed set of mutexes addressed by hashing, all of one level.
pub(crate) struct Stripes {
    level: Level,
    locks: Vec<Mutex<()>>,
}

/// Guards for a set of stripes, released on drop.
pub(crate) struct StripeGuards<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
    _level: LevelGuard,
}

impl Stripes {
    pub fn new(level: Level, n: usize) -> Self {
        Self { level, locks: (0..n).map(|_| Mutex::new(())).collect() }
    }

    /// Locks the stripes of all `items` (see [`lock_id`]), in ascending stripe
    /// order, each once. Everything one operation needs from one family must be
    /// locked in a single call.
    pub fn lock_all(&self, items: &[u64]) -> StripeGuards<'_> {
        let level = enter(self.level);
        let n = self.locks.len() as u64;
        let mut idx: Vec<usize> = items.iter().map(|i| (i % n) as usize).collect();
        idx.sort_unstable();
        idx.dedup();
        StripeGuards { _guards: idx.into_iter().map(|i| self.locks[i].lock()).collect(), _level: level }
    }
}

/// A lock guard together with its level's entry (released in that order).
pub(crate) struct Held<G> {
    _guard: G,
    _level: LevelGuard,
}

/// A reader-writer lock of one level.
#[derive(Debug)]
pub(crate) struct OrderedRwLock {
    level: Level,
    lock: RwLock<()>,
}

impl OrderedRwLock {
    pub(crate) fn new(level: Level) -> Self {
        Self { level, lock: RwLock::new(()) }
    }

    pub(crate) fn read(&self) -> Held<RwLockReadGuard<'_, ()>> {
        let level = enter(self.level);
        Held { _guard: self.lock.read(), _level: level }
    }

    pub(crate) fn write(&self) -> Held<RwLockWriteGuard<'_, ()>> {
        let level = enter(self.level);
        Held { _guard: self.lock.write(), _level: level }
    }

    /// Takes several locks of this level exclusively, in the given order (the
    /// caller sorts them), as one step of the lock order.
    pub(crate) fn write_all<'a>(
        locks: impl IntoIterator<Item = &'a OrderedRwLock>,
    ) -> Held<Vec<RwLockWriteGuard<'a, ()>>> {
        let level = enter(Level::Gate);
        Held { _guard: locks.into_iter().map(|l| l.lock.write()).collect(), _level: level }
    }
}

impl Default for OrderedRwLock {
    /// A repository gate (the only kind created by default).
    fn default() -> Self {
        Self::new(Level::Gate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_in_order_pass_and_out_of_order_panics() {
        let keys = Stripes::new(Level::Key, 8);
        let blobs = Stripes::new(Level::Blob, 8);
        {
            let _k = keys.lock_all(&[1, 2]);
            let _b = blobs.lock_all(&[3]);
        }
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _b = blobs.lock_all(&[3]);
            let _k = keys.lock_all(&[1]);
        }));
        let msg = r.expect_err("a key lock under a blob lock must panic");
        let text = msg.downcast_ref::<String>().cloned().unwrap_or_default();
        assert!(text.contains("taking a Key lock while holding a Blob lock"), "{text}");
        // The panic left no level behind.
        let _k = keys.lock_all(&[1]);
    }
}
