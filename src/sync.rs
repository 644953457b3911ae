//! The atomics the ledger uses: `std`'s (and `portable-atomic`'s 128-bit one) normally,
//! `loom`'s under `cfg(loom)` so that the loom models in `tests/loom_ledger.rs` explore every
//! interleaving of the real algorithm. The ledger imports atomics only from here.

#[cfg(not(loom))]
pub(crate) use portable_atomic::AtomicU128;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};

/// Under loom: a 16-byte atomic modelled as a loom mutex around a `u128`. Every operation is
/// one critical section, i.e. linearisable, which is what `cmpxchg16b` / `casp` provide; loom
/// then explores all interleavings of these operations with the 8-byte atomics around them.
/// (Only the model uses a lock; the real type is lock-free and `Ledger` refuses to run where it
/// is not.)
#[cfg(loom)]
#[derive(Debug, Default)]
pub(crate) struct AtomicU128(loom::sync::Mutex<u128>);

#[cfg(loom)]
impl AtomicU128 {
    pub(crate) fn new(v: u128) -> Self {
        AtomicU128(loom::sync::Mutex::new(v))
    }
    pub(crate) fn load(&self, _o: Ordering) -> u128 {
        *self.0.lock().unwrap()
    }
    pub(crate) fn compare_exchange(
        &self,
        current: u128,
        new: u128,
        s: Ordering,
        f: Ordering,
    ) -> Result<u128, u128> {
        self.compare_exchange_weak(current, new, s, f)
    }
    pub(crate) fn compare_exchange_weak(
        &self,
        current: u128,
        new: u128,
        _s: Ordering,
        _f: Ordering,
    ) -> Result<u128, u128> {
        let mut g = self.0.lock().unwrap();
        if *g == current {
            *g = new;
            Ok(current)
        } else {
            Err(*g)
        }
    }
}
