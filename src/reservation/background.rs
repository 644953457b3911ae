//! Background population: [`PendingReservation`], a region the caller may use while workers
//! still populate it.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use super::map::{prepare, Mapping};
use super::populate::{populate_and_verify, Progress};
use super::{Report, Reservation, ReservationPlan};
use crate::error::{Error, Result};
use crate::units::PageSize;

/// What the kernel promises about a fault on a page of a [`PendingReservation`] that the
/// background workers have not populated yet (the guest may touch any page at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FaultGuarantee {
    /// hugetlb mapped without `MAP_NORESERVE`: `mmap` reserved one pool page for every page of
    /// the region (`HugePages_Rsvd`), so a fault finds a page and cannot SIGBUS. The
    /// reservation is counted per host; the pages come from the bound nodes, so on a
    /// multi-node host it holds per node only if every other user of those pools reserves
    /// through the same accounting (the numapin ledger).
    HugetlbReserved,
    /// hugetlb with `MAP_NORESERVE`: nothing was set aside; if the pool runs dry before a page
    /// is populated, the guest's fault on it raises SIGBUS. Use only with your own admission.
    None,
    /// Base pages or THP: faults allocate on demand from the node's free memory (locked as they
    /// fault with `MLOCK_ONFAULT`). They cannot SIGBUS; under memory exhaustion the kernel
    /// reclaims, or its OOM killer picks a victim.
    OnDemand,
}

/// Progress of a background population.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PopulateProgress {
    /// Bytes populated so far.
    pub done_bytes: u64,
    /// Bytes in the region.
    pub total_bytes: u64,
    /// Seconds since population started.
    pub elapsed_seconds: f64,
}

impl PopulateProgress {
    /// Populate rate so far in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        if self.elapsed_seconds > 0.0 {
            self.done_bytes as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }

    /// Fraction done, 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        self.done_bytes as f64 / self.total_bytes.max(1) as f64
    }
}

struct Shared {
    map: Mapping,
    progress: Progress,
}

/// A reservation that is mapped, bound and locked (and for hugetlb, set aside by the kernel)
/// while worker threads still populate it — so a VM can start before every page is faulted
/// in. [`PendingReservation::wait`] turns it into a verified [`Reservation`]. Dropping it
/// stops the workers, waits for them, and unmaps.
///
/// The memory at [`PendingReservation::as_ptr`] may be used at once; what the kernel promises
/// for a page touched before the workers reach it is [`PendingReservation::fault_guarantee`].
pub struct PendingReservation {
    /// Present until `wait` or `drop` takes it.
    inner: Option<Pending>,
    started: Instant,
    guarantee: FaultGuarantee,
    page_size: PageSize,
    /// The ledger charge, moved into the reservation by `wait` (refunded if it fails).
    charge: Option<crate::ledger::VmRecord>,
}

/// A mapping whose population failed, with its ledger charge: kept by the vm-memory owner for
/// as long as guest regions point into it (unmapped first, then refunded, when dropped).
pub(crate) type HeldMapping = (Mapping, Option<crate::ledger::VmRecord>);

struct Pending {
    shared: Arc<Shared>,
    worker: JoinHandle<Result<Report>>,
}

impl fmt::Debug for PendingReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReservation")
            .field("map", &self.shared().map)
            .field("progress", &self.progress())
            .finish()
    }
}

impl PendingReservation {
    fn shared(&self) -> &Shared {
        &self
            .inner
            .as_ref()
            .expect("present until wait or drop")
            .shared
    }

