//! The parallel, node-pinned population engine.
//!
//! A region is cut into chunks; worker threads pinned to the target node's CPUs take chunks from
//! one shared cursor until none is left, so no thread straggles behind a slow slice (QEMU and
//! Cloud Hypervisor give each thread one contiguous slice instead). Each chunk is faulted in
//! with `MADV_POPULATE_WRITE`, which reports a failure as an errno where touching the memory
//! would have raised SIGBUS.

use std::collections::BTreeMap;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};

use crate::sys::{self, Errno};

/// Where the chunks of a parallel pass are cut and who works on them.
#[derive(Debug, Clone)]
pub(crate) struct Pass {
    /// Start of the region.
    pub base: NonNull<u8>,
    /// Length of the region in bytes.
    pub len: usize,
    /// Chunk length in bytes (a multiple of the native page size, except the last chunk).
    pub chunk: usize,
    /// Worker threads.
    pub threads: usize,
    /// CPUs the workers are pinned to (all of them to the whole set; the scheduler balances).
    /// Empty: leave affinity alone.
    pub cpus: Vec<u32>,
}

/// What a pass observed.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// CPUs the workers were seen running on.
    pub worker_cpus: Vec<u32>,
    /// Whether pinning failed (e.g. the CPUs were not allowed) and workers ran unpinned.
    pub pin_failed: Option<Errno>,
}

/// A failed chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkError {
    pub offset: usize,
    pub len: usize,
    pub errno: Errno,
}

// SAFETY: `Pass` holds the address of a mapping owned by the caller for the whole pass; the
// workers only pass sub-ranges of it to the kernel and never dereference it.
unsafe impl Send for Pass {}
// SAFETY: as for Send: shared read-only access to an address, never a dereference.
unsafe impl Sync for Pass {}

/// The chunk size for a region: enough chunks that threads finish together (32 per thread),
/// each at least `min` and at most 256 MiB, a multiple of `granule`.
pub(crate) fn chunk_size(len: usize, threads: usize, granule: usize, min: usize) -> usize {
    let target = len / (threads.max(1) * 32);
    let c = target.clamp(min.max(granule), (256 << 20).max(granule));
    c.div_ceil(granule) * granule
}

/// Runs `work(offset, len)` over every chunk with `plan.threads` pinned workers. Stops handing
/// out chunks at the first error, which it returns (the one at the lowest offset, when several
/// workers fail at once).
pub(crate) fn run<F>(plan: &Pass, work: F) -> (Outcome, Result<(), ChunkError>)
where
    F: Fn(NonNull<u8>, usize, usize) -> Result<(), Errno> + Sync,
{
    let cursor = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_error: Mutex<Option<ChunkError>> = Mutex::new(None);
    let cpus_seen: Mutex<Vec<u32>> = Mutex::new(Vec::new());
    let pin_failed: Mutex<Option<Errno>> = Mutex::new(None);
    let threads = plan.threads.clamp(1, plan.len.div_ceil(plan.chunk).max(1));
    // Pinning to the set the threads already have is a no-op that still costs a
    // sched_setaffinity and possibly a migration per worker: skip it then. On a single-node
    // host (and whenever the node's CPUs are all the caller may use) that is always the case,
    // and the calling thread can then work too instead of only waiting for the others.
    let pin = !plan.cpus.is_empty() && sys::affinity().map_or(true, |a| a != plan.cpus);
    let spawned = if pin { threads } else { threads - 1 };
    // Nobody takes a chunk before every worker is running. Without this the calling thread
    // starts populating at once and a new worker starts milliseconds late (most likely its
    // stack mapping in pthread_create waits for the mmap lock the populate holds), and a
    // 2-thread populate falls well short of the raw limit: docs/benchmarks.md, "What was
    // improved on the way", has the measurements.
    let start_line = Barrier::new(spawned + usize::from(!pin));

    let worker = || {
        start_line.wait();
        if pin {
            if let Err(e) = sys::set_affinity(&plan.cpus) {
                *pin_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
            }
        }
        let mut seen = Vec::new();
        // Relaxed: the cursor only hands out disjoint offsets; no data is published through
        // it. `stop` is a hint to quit early; the error itself goes through a Mutex.
        while !stop.load(Ordering::Relaxed) {
            let off = cursor.fetch_add(plan.chunk, Ordering::Relaxed);
            if off >= plan.len {
                break;
            }
            let len = plan.chunk.min(plan.len - off);
            if let Some(c) = sys::current_cpu() {
                if !seen.contains(&c) {
                    seen.push(c);
                }
            }
            // `base + off` stays inside the mapping: off < plan.len.
            let addr = plan.base.as_ptr().wrapping_add(off);
            let addr = NonNull::new(addr).expect("inside a non-null mapping");
            if let Err(errno) = work(addr, off, len) {
                stop.store(true, Ordering::Relaxed);
                let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                let e = ChunkError {
                    offset: off,
                    len,
                    errno,
                };
                if slot.is_none_or(|old| old.offset > off) {
                    *slot = Some(e);
                }
                break;
            }
        }
        cpus_seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(seen);
    };

    std::thread::scope(|s| {
        for _ in 0..spawned {
            s.spawn(worker);
        }
        if !pin {
            // The calling thread is one of the workers (its affinity is left untouched).
            worker();
        }
    });

    let mut worker_cpus = cpus_seen.into_inner().unwrap_or_else(|p| p.into_inner());
    worker_cpus.sort_unstable();
    worker_cpus.dedup();
    let outcome = Outcome {
        worker_cpus,
        pin_failed: pin_failed.into_inner().unwrap_or_else(|p| p.into_inner()),
    };
    match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => (outcome, Err(e)),
        None => (outcome, Ok(())),
    }
}

