//! The only place raw system calls live. Each is wrapped once, returns the raw errno on failure
//! (decoded into [`crate::Error`] variants by the caller, who knows the context), and carries a
//! `#[doc(alias)]` with its C name where the Rust name differs.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::NonNull;

mod ledger;
pub use ledger::*;

/// A failed system call: its name and the errno it returned. Callers decode the errnos they
/// understand into [`crate::Error`] variants, and the rest become [`crate::Error::Sys`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno {
    /// The call (`mmap`, `mbind`, ...).
    pub call: &'static str,
    /// The errno.
    pub code: i32,
}

impl Errno {
    /// `code` from `call`.
    pub fn new(call: &'static str, code: i32) -> Errno {
        Errno { call, code }
    }

    /// The calling thread's errno, from `call`.
    fn last(call: &'static str) -> Errno {
        Errno::new(
            call,
            io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        )
    }

    /// Whether the errno is one of `codes`.
    pub fn is(&self, codes: &[i32]) -> bool {
        codes.contains(&self.code)
    }
}

impl From<Errno> for i32 {
    fn from(e: Errno) -> i32 {
        e.code
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}",
            self.call,
            io::Error::from_raw_os_error(self.code)
        )
    }
}

// Flags from <linux/mempolicy.h> that the libc crate does not carry (values, not syscall
// numbers).
/// `MPOL_PREFERRED_MANY` (Linux 5.15).
pub const MPOL_PREFERRED_MANY: i32 = 5;
/// `MPOL_MF_STRICT`: fail if existing pages do not follow the policy.
pub const MPOL_MF_STRICT: u32 = 1 << 0;
/// `MPOL_MF_MOVE`: move existing pages of this process to conform.
pub const MPOL_MF_MOVE: u32 = 1 << 1;

/// The base page size (`sysconf(_SC_PAGESIZE)`).
pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory-safety preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        4096
    }
}

/// How to back an anonymous mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    /// Base pages (THP is a later `madvise`).
    Base,
    /// hugetlb pages of 2 MiB.
    Huge2M,
    /// hugetlb pages of 1 GiB.
    Huge1G,
}

/// Maps `len` bytes of private anonymous memory, read-write.
///
/// With `noreserve` false (the default everywhere in numapin) a hugetlb mapping reserves its
/// pages at `mmap` time, so a short pool fails here with `ENOMEM` rather than later.
#[doc(alias = "mmap")]
pub fn mmap_anonymous(len: usize, backing: Backing, noreserve: bool) -> Result<NonNull<u8>, Errno> {
    let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
    match backing {
        Backing::Base => {}
        Backing::Huge2M => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_2MB,
        Backing::Huge1G => flags |= libc::MAP_HUGETLB | libc::MAP_HUGE_1GB,
    }
    if noreserve {
        flags |= libc::MAP_NORESERVE;
    }
    mmap_new(len, flags, None)
}

/// A new read-write mapping at an address of the kernel's choosing: of `fd` from offset 0, or
/// anonymous with `None`.
fn mmap_new(len: usize, flags: i32, fd: Option<BorrowedFd<'_>>) -> Result<NonNull<u8>, Errno> {
    // SAFETY: the callers never pass MAP_FIXED, so the new mapping cannot alias any existing
    // Rust object; `fd`, if any, is borrowed open for the call. What may write the memory
    // afterwards is the callers' invariant: a memfd of their own (reservations, the baseline)
    // or a ledger file read only through atomics (`SharedRegion`).
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            flags,
            fd.map_or(-1, |f| f.as_raw_fd()),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(Errno::last("mmap"));
    }
    NonNull::new(p.cast()).ok_or(Errno::new("mmap", libc::EFAULT))
}

/// Unmaps `[addr, addr + len)`.
///
/// # Safety
/// The range must be a mapping (or part of one) that nothing will access afterwards: no
/// reference or pointer into it may be used after this call.
pub unsafe fn munmap(addr: NonNull<u8>, len: usize) -> Result<(), Errno> {
    // SAFETY: the caller guarantees nothing uses the range afterwards.
    if unsafe { libc::munmap(addr.as_ptr().cast(), len) } == 0 {
        Ok(())
    } else {
        Err(Errno::last("munmap"))
    }
}

