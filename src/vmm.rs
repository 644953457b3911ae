//! Guest memory for rust-vmm VMMs (feature `vm-memory`): reservations become regions of a
//! [`vm_memory::GuestMemoryMmap`] at guest physical addresses the caller chooses.
//!
//! ```no_run
//! use numapin::vmm::Layout;
//! use numapin::{NodeId, PageSize, Reservation};
//! use vm_memory::{Bytes, GuestAddress};
//!
//! // One region per host node, reserved (and populated) concurrently.
//! let [low, high]: [Reservation; 2] = Reservation::build_many([
//!     Reservation::builder(1 << 30).node(NodeId(0)).page_size(PageSize::Huge2M),
//!     Reservation::builder(1 << 30).node(NodeId(1)).page_size(PageSize::Huge2M),
//! ])?
//! .try_into()
//! .expect("two regions");
//! let mem = Layout::new()
//!     .region(GuestAddress(0), low)
//!     .region(GuestAddress(4 << 30), high)
//!     .build()?;
//! mem.write_obj(0xdead_beef_u32, GuestAddress(4 << 30)).unwrap();
//! # Ok::<(), numapin::Error>(())
//! ```
//!
//! # Ownership: why a region can never outlive its memory
//! vm-memory's [`MmapRegion`] built over a raw pointer does not unmap anything; the memory
//! belongs to the [`Reservation`] (or [`PendingReservation`]). numapin moves it into a
//! [`RegionOwner`] and puts an `Arc` of that owner into the region's *bitmap*, the one type
//! parameter vm-memory keeps inside every [`MmapRegion`]. So:
//! - the mapping is unmapped exactly when the last [`MmapRegion`] (and any `Arc<RegionOwner>`
//!   the caller cloned) is dropped: every [`GuestRegionMmap`], every [`GuestMemoryMmap`] that
//!   holds it, and every `Arc<MmapRegion>` from [`GuestRegionMmap::get_mmap`] keep it mapped;
//! - the [`Reservation`] itself is no longer reachable, so no `&[u8]` of it can alias the
//!   guest's volatile writes, and nothing but the last drop can unmap it;
//! - everything vm-memory hands out that points into the memory ([`VolatileSlice`]) borrows
//!   from the region, so the borrow checker ends it before the region. The only way past this
//!   is a raw pointer (`as_ptr`, `get_host_address`), whose use is `unsafe` already.
//!
//! The owner wraps an inner bitmap `B` and forwards every bitmap call to it, so dirty-page
//! tracking (`vm_memory::bitmap::AtomicBitmap`, for live migration) works as with plain
//! vm-memory: use `Layout::<AtomicBitmap>::default()`.
//!
//! # Regions still being populated
//! A [`PendingReservation`] may be laid out too, so the VM can start while the workers fault
//! the pages in. The guest's own faults on pages not reached yet are covered by the kernel
//! promise [`PendingReservation::fault_guarantee`] names (hugetlb: pages set aside at `mmap`;
//! base pages/THP: allocated on demand). [`RegionOwner::wait`] (or [`wait_populated`] for the
//! whole guest) reports the workers' outcome; a failed population leaves the memory mapped,
//! because the guest may already use it, until the last region is dropped.
//!
//! [`VolatileSlice`]: vm_memory::VolatileSlice

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use vm_memory::bitmap::{Bitmap, NewBitmap, WithBitmapSlice};
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MmapRegion,
};

use crate::error::{Error, Result};
use crate::reservation::{
    FaultGuarantee, PendingReservation, PopulateProgress, Report, Reservation,
};
use crate::units::PageSize;

/// The guide "Using numapin in a VMM" (`docs/vmm-guide.md`); its examples are doctests.
#[doc = include_str!("../docs/vmm-guide.md")]
pub mod guide {}

/// Guest memory whose regions are numapin reservations ([`Layout::build`] makes one).
pub type NumaGuestMemory<B = ()> = GuestMemoryMmap<OwnedBitmap<B>>;

/// One region of a [`NumaGuestMemory`].
pub type NumaGuestRegion<B = ()> = GuestRegionMmap<OwnedBitmap<B>>;

/// The memory behind a guest region: a finished [`Reservation`] or one still being populated.
#[derive(Debug)]
pub enum RegionMemory {
    /// Populated, locked and verified.
    Ready(Reservation),
    /// Mapped, bound and locked; workers are still populating it.
    Pending(PendingReservation),
}