/// Faults in `[addr, addr + len)` for writing, retrying when a signal interrupts the call.
pub(crate) fn populate_write(addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
    sys::madvise_retry(addr, len, libc::MADV_POPULATE_WRITE)
}

/// The per-node page counts of a verification pass.
#[derive(Debug, Default, Clone)]
pub(crate) struct Histogram {
    /// Pages seen per node.
    pub per_node: BTreeMap<u32, u64>,
    /// Pages the kernel said were not present, or could not say where they are.
    pub missing: u64,
    /// Pages queried.
    pub queried: u64,
}

impl Histogram {
    pub(crate) fn merge(&mut self, other: &Histogram) {
        for (n, c) in &other.per_node {
            *self.per_node.entry(*n).or_default() += c;
        }
        self.missing += other.missing;
        self.queried += other.queried;
    }
}

/// Asks the kernel where the pages at `addr + k * stride` (for `k` while inside `len`) live.
pub(crate) fn query_nodes(
    addr: NonNull<u8>,
    len: usize,
    stride: usize,
    hist: &mut Histogram,
) -> Result<(), Errno> {
    const BATCH: usize = 4096;
    let mut pages: Vec<*const u8> = Vec::with_capacity(BATCH);
    let mut status = vec![0i32; BATCH];
    let mut off = 0;
    while off < len {
        pages.clear();
        while off < len && pages.len() < BATCH {
            pages.push(addr.as_ptr().wrapping_add(off).cast_const());
            off += stride;
        }
        let st = &mut status[..pages.len()];
        sys::query_page_nodes(&pages, st)?;
        hist.queried += pages.len() as u64;
        for &s in st.iter() {
            match u32::try_from(s) {
                Ok(node) => *hist.per_node.entry(node).or_default() += 1,
                Err(_) => hist.missing += 1,
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_granular_and_bounded() {
        let g = 2 << 20;
        let c = chunk_size(8 << 30, 2, g, g);
        assert_eq!(c % g, 0);
        assert!(c <= 256 << 20);
        assert_eq!(chunk_size(1 << 30, 4, 1 << 30, 1 << 30), 1 << 30);
        assert_eq!(chunk_size(4096, 4, 4096, 2 << 20), 2 << 20);
    }

    #[test]
    fn every_chunk_is_worked_once() {
        let len = 10 << 20;
        let map = sys::mmap_anonymous(len, sys::Backing::Base, false).unwrap();
        let plan = Pass {
            base: map,
            len,
            chunk: 1 << 20,
            threads: 3,
            cpus: vec![],
        };
        let count = AtomicUsize::new(0);
        let (_, r) = run(&plan, |_, off, l| {
            assert_eq!(off % (1 << 20), 0);
            count.fetch_add(l, Ordering::Relaxed);
            Ok(())
        });
        r.unwrap();
        assert_eq!(count.into_inner(), len);
        let (_, r) = run(&plan, |_, off, _| {
            if off == 3 << 20 {
                Err(sys::Errno::new("test", libc::ENOMEM))
            } else {
                Ok(())
            }
        });
        assert_eq!(r.unwrap_err().offset, 3 << 20);
        // SAFETY: mapped above, no references into it.
        unsafe { sys::munmap(map, len).unwrap() };
    }
}