/// `madvise` with advice that never changes the contents seen through existing references:
/// `MADV_POPULATE_WRITE`, `MADV_POPULATE_READ`, `MADV_HUGEPAGE`, `MADV_NOHUGEPAGE`, `MADV_DONTDUMP`, `MADV_DODUMP`,
/// `MADV_DONTFORK`, `MADV_DOFORK`, `MADV_UNMERGEABLE`, `MADV_MERGEABLE`, `MADV_COLLAPSE`.
/// Destructive advice (`MADV_DONTNEED`, `MADV_REMOVE`, `MADV_FREE`) is refused with `EINVAL`;
/// it lives in [`madvise_discard`].
///
/// The range must lie inside mappings this process owns; the kernel checks that (`ENOMEM`),
/// and none of these advices can invalidate memory Rust code is looking at.
pub fn madvise(addr: NonNull<u8>, len: usize, advice: i32) -> Result<(), Errno> {
    const SAFE: [i32; 11] = [
        libc::MADV_POPULATE_WRITE,
        libc::MADV_POPULATE_READ,
        libc::MADV_HUGEPAGE,
        libc::MADV_NOHUGEPAGE,
        libc::MADV_DONTDUMP,
        libc::MADV_DODUMP,
        libc::MADV_DONTFORK,
        libc::MADV_DOFORK,
        libc::MADV_UNMERGEABLE,
        libc::MADV_MERGEABLE,
        libc::MADV_COLLAPSE,
    ];
    if !SAFE.contains(&advice) {
        return Err(Errno::new("madvise", libc::EINVAL));
    }
    // SAFETY: every advice in SAFE either only changes kernel bookkeeping of the range or
    // faults pages in, which never alters bytes already visible to the program.
    if unsafe { libc::madvise(addr.as_ptr().cast(), len, advice) } == 0 {
        Ok(())
    } else {
        Err(Errno::last("madvise"))
    }
}

/// `madvise` with advice that discards contents (`MADV_DONTNEED`, `MADV_REMOVE`,
/// `MADV_FREE`): the range reads back as zeroes (or stale, for `MADV_FREE`) afterwards.
///
/// # Safety
/// No Rust reference may point into the range, and no other thread may rely on its contents.
#[doc(alias = "madvise")]
pub unsafe fn madvise_discard(addr: NonNull<u8>, len: usize, advice: i32) -> Result<(), Errno> {
    // SAFETY: the caller guarantees no live reference depends on the contents.
    if unsafe { libc::madvise(addr.as_ptr().cast(), len, advice) } == 0 {
        Ok(())
    } else {
        Err(Errno::last("madvise"))
    }
}

/// Maps `len` bytes of the file `fd` from offset 0, shared and read-write (`MAP_SHARED`), with
/// `MAP_NORESERVE` if asked (for hugetlb files: no pool pages set aside at `mmap` time).
#[doc(alias = "mmap")]
pub fn mmap_shared(fd: BorrowedFd<'_>, len: usize, noreserve: bool) -> Result<NonNull<u8>, Errno> {
    let mut flags = libc::MAP_SHARED;
    if noreserve {
        flags |= libc::MAP_NORESERVE;
    }
    mmap_new(len, flags, Some(fd))
}

/// Frees the file blocks of `[offset, offset + len)` (`fallocate(FALLOC_FL_PUNCH_HOLE |
/// FALLOC_FL_KEEP_SIZE)`): the pages go back to the kernel (for hugetlb files, to the pool),
/// and every mapping of that range reads zeroes afterwards.
///
/// # Safety
/// No Rust reference may point into any mapping of the range, and no other thread may rely on
/// its contents.
#[doc(alias = "fallocate")]
pub unsafe fn punch_hole(fd: BorrowedFd<'_>, offset: u64, len: u64) -> Result<(), Errno> {
    let off = libc::off_t::try_from(offset).map_err(|_| Errno::new("fallocate", libc::EFBIG))?;
    let l = libc::off_t::try_from(len).map_err(|_| Errno::new("fallocate", libc::EFBIG))?;
    // SAFETY: fallocate takes no memory from us; the caller guarantees that discarding the
    // range's contents invalidates nothing Rust relies on.
    let r = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            off,
            l,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("fallocate"))
    }
}