impl From<Reservation> for RegionMemory {
    fn from(r: Reservation) -> Self {
        RegionMemory::Ready(r)
    }
}

impl From<PendingReservation> for RegionMemory {
    fn from(p: PendingReservation) -> Self {
        RegionMemory::Pending(p)
    }
}

impl RegionMemory {
    fn ptr(&self) -> *mut u8 {
        match self {
            RegionMemory::Ready(r) => r.as_ptr(),
            RegionMemory::Pending(p) => p.as_ptr(),
        }
    }

    fn len(&self) -> usize {
        match self {
            RegionMemory::Ready(r) => r.len(),
            RegionMemory::Pending(p) => p.len(),
        }
    }

    fn page_size(&self) -> PageSize {
        match self {
            RegionMemory::Ready(r) => r.page_size(),
            RegionMemory::Pending(p) => p.page_size(),
        }
    }

    /// A shared reservation's file, as vm-memory's `FileOffset` (a duplicate descriptor).
    fn file_offset(&self) -> Result<Option<FileOffset>> {
        let fd = match self {
            RegionMemory::Ready(r) => r.as_fd(),
            RegionMemory::Pending(p) => p.as_fd(),
        };
        fd.map(|fd| {
            fd.try_clone_to_owned()
                .map(|o| FileOffset::new(std::fs::File::from(o), 0))
                .map_err(|source| Error::Sys {
                    call: "fcntl(F_DUPFD_CLOEXEC)",
                    source,
                })
        })
        .transpose()
    }
}

/// Where a region's memory stands.
enum State {
    Pending(PendingReservation),
    Ready(Reservation),
    /// Population failed. The mapping stays until the owner is dropped, because guest regions
    /// (and a running guest) may still point into it.
    Failed {
        _mapping: crate::reservation::HeldMapping,
        cause: std::sync::Arc<Error>,
        progress: PopulateProgress,
    },
    /// Transient, while `wait` turns `Pending` into `Ready`/`Failed` under the lock.
    Finishing,
}

/// Owns the memory of one guest region; kept alive by every region built over it (see the
/// module docs). Reach it with [`owner`] or `region.get_mmap().bitmap().owner()`.
///
/// Invariant: `addr..addr+len` is the mapping held by `state` (through a [`Reservation`], a
/// [`PendingReservation`] or, after a failed population, the bare mapping), read-write and
/// mapped for as long as this value lives.
pub struct RegionOwner {
    addr: usize,
    len: usize,
    page_size: PageSize,
    guarantee: FaultGuarantee,
    guest_addr: u64,
    state: Mutex<State>,
}

impl fmt::Debug for RegionOwner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegionOwner")
            .field("addr", &format_args!("{:#x}", self.addr))
            .field("len", &self.len)
            .field("page_size", &self.page_size)
            .field("guest_addr", &format_args!("{:#x}", self.guest_addr))
            .field("populated", &self.is_populated())
            .finish()
    }
}