    /// The first byte of the region (valid now, for the life of this value and of the
    /// [`Reservation`] it becomes).
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared().map.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.shared().map.len
    }

    /// The descriptor of a shared reservation's sealed memory file (`None` for a private
    /// one); see [`Reservation::as_fd`]. Pages not populated yet are faulted in by whoever
    /// touches them first, under the same [`PendingReservation::fault_guarantee`].
    pub fn as_fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        use std::os::fd::AsFd;
        self.shared().map.file.as_ref().map(|f| f.as_fd())
    }

    /// Always false: a reservation is never empty.
    pub fn is_empty(&self) -> bool {
        self.shared().map.len == 0
    }

    /// Bytes populated so far, and the rate.
    pub fn progress(&self) -> PopulateProgress {
        let s = self.shared();
        PopulateProgress {
            // Relaxed: a statistic; wait() joins the workers for the final word.
            done_bytes: s.progress.done.load(Ordering::Relaxed),
            total_bytes: s.map.len as u64,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Whether the workers have finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.inner.as_ref().is_none_or(|p| p.worker.is_finished())
    }

    /// What the kernel promises for a fault on a page not populated yet.
    pub fn fault_guarantee(&self) -> FaultGuarantee {
        self.guarantee
    }

    /// The page size in use (never `Auto`).
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Waits for population and verification to finish.
    ///
    /// # Errors
    /// [`Error::Populate`] or [`Error::Misplaced`] from the workers, exactly as
    /// [`ReservationBuilder::build`](super::ReservationBuilder::build) would return them; the region is unmapped then.
    pub fn wait(self) -> Result<Reservation> {
        // On error the mapping is dropped here, which unmaps it, then refunds the charge.
        self.finish().map_err(|failed| failed.0)
    }

    /// Waits for the workers and hands back the mapping whatever the outcome: on error the
    /// caller decides when to unmap (the vm-memory owner keeps it mapped for as long as guest
    /// regions point into it).
    pub(crate) fn finish(mut self) -> std::result::Result<Reservation, Box<(Error, HeldMapping)>> {
        let Pending { shared, worker } = self.inner.take().expect("present until wait or drop");
        let outcome = worker
            .join()
            .unwrap_or_else(|_| Err(Error::sys("populate worker", libc::EIO)));
        // The worker dropped its handle on `shared` when its closure returned (or unwound),
        // before join() did, so ours is the last one.
        let shared = Arc::into_inner(shared).expect("the worker released the mapping");
        let charge = self.charge.take();
        match outcome {
            Ok(report) => {
                if let Some(c) = &charge {
                    c.set_populated(shared.map.len as u64);
                }
                Ok(Reservation {
                    map: shared.map,
                    report,
                    charge,
                })
            }
            // The charge stays with the mapping: the pages are held until it is unmapped
            // (tuple fields drop in order: unmapped first, then refunded).
            Err(e) => Err(Box::new((e, (shared.map, charge)))),
        }
    }
}

impl Drop for PendingReservation {
    fn drop(&mut self) {
        if let Some(p) = self.inner.take() {
            // Relaxed: the workers poll the flag between chunks; join() synchronises. The
            // mapping is unmapped only after the workers stopped touching it.
            p.shared.progress.cancel.store(true, Ordering::Relaxed);
            let _ = p.worker.join();
        }
    }
}

/// Maps, binds and locks, then starts the population and verification in a background
/// thread (the work of [`super::ReservationBuilder::build_background`] after the preflight).
pub(super) fn start(
    plan: ReservationPlan,
    charge: Option<crate::ledger::VmRecord>,
    preflight_seconds: f64,
) -> Result<PendingReservation> {
    let mut notes = plan.notes.clone();
    let t_map = Instant::now();
    let map = prepare(&plan, &mut notes)?;
    let map_seconds = t_map.elapsed().as_secs_f64();
    let guarantee = match (plan.page_size.is_hugetlb(), plan.noreserve) {
        (true, false) => FaultGuarantee::HugetlbReserved,
        (true, true) => FaultGuarantee::None,
        (false, _) => FaultGuarantee::OnDemand,
    };
    let shared = Arc::new(Shared {
        map,
        progress: Progress::default(),
    });
    let page_size = plan.page_size;
    let theirs = Arc::clone(&shared);
    let worker = std::thread::Builder::new()
        .name("numapin-populate".into())
        .spawn(move || {
            populate_and_verify(
                &theirs.map,
                &plan,
                &theirs.progress,
                notes,
                [preflight_seconds, map_seconds],
            )
        })
        .map_err(|e| Error::Sys {
            call: "spawn populate thread",
            source: e,
        })?;
    Ok(PendingReservation {
        inner: Some(Pending { shared, worker }),
        started: Instant::now(),
        guarantee,
        page_size,
        charge,
    })
}