/// Which base pages of `[addr, addr + len)` are resident (`mincore`): one byte per base page
/// in `out` (bit 0 set = resident). `out` must hold `len.div_ceil(page_size())` bytes.
pub fn mincore(addr: NonNull<u8>, len: usize, out: &mut [u8]) -> Result<(), Errno> {
    if out.len() < len.div_ceil(page_size()) {
        return Err(Errno::new("mincore", libc::EINVAL));
    }
    // SAFETY: the kernel writes one byte per base page of the range into `out`, which we
    // checked is long enough; it only reads page tables of the range (ENOMEM if unmapped).
    let r = unsafe { libc::mincore(addr.as_ptr().cast(), len, out.as_mut_ptr()) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("mincore"))
    }
}

/// A node mask as the kernel's memory-policy calls take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeMask {
    words: Vec<libc::c_ulong>,
}

impl NodeMask {
    /// The mask with exactly these nodes set.
    pub fn new(nodes: &[u32]) -> NodeMask {
        let bits = libc::c_ulong::BITS as usize;
        let max = nodes.iter().map(|&n| n as usize).max().unwrap_or(0);
        let mut words = vec![0; max / bits + 1];
        for &n in nodes {
            let n = n as usize;
            words[n / bits] |= 1 << (n % bits);
        }
        NodeMask { words }
    }

    /// The `maxnode` argument: the number of bits plus one, because the kernel's `get_nodes`
    /// reads `maxnode - 1` bits.
    fn maxnode(&self) -> libc::c_ulong {
        (self.words.len() * libc::c_ulong::BITS as usize + 1) as libc::c_ulong
    }
}

/// Sets the memory policy of `[addr, addr + len)`.
pub fn mbind(
    addr: NonNull<u8>,
    len: usize,
    mode: i32,
    mask: &NodeMask,
    flags: u32,
) -> Result<(), Errno> {
    // SAFETY: mbind reads `mask.words` (valid for maxnode-1 bits) and changes only the policy
    // of the range (MPOL_MF_MOVE may migrate pages, which keeps their contents).
    let r = unsafe {
        libc::syscall(
            libc::SYS_mbind,
            addr.as_ptr(),
            len,
            mode,
            mask.words.as_ptr(),
            mask.maxnode(),
            flags,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("mbind"))
    }
}

/// Sets the calling thread's memory policy (`MPOL_DEFAULT` with an empty mask resets it).
pub fn set_mempolicy(mode: i32, mask: Option<&NodeMask>) -> Result<(), Errno> {
    let (ptr, maxnode) = match mask {
        Some(m) => (m.words.as_ptr(), m.maxnode()),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: the kernel reads maxnode-1 bits from ptr, which `NodeMask` owns; a null mask
    // with maxnode 0 is valid for MPOL_DEFAULT.
    let r = unsafe { libc::syscall(libc::SYS_set_mempolicy, mode, ptr, maxnode) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("set_mempolicy"))
    }
}

/// Asks the kernel on which node each page lives (`move_pages` with no target nodes). Each
/// element of `out` becomes a node id, or a negative errno (`-ENOENT`: page not present,
/// `-EFAULT`: not mapped). `EINVAL` if the two slices differ in length.
#[doc(alias = "move_pages")]
pub fn query_page_nodes(pages: &[*const u8], out: &mut [i32]) -> Result<(), Errno> {
    if pages.len() != out.len() {
        return Err(Errno::new("move_pages", libc::EINVAL));
    }
    if pages.is_empty() {
        return Ok(());
    }
    // SAFETY: with a null `nodes` array move_pages only writes `pages.len()` ints of status into
    // `out`, which has that length; it reads the page addresses and moves nothing.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_pages,
            0,
            pages.len() as libc::c_ulong,
            pages.as_ptr(),
            std::ptr::null::<i32>(),
            out.as_mut_ptr(),
            0,
        )
    };
    if r < 0 {
        Err(Errno::last("move_pages"))
    } else {
        Ok(())
    }
}