impl RegionOwner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state as it was or `Finishing`; both are
        // safe to read, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The host address of the region's first byte (for `KVM_SET_USER_MEMORY_REGION`).
    /// Valid for as long as this owner lives.
    pub fn as_ptr(&self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a reservation is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The page size backing the region.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// The guest physical address of the region.
    pub fn guest_addr(&self) -> GuestAddress {
        GuestAddress(self.guest_addr)
    }

    /// What the kernel promises for a guest fault on a page the workers have not populated
    /// yet (irrelevant once [`RegionOwner::is_populated`]).
    pub fn fault_guarantee(&self) -> FaultGuarantee {
        self.guarantee
    }

    /// Whether population finished successfully and was collected by [`RegionOwner::wait`]
    /// (or the region was laid out from a finished [`Reservation`]).
    pub fn is_populated(&self) -> bool {
        // A finished `Pending` may still have failed: only `wait` joins and knows.
        matches!(&*self.lock(), State::Ready(_))
    }

    /// Whether the workers are done (successfully or not); [`RegionOwner::wait`] then returns
    /// without blocking.
    pub fn is_finished(&self) -> bool {
        match &*self.lock() {
            State::Pending(p) => p.is_finished(),
            State::Finishing => false,
            State::Ready(_) | State::Failed { .. } => true,
        }
    }

    /// Bytes populated so far and the rate.
    pub fn progress(&self) -> PopulateProgress {
        match &*self.lock() {
            State::Pending(p) => p.progress(),
            State::Ready(r) => PopulateProgress {
                done_bytes: r.len() as u64,
                total_bytes: r.len() as u64,
                elapsed_seconds: r.report().populate_seconds,
            },
            State::Failed { progress, .. } => *progress,
            State::Finishing => PopulateProgress {
                done_bytes: self.len as u64,
                total_bytes: self.len as u64,
                elapsed_seconds: 0.0,
            },
        }
    }

    /// The reservation's report, once population has finished and [`RegionOwner::wait`] was
    /// called (or the region was laid out from a finished [`Reservation`]).
    pub fn report(&self) -> Option<Report> {
        match &*self.lock() {
            State::Ready(r) => Some(r.report().clone()),
            _ => None,
        }
    }

    /// Waits until the workers are done and returns the report. Safe to call from several
    /// threads and several times; the memory stays mapped whatever the outcome.
    ///
    /// # Errors
    /// The workers' [`Error::Populate`] or [`Error::Misplaced`] to the first caller that sees
    /// the failure, [`Error::GuestPopulation`] with the same error as its source to later ones.
    pub fn wait(&self) -> Result<Report> {
        loop {
            {
                let mut st = self.lock();
                match &*st {
                    State::Ready(r) => return Ok(r.report().clone()),
                    State::Failed { cause, .. } => {
                        return Err(Error::GuestPopulation {
                            guest_addr: self.guest_addr,
                            source: std::sync::Arc::clone(cause),
                        })
                    }
                    State::Pending(p) if p.is_finished() => {
                        let progress = p.progress();
                        let State::Pending(p) = std::mem::replace(&mut *st, State::Finishing)
                        else {
                            unreachable!("matched Pending above")
                        };
                        match p.finish() {
                            Ok(r) => {
                                let report = r.report().clone();
                                *st = State::Ready(r);
                                return Ok(report);
                            }
                            Err(failed) => {
                                let (e, mapping) = *failed;
                                *st = State::Failed {
                                    _mapping: mapping,
                                    cause: std::sync::Arc::new(copy_of_population_error(&e)),
                                    progress,
                                };
                                return Err(e);
                            }
                        }
                    }
                    State::Pending(_) | State::Finishing => {}
                }
            }
            // Poll rather than join under the lock, so progress() stays answerable meanwhile.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// A copy of an error a background population returned, for the waiters after the first (the
/// first gets the original). Population fails with these variants only; anything else is kept
/// as its message.
fn copy_of_population_error(e: &Error) -> Error {
    match e {
        Error::Populate {
            offset,
            len,
            errno,
            page_size,
            nodes,
        } => Error::Populate {
            offset: *offset,
            len: *len,
            errno: *errno,
            page_size: *page_size,
            nodes: nodes.clone(),
        },
        Error::Misplaced {
            expected,
            misplaced,
            placement,
        } => Error::Misplaced {
            expected: expected.clone(),
            misplaced: *misplaced,
            placement: placement.clone(),
        },
        Error::InterleaveUneven {
            page_size,
            nodes,
            placement,
            share,
            short_nodes,
        } => Error::InterleaveUneven {
            page_size: *page_size,
            nodes: nodes.clone(),
            placement: placement.clone(),
            share: *share,
            short_nodes: short_nodes.clone(),
        },
        Error::PopulationCancelled => Error::PopulationCancelled,
        Error::Sys { call, source } => Error::Sys {
            call,
            source: match source.raw_os_error() {
                Some(n) => std::io::Error::from_raw_os_error(n),
                None => std::io::Error::new(source.kind(), source.to_string()),
            },
        },
        other => Error::Sys {
            call: "populate",
            source: std::io::Error::other(other.to_string()),
        },
    }
}

/// A vm-memory [`Bitmap`] that owns the region's memory (an `Arc<`[`RegionOwner`]`>`) and
/// forwards every bitmap operation to an inner bitmap `B` (`()` tracks nothing;
/// `vm_memory::bitmap::AtomicBitmap` tracks dirty pages).
///
/// Deliberately not `Clone`: the owner is shared through [`OwnedBitmap::owner`].
#[derive(Debug)]
pub struct OwnedBitmap<B = ()> {
    owner: Arc<RegionOwner>,
    inner: B,
}

impl<B> OwnedBitmap<B> {
    /// The owner of the region's memory.
    pub fn owner(&self) -> &Arc<RegionOwner> {
        &self.owner
    }

    /// The inner bitmap.
    pub fn inner(&self) -> &B {
        &self.inner
    }
}

impl<'a, B: WithBitmapSlice<'a>> WithBitmapSlice<'a> for OwnedBitmap<B> {
    type S = B::S;
}

impl<B: Bitmap> Bitmap for OwnedBitmap<B> {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.inner.mark_dirty(offset, len)
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.inner.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> <Self as WithBitmapSlice<'_>>::S {
        self.inner.slice_at(offset)
    }
}

/// The owner of a region's memory.
pub fn owner<B: Bitmap>(region: &NumaGuestRegion<B>) -> &Arc<RegionOwner> {
    // `GuestRegionMmap` derefs to its `MmapRegion`, whose `bitmap()` is the whole bitmap.
    let mmap: &MmapRegion<OwnedBitmap<B>> = region;
    mmap.bitmap().owner()
}

/// Waits for every region of the guest to be populated, and returns their reports in guest
/// address order.
///
/// # Errors
/// The first region's error, after every region was waited for (see [`RegionOwner::wait`]).
pub fn wait_populated<B: Bitmap>(mem: &NumaGuestMemory<B>) -> Result<Vec<Report>> {
    let mut reports = Vec::new();
    let mut first_err = None;
    for region in mem.iter() {
        match owner(region).wait() {
            Ok(r) => reports.push(r),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(reports),
    }
}

/// Populate progress summed over every region of the guest.
pub fn progress<B: Bitmap>(mem: &NumaGuestMemory<B>) -> PopulateProgress {
    let mut total = PopulateProgress {
        done_bytes: 0,
        total_bytes: 0,
        elapsed_seconds: 0.0,
    };
    for region in mem.iter() {
        let p = owner(region).progress();
        total.done_bytes += p.done_bytes;
        total.total_bytes += p.total_bytes;
        total.elapsed_seconds = total.elapsed_seconds.max(p.elapsed_seconds);
    }
    total
}

/// Lays out reservations as guest memory regions. Regions may be added in any order; they
/// are sorted by guest address, and must not overlap.
#[must_use = "a layout does nothing until build() is called"]
pub struct Layout<B = ()> {
    regions: Vec<(GuestAddress, RegionMemory, B)>,
}

impl<B> Default for Layout<B> {
    fn default() -> Self {
        Layout {
            regions: Vec::new(),
        }
    }
}

impl<B> fmt::Debug for Layout<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.regions.iter().map(|(a, m, _)| (a.0, m.len())))
            .finish()
    }
}

