//! The atomics the ledger uses: `std`'s normally,
//! `loom`'s under `cfg(loom)` so that the loom models in `tests/loom_ledger.rs` explore every
//! interleaving of the real algorithm. The ledger imports atomics only from here.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, Ordering};
