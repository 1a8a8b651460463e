//! Striped mutexes.
//!
//! Two families exist and are always taken in this order, each in ascending
//! stripe order, so no two operations can deadlock:
//! 1. key stripes (an object key or an upload id): serialise read-modify-write of
//!    one index entry;
//! 2. blob stripes (a content hash): make "is this blob present?" + "add a
//!    reference" atomic with respect to GC removing the blob.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};

use parking_lot::{Mutex, MutexGuard};

/// The identity used to pick a stripe for any hashable item.
pub(crate) fn lock_id(item: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    item.hash(&mut h);
    h.finish()
}

/// A fixed set of mutexes addressed by hashing.
pub(crate) struct Stripes {
    locks: Vec<Mutex<()>>,
}

/// Guards for a set of stripes, released on drop.
pub(crate) struct StripeGuards<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl Stripes {
    pub fn new(n: usize) -> Self {
        Self { locks: (0..n).map(|_| Mutex::new(())).collect() }
    }

    /// Locks the stripes of all `items` (see [`lock_id`]), in ascending stripe
    /// order, each once. Everything one operation needs from one family must be
    /// locked in a single call.
    pub fn lock_all(&self, items: &[u64]) -> StripeGuards<'_> {
        let n = self.locks.len() as u64;
        let mut idx: Vec<usize> = items.iter().map(|i| (i % n) as usize).collect();
        idx.sort_unstable();
        idx.dedup();
        StripeGuards { _guards: idx.into_iter().map(|i| self.locks[i].lock()).collect() }
    }
}