impl Layout {
    /// An empty layout whose regions track no dirty pages.
    pub fn new() -> Self {
        Layout::default()
    }
}

/// The guest address alignment a region of this page size needs: KVM maps guest memory with
/// huge stage-2 (EPT/NPT) pages only where the guest address and the host address are
/// aligned alike, so a misaligned hugepage region would lose exactly what it was reserved for.
pub fn guest_alignment(page_size: PageSize) -> u64 {
    match page_size {
        PageSize::Huge1G => 1 << 30,
        PageSize::Huge2M | PageSize::Transparent => 2 << 20,
        PageSize::Base4K | PageSize::Auto => 4096,
    }
}

impl<B: Bitmap> Layout<B> {
    /// Adds a region at `guest_addr`, with a fresh inner bitmap sized for it.
    pub fn region(self, guest_addr: GuestAddress, memory: impl Into<RegionMemory>) -> Self
    where
        B: NewBitmap,
    {
        let memory = memory.into();
        let bitmap = B::with_len(memory.len());
        self.region_with_bitmap(guest_addr, memory, bitmap)
    }

    /// Adds a region at `guest_addr` with the given inner bitmap.
    pub fn region_with_bitmap(
        mut self,
        guest_addr: GuestAddress,
        memory: impl Into<RegionMemory>,
        bitmap: B,
    ) -> Self {
        self.regions.push((guest_addr, memory.into(), bitmap));
        self
    }