/// Maps `len` bytes of private anonymous base-page memory aligned to 2 MiB, so that every
/// 2 MiB of it can become one transparent huge page: maps 2 MiB more, then unmaps the head
/// and tail around the aligned middle. If trimming fails (a kernel bug), the whole mapping
/// is unmapped before the error returns: nothing is left behind.
#[doc(alias = "mmap")]
pub fn mmap_thp_aligned(len: usize, noreserve: bool) -> Result<NonNull<u8>, Errno> {
    const HUGE: usize = 2 << 20;
    let over = len
        .checked_add(HUGE)
        .ok_or(Errno::new("mmap", libc::ENOMEM))?;
    let raw = mmap_anonymous(over, Backing::Base, noreserve)?;
    let start = raw.as_ptr() as usize;
    let aligned = start.next_multiple_of(HUGE);
    let head = aligned - start;
    let tail = over - head - len;
    // SAFETY: head and tail lie inside the mapping just created and nothing refers to them;
    // the aligned middle stays mapped. On failure the whole fresh mapping is unmapped, which
    // nothing refers to either.
    unsafe {
        let trim = || -> Result<(), Errno> {
            if head > 0 {
                munmap(raw, head)?;
            }
            if tail > 0 {
                munmap(
                    NonNull::new((aligned + len) as *mut u8).expect("non-null"),
                    tail,
                )?;
            }
            Ok(())
        };
        if let Err(e) = trim() {
            let _ = munmap(raw, over);
            return Err(e);
        }
    }
    Ok(NonNull::new(aligned as *mut u8).expect("non-null"))
}

/// `madvise` that retries while a signal interrupts it (`EINTR`) or the kernel asks to try
/// again (`EAGAIN`): the populate advices (`MADV_POPULATE_WRITE`/`_READ`) can take long and
/// are restarted from where they stopped.
pub fn madvise_retry(addr: NonNull<u8>, len: usize, advice: i32) -> Result<(), Errno> {
    loop {
        match madvise(addr, len, advice) {
            Err(e) if e.is(&[libc::EINTR, libc::EAGAIN]) => continue,
            other => return other,
        }
    }
}

