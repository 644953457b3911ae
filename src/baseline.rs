//! The ballooning baseline: guest memory as a ballooning hypervisor hands it out, so that
//! numapin's benchmarks can compare a [`Reservation`](crate::Reservation) with it in one run.
//!
//! A [`LazyRegion`] is mapped with `MAP_NORESERVE` and nothing else: no populate, no lock, no
//! NUMA binding. Every page is faulted in by its first touch. Its balloon
//! ([`LazyRegion::inflate`]) hands ranges back to the host the way a balloon driver's host
//! side does — `MADV_DONTNEED` for private anonymous memory, `MADV_REMOVE` for a shared
//! (memfd/shmem) backing, `fallocate(FALLOC_FL_PUNCH_HOLE)` for a hugetlb memfd — at a
//! configurable granule and rate; [`LazyRegion::deflate`] gives the ranges back to the guest,
//! whose next touch faults them in again.
//!
//! The API mirrors [`Reservation`](crate::Reservation) (`as_ptr`, `len`, `page_size`,
//! `as_slice`, `as_mut_slice`) so one benchmark loop runs over both.
//!
//! ```
//! use numapin::baseline::{LazyRegion, Sharing};
//! use numapin::PageSize;
//!
//! # fn main() -> Result<(), numapin::Error> {
//! let mut guest = LazyRegion::new(8 << 20, PageSize::Base4K, Sharing::Private)?;
//! guest.touch(0, guest.len());            // first touch: one fault per page
//! guest.inflate(0, 2 << 20)?;             // the balloon takes 2 MiB back
//! assert_eq!(guest.inflated_bytes(), 2 << 20);
//! guest.deflate(0, 2 << 20, true)?;       // and returns it; `true` touches it again
//! # Ok(())
//! # }
//! ```

use std::os::fd::{AsFd, OwnedFd};
use std::ptr::NonNull;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::sys::{self, Backing};
use crate::units::{format_bytes, PageSize};

/// Whether a [`LazyRegion`] is private anonymous memory or a shared memory file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    /// `MAP_PRIVATE | MAP_ANONYMOUS` (the balloon uses `MADV_DONTNEED`).
    Private,
    /// `MAP_SHARED` of a memfd — shmem for base pages, hugetlbfs for 2M/1G — as VMMs use for
    /// vhost-user and live upgrade (the balloon uses `MADV_REMOVE` or a punched hole).
    Shared,
}

/// How the balloon hands memory back to the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discard {
    /// `madvise(MADV_DONTNEED)`: private anonymous memory, THP and private hugetlb.
    DontNeed,
    /// `madvise(MADV_REMOVE)`: frees the backing shmem pages of a shared mapping.
    Remove,
    /// `fallocate(FALLOC_FL_PUNCH_HOLE)` on the memfd: frees hugetlb pages to the pool.
    PunchHole,
}

/// A lazily faulted region with a balloon: the baseline numapin is compared with.
///
/// Invariant: `ptr..ptr+len` is a mapping created by [`LazyRegion::new`], owned by this value
/// alone, readable and writable for as long as the value lives; for `Sharing::Shared` it maps
/// `fd` from offset 0, and nobody else holds `fd`.
#[derive(Debug)]
pub struct LazyRegion {
    ptr: NonNull<u8>,
    len: usize,
    page_size: PageSize,
    sharing: Sharing,
    fd: Option<OwnedFd>,
    granule: usize,
    rate: Option<u64>,
    /// One bit per granule: set while the balloon holds it.
    inflated: Vec<u64>,
}

// SAFETY: the mapping (and memfd) are owned by this value; nothing about them is tied to the
// thread that created them.
unsafe impl Send for LazyRegion {}
// SAFETY: `&LazyRegion` only hands out `&[u8]`, the raw address, and kernel calls that do not
// change contents (populate, mincore); every call that does takes `&mut self`.
unsafe impl Sync for LazyRegion {}