    /// Checks the layout and builds the guest memory. Hugetlb regions are marked as such
    /// (`is_hugetlbfs() == Some(true)`), others `Some(false)`.
    ///
    /// # Errors
    /// [`Error::EmptyLayout`] for an empty layout, [`Error::VmMemory`] if vm-memory refuses it; [`Error::GuestLayout`] for a region whose
    /// guest address is not aligned to [`guest_alignment`] of its page size, that ends past
    /// the 64-bit guest address space, or that overlaps another. The reservations are
    /// released (unmapped, pool pages returned) on every error.
    pub fn build(self) -> Result<NumaGuestMemory<B>> {
        let regions = self.build_regions()?;
        // Checked by build_regions: sorted, non-empty, non-overlapping; vm-memory checks again.
        GuestMemoryMmap::from_regions(regions).map_err(|e| Error::VmMemory {
            what: "the layout",
            reason: e.to_string(),
        })
    }

    /// Like [`Layout::build`], but returns the regions (sorted by guest address) instead of a
    /// guest memory, e.g. to hot-plug them into an existing one with
    /// `GuestMemoryMmap::insert_region`.
    ///
    /// # Errors
    /// As [`Layout::build`]; overlap is checked among these regions only.
    pub fn build_regions(self) -> Result<Vec<NumaGuestRegion<B>>> {
        if self.regions.is_empty() {
            return Err(Error::EmptyLayout);
        }
        // Check everything before building anything.
        let mut spans = Vec::with_capacity(self.regions.len());
        for (index, (addr, mem, _)) in self.regions.iter().enumerate() {
            let len = mem.len() as u64;
            let align = guest_alignment(mem.page_size());
            let err = |problem: String| Error::GuestLayout {
                index,
                guest_addr: addr.0,
                len,
                problem,
            };
            if addr.0 % align != 0 {
                let down = addr.0 / align * align;
                return Err(err(format!(
                    "guest address is not aligned to the region's {} page size; KVM backs guest memory with huge pages only where guest and host addresses are aligned alike: use {down:#x} or {:#x}",
                    mem.page_size(),
                    down.saturating_add(align)
                )));
            }
            let Some(end) = addr.0.checked_add(len) else {
                return Err(err(format!(
                    "ends past the 64-bit guest address space; start it at or below {:#x}",
                    (u64::MAX - len + 1) / align * align
                )));
            };
            spans.push((addr.0, end, index));
        }
        spans.sort_unstable();
        for w in spans.windows(2) {
            let (a_start, a_end, a) = w[0];
            let (b_start, b_end, b) = w[1];
            if b_start < a_end {
                // Name the region added later; suggest the first aligned address after `a`.
                let (index, start, end, other, o_start, o_end) = if a < b {
                    (b, b_start, b_end, a, a_start, a_end)
                } else {
                    (a, a_start, a_end, b, b_start, b_end)
                };
                let align = guest_alignment(self.regions[index].1.page_size());
                return Err(Error::GuestLayout {
                    index,
                    guest_addr: start,
                    len: end - start,
                    problem: format!(
                        "overlaps region {other} at {o_start:#x}..{o_end:#x}; move it to {:#x} or above",
                        o_end.next_multiple_of(align)
                    ),
                });
            }
        }

        let mut regions = Vec::with_capacity(self.regions.len());
        for (index, (addr, mem, bitmap)) in self.regions.into_iter().enumerate() {
            regions.push(make_region(index, addr, mem, bitmap)?);
        }
        regions.sort_by_key(|r| r.start_addr());
        Ok(regions)
    }
}