/// Locks a range; with `on_fault` pages are locked as they are faulted (`MLOCK_ONFAULT`),
/// so a later parallel populate still does the faulting.
pub fn mlock2(addr: NonNull<u8>, len: usize, on_fault: bool) -> Result<(), Errno> {
    let flags = if on_fault { libc::MLOCK_ONFAULT } else { 0 };
    // SAFETY: mlock2 only changes the residency of pages in the range; the kernel validates it.
    if unsafe { libc::mlock2(addr.as_ptr().cast(), len, flags) } == 0 {
        Ok(())
    } else {
        Err(Errno::last("mlock2"))
    }
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` for unlimited).
#[doc(alias = "getrlimit")]
pub fn memlock_limit() -> u64 {
    let mut r = MaybeUninit::<libc::rlimit>::uninit();
    // SAFETY: getrlimit writes one rlimit into the pointer on success.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, r.as_mut_ptr()) } != 0 {
        return 0;
    }
    // SAFETY: getrlimit returned 0, so it initialised `r`.
    let r = unsafe { r.assume_init() };
    if r.rlim_cur == libc::RLIM_INFINITY {
        u64::MAX
    } else {
        r.rlim_cur
    }
}

/// Sets the calling thread's CPU affinity.
#[doc(alias = "sched_setaffinity")]
pub fn set_affinity(cpus: &[u32]) -> Result<(), Errno> {
    // SAFETY: cpu_set_t is plain data; all-zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if (c as usize) < libc::CPU_SETSIZE as usize {
            // SAFETY: the index is below CPU_SETSIZE, so the bit lies inside `set`.
            unsafe { libc::CPU_SET(c as usize, &mut set) };
        }
    }
    // SAFETY: passes a valid cpu_set_t of the size given, for the calling thread (pid 0).
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("sched_setaffinity"))
    }
}

/// Moves the calling thread to the idle scheduling class (`SCHED_IDLE`): it runs only when no
/// other thread wants the CPU. Threads it creates afterwards inherit the class.
#[doc(alias = "sched_setscheduler")]
#[cfg(feature = "pool")]
pub fn set_idle_priority() -> Result<(), Errno> {
    let p = libc::sched_param { sched_priority: 0 };
    // SAFETY: `p` is a valid sched_param for the call; pid 0 is the calling thread.
    let r = unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &p) };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last("sched_setscheduler"))
    }
}

/// The CPUs the calling thread may run on.
#[doc(alias = "sched_getaffinity")]
pub fn affinity() -> Result<Vec<u32>, Errno> {
    // SAFETY: cpu_set_t is plain data; all-zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: the kernel writes at most size_of::<cpu_set_t>() bytes into `set`.
    let r = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if r != 0 {
        return Err(Errno::last("sched_getaffinity"));
    }
    Ok((0..libc::CPU_SETSIZE as u32)
        // SAFETY: every index is below CPU_SETSIZE, so the bit lies inside `set`.
        .filter(|&c| unsafe { libc::CPU_ISSET(c as usize, &set) })
        .collect())
}

/// The CPU the calling thread runs on right now.
#[doc(alias = "sched_getcpu")]
pub fn current_cpu() -> Option<u32> {
    // SAFETY: sched_getcpu has no preconditions.
    let c = unsafe { libc::sched_getcpu() };
    u32::try_from(c).ok()
}

/// The running kernel's release string (`uname -r`).
#[doc(alias = "uname")]
pub fn kernel_release() -> String {
    let mut u = MaybeUninit::<libc::utsname>::uninit();
    // SAFETY: uname fills the struct on success.
    if unsafe { libc::uname(u.as_mut_ptr()) } != 0 {
        return "unknown".into();
    }
    // SAFETY: uname returned 0, so the struct is initialised and `release` NUL-terminated.
    let u = unsafe { u.assume_init() };
    // SAFETY: `release` is a NUL-terminated C string inside `u`, which outlives the borrow.
    unsafe { std::ffi::CStr::from_ptr(u.release.as_ptr()) }
        .to_string_lossy()
        .into_owned()
}

/// Reads one `Key:` line of the calling thread's `/proc/thread-self/status` (e.g. `VmLck`,
/// `CapEff`, `Seccomp`, `Mems_allowed_list`). Per thread, because seccomp filters, capabilities
/// and cpusets are per thread: a VMM that filters only its vCPU threads must be judged by the
/// thread that makes the call.
pub fn proc_status_field(key: &str) -> Option<String> {
    let s = std::fs::read_to_string("/proc/thread-self/status")
        .or_else(|_| std::fs::read_to_string("/proc/self/status"))
        .ok()?;
    s.lines().find_map(|l| {
        l.strip_prefix(key)?
            .strip_prefix(':')
            .map(|v| v.trim().to_string())
    })
}

/// Whether the process has `CAP_IPC_LOCK` in its effective set.
pub fn has_cap_ipc_lock() -> bool {
    const CAP_IPC_LOCK: u32 = 14;
    proc_status_field("CapEff")
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Bytes this process has locked (`VmLck`).
pub fn locked_bytes() -> u64 {
    proc_status_field("VmLck")
        .and_then(|v| v.trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |k| k * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_call_and_slices_of_different_lengths_are_refused() {
        let x = 0u8;
        let mut out = [0i32; 2];
        let e = query_page_nodes(&[&x as *const u8], &mut out).unwrap_err();
        assert_eq!(e, Errno::new("move_pages", libc::EINVAL));
        assert!(e.to_string().starts_with("move_pages: "), "{e}");
        assert!(e.is(&[libc::EINVAL]));
        assert_eq!(i32::from(e), libc::EINVAL);
    }

    #[test]
    fn node_mask_bits() {
        let m = NodeMask::new(&[0, 3, 64]);
        assert_eq!(m.words.len(), 2);
        assert_eq!(m.words[0], 0b1001);
        assert_eq!(m.words[1], 1);
        assert_eq!(m.maxnode(), 129);
    }

    #[test]
    fn destructive_advice_is_refused() {
        let p = mmap_anonymous(4096, Backing::Base, false).unwrap();
        assert_eq!(
            madvise(p, 4096, libc::MADV_DONTNEED),
            Err(Errno::new("madvise", libc::EINVAL))
        );
        // SAFETY: the mapping was made above and nothing refers to it.
        unsafe { munmap(p, 4096).unwrap() };
    }

    #[test]
    fn affinity_is_not_empty() {
        assert!(!affinity().unwrap().is_empty());
        assert!(current_cpu().is_some());
    }
}