impl LazyRegion {
    /// Maps `size` bytes lazily: `MAP_NORESERVE`, no populate, no lock, no NUMA policy.
    ///
    /// `Base4K` is mapped with `MADV_NOHUGEPAGE` (so it stays 4 KiB even when THP is
    /// `always`), `Transparent` 2 MiB-aligned with `MADV_HUGEPAGE`, `Huge2M`/`Huge1G` from the
    /// hugetlb pool without a reservation — as a ballooning host overcommits it: a fault on an
    /// empty pool raises SIGBUS. The balloon starts with a granule of one native page and no
    /// rate limit ([`LazyRegion::set_balloon`]).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] if `size` is zero or not a multiple of the page size,
    /// [`Error::PageSizeAuto`] for `Auto`, [`Error::SharedThp`] for shared THP, [`Error::Sys`] when the kernel
    /// refuses a call. Nothing stays mapped after an error.
    pub fn new(size: u64, page_size: PageSize, sharing: Sharing) -> Result<LazyRegion> {
        let Some(native) = page_size.native_bytes() else {
            return Err(Error::PageSizeAuto {
                what: "the baseline",
            });
        };
        let gran = page_size.bytes().unwrap_or(native) as u64;
        if size == 0 || size % gran != 0 || usize::try_from(size).is_err() {
            return Err(Error::InvalidSize {
                size,
                reason: format!(
                    "a lazy {page_size} region needs a non-zero multiple of {}",
                    format_bytes(gran)
                ),
            });
        }
        let len = size as usize;
        let (ptr, fd) = match (sharing, page_size) {
            (Sharing::Shared, PageSize::Transparent) => return Err(Error::SharedThp),
            (Sharing::Private, PageSize::Transparent) => (map_thp(len)?, None),
            (Sharing::Private, p) => {
                let ptr = sys::mmap_anonymous(len, backing(p), true)
                    .map_err(|e| Error::sys("mmap", e))?;
                (ptr, None)
            }
            (Sharing::Shared, p) => {
                use rustix::fs::MemfdFlags as F;
                let flags = F::CLOEXEC
                    | match p {
                        PageSize::Huge2M => F::HUGETLB | F::HUGE_2MB,
                        PageSize::Huge1G => F::HUGETLB | F::HUGE_1GB,
                        _ => F::empty(),
                    };
                let fd = rustix::fs::memfd_create("numapin-baseline", flags)
                    .map_err(|e| Error::sys("memfd_create", e.raw_os_error()))?;
                rustix::fs::ftruncate(&fd, size)
                    .map_err(|e| Error::sys("ftruncate", e.raw_os_error()))?;
                let ptr =
                    sys::mmap_shared(fd.as_fd(), len, true).map_err(|e| Error::sys("mmap", e))?;
                (ptr, Some(fd))
            }
        };
        // From here on `region` owns the mapping: an error below unmaps it in Drop.
        let region = LazyRegion {
            ptr,
            len,
            page_size,
            sharing,
            fd,
            granule: native,
            rate: None,
            inflated: vec![0; (len / native).div_ceil(64)],
        };
        match page_size {
            PageSize::Base4K if sharing == Sharing::Private => {
                sys::madvise(ptr, len, libc::MADV_NOHUGEPAGE)
                    .map_err(|e| Error::sys("madvise(MADV_NOHUGEPAGE)", e))?;
            }
            PageSize::Transparent => {
                sys::madvise(ptr, len, libc::MADV_HUGEPAGE)
                    .map_err(|e| Error::sys("madvise(MADV_HUGEPAGE)", e))?;
            }
            _ => {}
        }
        Ok(region)
    }

    /// The first byte of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Always false: a region is never empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The page size the region was mapped with.
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Bytes of one native page (2 MiB for THP).
    pub fn page_bytes(&self) -> usize {
        self.page_size.native_bytes().unwrap_or(4096)
    }

    /// Private or shared.
    pub fn sharing(&self) -> Sharing {
        self.sharing
    }

