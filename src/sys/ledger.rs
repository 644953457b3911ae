//! The ledger's system calls: a shared mapping viewed as atomic words, process identity
//! (`/proc/PID/stat`, the pid namespace), and open-file-description locks (the slots'
//! liveness beacons).

use std::io;
use std::os::fd::BorrowedFd;
use std::ptr::NonNull;

use super::{munmap, Errno};

// ---------------------------------------------------------------------------------------------
// Shared memory for the ledger: a mapping viewed as atomic words, and process identity.

/// A read-write `MAP_SHARED` mapping (of a file, or anonymous) viewed as atomic words.
///
/// Type invariant: `ptr` is the page-aligned start of a live mapping of exactly `len` bytes,
/// readable and writable, owned by this value and unmapped only in `Drop`. Every byte of it is
/// initialised (file pages and anonymous pages read as zero until written). numapin accesses
/// each byte only through atomics of one width, as the ledger layout assigns it.
#[derive(Debug)]
pub struct SharedRegion {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the region is plain shared memory that is only accessed through atomic types (see the
// type invariant); the raw pointer carries no thread affinity.
unsafe impl Send for SharedRegion {}
// SAFETY: as for Send: `&SharedRegion` only hands out `&AtomicU64`.
unsafe impl Sync for SharedRegion {}

impl SharedRegion {
    /// Maps the first `len` bytes of `file` shared, read-write. The file must be at least `len`
    /// bytes long (the caller checks with `fstat`): touching a page past its end raises SIGBUS.
    #[doc(alias = "mmap")]
    pub fn map_file(file: &std::fs::File, len: usize) -> Result<SharedRegion, Errno> {
        use std::os::fd::AsFd;
        if len == 0 {
            return Err(Errno::new("mmap", libc::EINVAL));
        }
        let ptr = super::mmap_new(len, libc::MAP_SHARED, Some(file.as_fd()))?;
        Ok(SharedRegion { ptr, len })
    }

    /// Length of the mapping in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// The 8-byte word at byte offset `off`, or `None` if `off` is not 8-aligned or the word
    /// does not lie inside the mapping.
    #[inline]
    pub fn u64_at(&self, off: usize) -> Option<&std::sync::atomic::AtomicU64> {
        if off % 8 != 0 || off.checked_add(8)? > self.len {
            return None;
        }
        // SAFETY:
        // - in bounds: `off + 8 <= len` was checked above, and the mapping is `len` bytes long
        //   and lives as long as `&self` (type invariant);
        // - aligned: the base is page-aligned and `off` is a multiple of 8;
        // - `AtomicU64` has the size and bit validity of `u64`, every bit pattern is valid, and
        //   the bytes are initialised (type invariant);
        // - all accesses numapin makes to these bytes are atomic (type invariant), so creating a
        //   shared reference to an atomic over them does not race with non-atomic accesses.
        Some(unsafe {
            &*self
                .ptr
                .as_ptr()
                .add(off)
                .cast::<std::sync::atomic::AtomicU64>()
        })
    }
}

impl Drop for SharedRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping is owned by this value (type invariant) and every reference handed
        // out borrows `self`, so none outlives this call.
        // A failing munmap (impossible for a range we mapped) would only leak address space: the
        // region holds accounting words, not guest memory, so ignoring the error is safe.
        let _ = unsafe { munmap(self.ptr, self.len) };
    }
}

/// One process's identity as the kernel shows it in `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// The state letter (`R`, `S`, `D`, `T`, `t`, `Z`, `X`, ...).
    pub state: char,
    /// Field 22, `starttime`: clock ticks after boot at which the process started.
    pub start_time: u64,
}

/// Parses the content of `/proc/PID/stat` (the command name may contain spaces and
/// parentheses: fields are counted after the last `)`).
pub fn parse_proc_stat(s: &str) -> Option<ProcStat> {
    let rest = &s[s.rfind(')')? + 1..];
    let mut it = rest.split_ascii_whitespace();
    // After the comm (field 2) come field 3 (state) ... field 22 (starttime).
    let state = it.next()?.chars().next()?;
    let start_time = it.nth(18)?.parse().ok()?;
    Some(ProcStat { state, start_time })
}

/// Reads `/proc/PID/stat`; `Ok(None)` when there is no such process.
pub fn proc_stat(pid: u32) -> io::Result<Option<ProcStat>> {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => parse_proc_stat(&s)
            .map(Some)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "bad /proc/PID/stat")),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        // ESRCH: the process went away between open and read.
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The inode of this process's pid namespace (`/proc/self/ns/pid`), or 0 if unreadable.
pub fn pid_namespace() -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/pid")
        .map(|m| m.ino())
        .unwrap_or(0)
}

// ---------------------------------------------------------------------------------------------
// Open-file-description locks: the ledger's liveness beacons.

fn ofd_flock(kind: i32, start: u64, len: u64) -> Result<libc::flock, Errno> {
    // SAFETY: `flock` is a plain C struct of integers (plus padding on some architectures), for
    // which all-zero bytes are a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start =
        libc::off_t::try_from(start).map_err(|_| Errno::new("fcntl(F_OFD_*)", libc::EINVAL))?;
    fl.l_len =
        libc::off_t::try_from(len).map_err(|_| Errno::new("fcntl(F_OFD_*)", libc::EINVAL))?;
    Ok(fl)
}

/// Takes (`lock`) or drops a write lock on bytes `start..start + len` of the file, owned by
/// the open file description `fd` refers to (`F_OFD_SETLK`: never waits). `Ok(false)` when
/// another open file description holds a conflicting lock. The kernel drops the lock when the
/// last descriptor of that open file description is closed, which a process's exit does.
#[doc(alias = "F_OFD_SETLK")]
pub fn ofd_try_lock(fd: BorrowedFd<'_>, start: u64, len: u64, lock: bool) -> Result<bool, Errno> {
    let kind = if lock { libc::F_WRLCK } else { libc::F_UNLCK };
    let fl = ofd_flock(kind, start, len)?;
    match nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_SETLK(&fl)) {
        Ok(_) => Ok(true),
        Err(e) if e == nix::errno::Errno::EAGAIN || e == nix::errno::Errno::EACCES => Ok(false),
        Err(e) => Err(Errno::new("F_OFD_SETLK", e as i32)),
    }
}

/// Whether an open file description other than `fd`'s holds a lock on any byte of
/// `start..start + len` (`F_OFD_GETLK`: only asks, never waits, takes nothing).
#[doc(alias = "F_OFD_GETLK")]
pub fn ofd_is_locked(fd: BorrowedFd<'_>, start: u64, len: u64) -> Result<bool, Errno> {
    let mut fl = ofd_flock(libc::F_WRLCK, start, len)?;
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_OFD_GETLK(&mut fl))
        .map_err(|e| Errno::new("F_OFD_GETLK", e as i32))?;
    Ok(i32::from(fl.l_type) != libc::F_UNLCK)
}

/// Clears or sets `FD_CLOEXEC` on `fd` (`F_SETFD`).
#[doc(alias = "F_SETFD")]
pub fn set_cloexec(fd: BorrowedFd<'_>, cloexec: bool) -> Result<(), Errno> {
    let flags = if cloexec {
        nix::fcntl::FdFlag::FD_CLOEXEC
    } else {
        nix::fcntl::FdFlag::empty()
    };
    nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFD(flags))
        .map(|_| ())
        .map_err(|e| Errno::new("F_SETFD", e as i32))
}