/// Wraps one reservation as a vm-memory region owned by its bitmap.
fn make_region<B: Bitmap>(
    index: usize,
    guest_addr: GuestAddress,
    memory: RegionMemory,
    bitmap: B,
) -> Result<NumaGuestRegion<B>> {
    let ptr = memory.ptr();
    let len = memory.len();
    let page_size = memory.page_size();
    let guarantee = match &memory {
        // Every page is present already; say what held while it was populated.
        RegionMemory::Ready(_) if page_size.is_hugetlb() => FaultGuarantee::HugetlbReserved,
        RegionMemory::Ready(_) => FaultGuarantee::OnDemand,
        RegionMemory::Pending(p) => p.fault_guarantee(),
    };
    let hugetlb = page_size.is_hugetlb();
    let file_offset = memory.file_offset()?;
    let mut flags = if file_offset.is_some() {
        libc::MAP_SHARED
    } else {
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS
    };
    match page_size {
        _ if file_offset.is_some() => {}
        PageSize::Huge2M => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
        PageSize::Huge1G => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_1GB,
        _ => {}
    }
    if guarantee == FaultGuarantee::None {
        flags |= libc::MAP_NORESERVE;
    }
    let state = match memory {
        RegionMemory::Ready(r) => State::Ready(r),
        RegionMemory::Pending(p) => State::Pending(p),
    };
    let owner = Arc::new(RegionOwner {
        addr: ptr as usize,
        len,
        page_size,
        guarantee,
        guest_addr: guest_addr.0,
        state: Mutex::new(state),
    });
    let bitmap = OwnedBitmap {
        owner,
        inner: bitmap,
    };
    let mut builder = MmapRegionBuilder::new_with_bitmap(len, bitmap);
    if let Some(fo) = file_offset {
        builder = builder.with_file_offset(fo);
    }
    // SAFETY:
    // - `ptr..ptr+len` is the whole read-write mapping of the reservation now held by `owner`
    //   (RegionOwner invariant; private anonymous, or a shared reservation's whole file mapped
    //   `MAP_SHARED` from offset 0, the file `file_offset` duplicates), page-aligned since
    //   mmap returned it;
    // - `owner` goes into the region's bitmap, a field of the `MmapRegion` built here, so the
    //   mapping outlives the region and every `Arc` of it; nothing else can unmap it, because
    //   the reservation is reachable only through `owner`, which exposes no unmapping call;
    // - `prot` and `flags` are those the mapping was created with.
    let mmap = unsafe {
        builder
            .with_raw_mmap_pointer(ptr)
            .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE)
            .with_mmap_flags(flags)
            .with_hugetlbfs(hugetlb)
            .build()
    }
    .map_err(|e| Error::VmMemory {
        what: "the mapping",
        reason: e.to_string(),
    })?;
    GuestRegionMmap::new(mmap, guest_addr).ok_or_else(|| Error::GuestLayout {
        index,
        guest_addr: guest_addr.0,
        len: len as u64,
        problem: "ends past the 64-bit guest address space".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(size: u64) -> Reservation {
        Reservation::builder(size)
            .page_size(PageSize::Base4K)
            .lock(false)
            .threads(1)
            .build()
            .unwrap()
    }

    #[test]
    fn guest_memory_can_be_shared_between_vcpu_threads() {
        fn send_sync<T: Send + Sync>() {}
        send_sync::<NumaGuestMemory>();
        send_sync::<RegionOwner>();
    }

    #[test]
    fn alignment_follows_the_page_size() {
        assert_eq!(guest_alignment(PageSize::Huge1G), 1 << 30);
        assert_eq!(guest_alignment(PageSize::Huge2M), 2 << 20);
        assert_eq!(guest_alignment(PageSize::Base4K), 4096);
    }

    #[test]
    fn overlap_names_both_regions_and_a_fix() {
        let e = Layout::new()
            .region(GuestAddress(0), base(1 << 20))
            .region(GuestAddress(0x8_0000), base(1 << 20))
            .build()
            .unwrap_err();
        match &e {
            Error::GuestLayout {
                index,
                guest_addr,
                problem,
                ..
            } => {
                assert_eq!((*index, *guest_addr), (1, 0x8_0000));
                assert!(problem.contains("overlaps region 0"), "{e}");
                assert!(problem.contains("0x100000"), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn misaligned_and_overflowing_addresses_are_refused() {
        let e = Layout::new()
            .region(GuestAddress(0x1800), base(1 << 20))
            .build()
            .unwrap_err();
        assert!(
            matches!(&e, Error::GuestLayout { problem, .. } if problem.contains("0x1000") && problem.contains("0x2000")),
            "{e}"
        );
        let e = Layout::new()
            .region(GuestAddress(u64::MAX - 4095), base(1 << 20))
            .build()
            .unwrap_err();
        assert!(
            matches!(&e, Error::GuestLayout { problem, .. } if problem.contains("address space")),
            "{e}"
        );
        assert!(matches!(
            Layout::new().build().unwrap_err(),
            Error::EmptyLayout
        ));
    }
}