    /// The region as bytes. Reading a page not yet touched faults it in (the shared zero page
    /// for private base pages; a pool page for hugetlb, SIGBUS if the pool is empty).
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: per type invariant the range is mapped readable for the life of `self`;
        // writes need `&mut self`.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The region as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: per type invariant the range is mapped read-write for the life of `self`, and
        // `&mut self` makes this the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Writes one byte in every base page of `[offset, offset + len)` (clamped to the
    /// region): a guest touching its memory. Returns how long it took. On a hugetlb region
    /// whose pool is empty the fault raises SIGBUS, as it would in a guest of an overcommitted
    /// host; [`LazyRegion::populate`] reports that as an error instead.
    pub fn touch(&mut self, offset: usize, len: usize) -> Duration {
        let step = sys::page_size();
        let end = offset.saturating_add(len).min(self.len);
        let s = self.as_mut_slice();
        let t = Instant::now();
        let mut i = offset;
        while i < end {
            s[i] = s[i].wrapping_add(1);
            i += step;
        }
        std::hint::black_box(&s[..]);
        t.elapsed()
    }

    /// Touches every base page of the region from `threads` threads, each a contiguous slice
    /// (a guest's vCPUs faulting their memory in). Returns the wall time.
    pub fn touch_parallel(&mut self, threads: usize) -> Duration {
        let step = sys::page_size();
        let per = self.len.div_ceil(threads.max(1)).next_multiple_of(step);
        let s = self.as_mut_slice();
        let t = Instant::now();
        std::thread::scope(|sc| {
            for part in s.chunks_mut(per) {
                sc.spawn(move || {
                    let mut i = 0;
                    while i < part.len() {
                        part[i] = part[i].wrapping_add(1);
                        i += step;
                    }
                    std::hint::black_box(&part[..]);
                });
            }
        });
        t.elapsed()
    }

    /// Faults `[offset, offset + len)` in with `MADV_POPULATE_WRITE` (what the raw kernel
    /// limit of a populate is measured with).
    ///
    /// # Errors
    /// [`Error::BalloonRange`] when the range is outside the region or not page-aligned,
    /// [`Error::Sys`] with the kernel's errno otherwise.
    pub fn populate(&self, offset: usize, len: usize) -> Result<()> {
        self.check_range(offset, len, self.page_size.bytes().unwrap_or(4096))?;
        sys::madvise_retry(self.addr(offset), len, libc::MADV_POPULATE_WRITE)
            .map_err(|e| Error::sys("madvise(MADV_POPULATE_WRITE)", e))
    }

    /// Bytes of the region the kernel has resident right now (`mincore`, counted in base
    /// pages): the kernel's own answer to "did the balloon really free it".
    ///
    /// # Errors
    /// [`Error::Sys`] if `mincore` fails.
    pub fn resident_bytes(&self) -> Result<u64> {
        let page = sys::page_size();
        let mut vec = vec![0u8; self.len.div_ceil(page)];
        sys::mincore(self.ptr, self.len, &mut vec).map_err(|e| Error::sys("mincore", e))?;
        Ok(vec.iter().filter(|&&b| b & 1 != 0).count() as u64 * page as u64)
    }

    /// Configures the balloon: it works in units of `granule` bytes (a multiple of the native
    /// page size; virtio-balloon uses 4 KiB, free page reporting 2 MiB or more) and hands back
    /// at most `rate` bytes per second (`None`: as fast as the kernel goes).
    ///
    /// # Errors
    /// [`Error::BalloonGranule`] if the granule is zero or not a multiple of the native page
    /// size, [`Error::BalloonBusy`] while the balloon holds memory (deflate first),
    /// [`Error::BalloonRateZero`] for a rate of 0.
    pub fn set_balloon(&mut self, granule: usize, rate: Option<u64>) -> Result<()> {
        let native = self.page_bytes();
        if granule == 0 || granule % native != 0 {
            return Err(Error::BalloonGranule {
                granule,
                page: native,
            });
        }
        if self.inflated_bytes() != 0 {
            return Err(Error::BalloonBusy {
                inflated: self.inflated_bytes(),
            });
        }
        if rate == Some(0) {
            return Err(Error::BalloonRateZero);
        }
        self.granule = granule;
        self.rate = rate;
        self.inflated = vec![0; self.len.div_ceil(granule).div_ceil(64)];
        Ok(())
    }

    /// The balloon's granule in bytes.
    pub fn balloon_granule(&self) -> usize {
        self.granule
    }

    /// How the balloon hands memory back for this region.
    pub fn discard_method(&self) -> Discard {
        match (self.sharing, self.page_size.is_hugetlb()) {
            (Sharing::Private, _) => Discard::DontNeed,
            (Sharing::Shared, false) => Discard::Remove,
            (Sharing::Shared, true) => Discard::PunchHole,
        }
    }

