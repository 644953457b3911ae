//! The memory a ledger lives in, viewed as atomic words at byte offsets.
//!
//! Normally a shared mapping (`sys::SharedRegion`: the ledger file, or an anonymous memory
//! file for `Ledger::in_memory`). Under `cfg(loom)` a heap array of loom atomics, so that the loom
//! models run the same ledger code.

use crate::sync::AtomicU64;

#[cfg(not(loom))]
#[derive(Debug)]
pub(crate) struct Region(pub(crate) crate::sys::SharedRegion);

#[cfg(not(loom))]
impl Region {
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
    #[inline]
    pub(crate) fn w64(&self, off: usize) -> Option<&AtomicU64> {
        self.0.u64_at(off)
    }
}

#[cfg(loom)]
#[derive(Debug)]
pub(crate) struct Region {
    len: usize,
    w: Vec<AtomicU64>,
}

#[cfg(loom)]
impl Region {
    pub(crate) fn anonymous(len: usize) -> Result<Region, i32> {
        Ok(Region {
            len,
            w: (0..len / 8).map(|_| AtomicU64::new(0)).collect(),
        })
    }
    pub(crate) fn len(&self) -> usize {
        self.len
    }
    #[inline]
    pub(crate) fn w64(&self, off: usize) -> Option<&AtomicU64> {
        if off % 8 != 0 {
            return None;
        }
        self.w.get(off / 8)
    }
}