    /// Bytes the balloon holds now.
    pub fn inflated_bytes(&self) -> u64 {
        let granules: u64 = self
            .inflated
            .iter()
            .map(|w| u64::from(w.count_ones()))
            .sum();
        granules * self.granule as u64
    }

    /// Inflates the balloon over `[offset, offset + len)`: each granule not yet held is handed
    /// back to the host (its contents are lost), at most at the configured rate. Returns the
    /// time taken.
    ///
    /// # Errors
    /// [`Error::BalloonRange`] if the range is empty, past the end or not granule-aligned;
    /// [`Error::Sys`] if the kernel refuses the discard (the granules done so far stay
    /// inflated and are counted).
    pub fn inflate(&mut self, offset: usize, len: usize) -> Result<Duration> {
        self.check_range(offset, len, self.granule)?;
        let t = Instant::now();
        let method = self.discard_method();
        let mut done = 0u64;
        let mut g = offset / self.granule;
        while g * self.granule < offset + len {
            if !self.is_inflated(g) {
                let off = g * self.granule;
                self.discard(method, off, self.granule)?;
                self.set_inflated(g, true);
                done += self.granule as u64;
                self.pace(t, done);
            }
            g += 1;
        }
        Ok(t.elapsed())
    }

    /// Deflates the balloon over `[offset, offset + len)`: the granules are the guest's again
    /// and read as zeroes; nothing is faulted in until they are touched, unless `refault` is
    /// true, which faults them in now: by touching every base page (as a guest does), or for
    /// hugetlb with `MADV_POPULATE_WRITE`, so that a pool emptied meanwhile is an error rather
    /// than a SIGBUS. Returns the time taken.
    ///
    /// # Errors
    /// [`Error::BalloonRange`] if the range is empty, past the end or not granule-aligned;
    /// [`Error::Sys`] if refaulting hugetlb pages fails (the pool ran dry); the granules before
    /// the failing one are deflated and refaulted, the rest are still inflated.
    pub fn deflate(&mut self, offset: usize, len: usize, refault: bool) -> Result<Duration> {
        self.check_range(offset, len, self.granule)?;
        let t = Instant::now();
        let mut g = offset / self.granule;
        while g * self.granule < offset + len {
            if self.is_inflated(g) {
                if refault && self.page_size.is_hugetlb() {
                    self.populate(g * self.granule, self.granule)?;
                } else if refault {
                    self.touch(g * self.granule, self.granule);
                }
                self.set_inflated(g, false);
            }
            g += 1;
        }
        Ok(t.elapsed())
    }

    fn discard(&mut self, method: Discard, off: usize, len: usize) -> Result<()> {
        let addr = self.addr(off);
        let r = match method {
            // SAFETY: `&mut self` (the caller) guarantees no reference into the region is
            // alive; the range lies inside the mapping (checked by `check_range`).
            Discard::DontNeed => unsafe {
                sys::madvise_discard(addr, len, libc::MADV_DONTNEED)
                    .map_err(|e| Error::sys("madvise(MADV_DONTNEED)", e))
            },
            // SAFETY: as above; MADV_REMOVE frees the shmem pages behind a shared mapping.
            Discard::Remove => unsafe {
                sys::madvise_discard(addr, len, libc::MADV_REMOVE)
                    .map_err(|e| Error::sys("madvise(MADV_REMOVE)", e))
            },
            Discard::PunchHole => {
                let fd = self.fd.as_ref().expect("shared regions own their memfd");
                // SAFETY: the region maps the memfd from offset 0 (type invariant), so file
                // offset `off` is region offset `off`; `&mut self` guarantees no reference into
                // it is alive, and nobody else maps the memfd.
                unsafe { sys::punch_hole(fd.as_fd(), off as u64, len as u64) }
                    .map_err(|e| Error::sys("fallocate(FALLOC_FL_PUNCH_HOLE)", e))
            }
        };
        r
    }

    /// Sleeps so that `done` bytes since `start` do not exceed the rate.
    fn pace(&self, start: Instant, done: u64) {
        if let Some(rate) = self.rate {
            let due = Duration::from_secs_f64(done as f64 / rate as f64);
            let now = start.elapsed();
            if due > now + Duration::from_millis(1) {
                std::thread::sleep(due - now);
            }
        }
    }

    fn is_inflated(&self, g: usize) -> bool {
        self.inflated[g / 64] & (1 << (g % 64)) != 0
    }

    fn set_inflated(&mut self, g: usize, on: bool) {
        if on {
            self.inflated[g / 64] |= 1 << (g % 64);
        } else {
            self.inflated[g / 64] &= !(1 << (g % 64));
        }
    }

    fn addr(&self, offset: usize) -> NonNull<u8> {
        // `offset` < len was checked by the caller, so the address stays inside the mapping.
        NonNull::new(self.ptr.as_ptr().wrapping_add(offset)).expect("inside a non-null mapping")
    }

    fn check_range(&self, offset: usize, len: usize, granule: usize) -> Result<()> {
        let reason = if len == 0 {
            Some("the range is empty")
        } else if offset.checked_add(len).is_none_or(|end| end > self.len) {
            Some("the range ends past the region")
        } else if offset % granule != 0 || len % granule != 0 {
            Some("offset or length is not a multiple of the granule")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::BalloonRange {
                offset,
                len,
                granule,
                region_len: self.len as u64,
                reason,
            }),
            None => Ok(()),
        }
    }
}

impl Drop for LazyRegion {
    fn drop(&mut self) {
        // SAFETY: per type invariant we own the mapping and no borrow of it outlives `self`.
        if let Err(errno) = unsafe { sys::munmap(self.ptr, self.len) } {
            // As for a reservation: munmap of our own whole mapping fails only on a bug; do not
            // panic in drop, say so.
            eprintln!(
                "numapin: munmap({:p}, {}) failed: {}; the baseline region stays mapped (leaked)",
                self.ptr,
                self.len,
                std::io::Error::from_raw_os_error(errno.into())
            );
        }
    }
}

fn backing(p: PageSize) -> Backing {
    match p {
        PageSize::Huge2M => Backing::Huge2M,
        PageSize::Huge1G => Backing::Huge1G,
        _ => Backing::Base,
    }
}

/// Maps `len` bytes of private anonymous memory aligned to 2 MiB, so that every 2 MiB of it
/// can be one transparent huge page.
fn map_thp(len: usize) -> Result<NonNull<u8>> {
    sys::mmap_thp_aligned(len, true).map_err(|e| Error::sys("mmap", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_are_checked() {
        let mut r = LazyRegion::new(1 << 20, PageSize::Base4K, Sharing::Private).unwrap();
        for (off, len) in [(0, 0), (4096, 1 << 20), (1, 4096), (0, 100)] {
            assert!(
                matches!(r.inflate(off, len), Err(Error::BalloonRange { .. })),
                "{off} {len}"
            );
        }
        assert!(r.set_balloon(6000, None).is_err());
        assert!(r.set_balloon(8192, Some(0)).is_err());
        r.set_balloon(8192, None).unwrap();
        r.inflate(0, 8192).unwrap();
        assert!(
            r.set_balloon(4096, None).is_err(),
            "granule change while inflated"
        );
        assert!(
            matches!(
                r.inflate(0, 4096),
                Err(Error::BalloonRange { granule: 8192, .. })
            ),
            "granule-aligned"
        );
        let m = r.inflate(4096, 8192).unwrap_err().to_string();
        assert!(m.contains("8192") && m.contains("1 MiB"), "{m}");
    }

    #[test]
    fn bad_shapes_are_refused_before_mapping() {
        assert!(matches!(
            LazyRegion::new(3 << 20, PageSize::Huge2M, Sharing::Private),
            Err(Error::InvalidSize { .. })
        ));
        assert!(matches!(
            LazyRegion::new(0, PageSize::Base4K, Sharing::Private),
            Err(Error::InvalidSize { size: 0, .. })
        ));
        assert!(matches!(
            LazyRegion::new(2 << 20, PageSize::Auto, Sharing::Private),
            Err(Error::PageSizeAuto { .. })
        ));
        assert!(matches!(
            LazyRegion::new(2 << 20, PageSize::Transparent, Sharing::Shared),
            Err(Error::SharedThp)
        ));
    }
}
