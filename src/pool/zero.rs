//! Zeroing returned memory before anyone else gets it, and the scan that makes sure nobody
//! still holds it.

use std::os::fd::{AsFd, BorrowedFd};
use std::time::Instant;

use crate::error::{Error, Result};
use crate::reservation::Reservation;

/// Zeroes every byte of a sealed, populated memory file (maps it shared, `memset`s it, unmaps
/// it) on the calling thread; returns the seconds it took: wall-clock, and on the CPU (this
/// thread's CPU time: at idle priority on a busy host the two differ by the time others ran).
/// Callers run it at idle priority on the node's CPUs (the service does).
///
/// # Errors
/// [`Error::Sys`] if the descriptor cannot be duplicated; every error of
/// [`crate::AdoptBuilder::build`] (the file must be a sealed, fully populated memfd).
pub fn zero_file(fd: BorrowedFd<'_>) -> Result<(f64, f64)> {
    let mut r = map_to_zero(fd)?;
    let cpu0 = thread_cpu_seconds();
    let t = Instant::now();
    r.as_mut_slice().fill(0);
    Ok((t.elapsed().as_secs_f64(), thread_cpu_seconds() - cpu0))
}

/// Maps a sealed, populated memory file to overwrite it (not locked: nothing faults it in
/// anew). Placement was verified when the memory was made; one page is enough here.
fn map_to_zero(fd: BorrowedFd<'_>) -> Result<Reservation> {
    let dup = fd.try_clone_to_owned().map_err(|source| Error::Sys {
        call: "dup",
        source,
    })?;
    Reservation::adopt(dup).lock(false).verify_limit(1).build()
}

fn thread_cpu_seconds() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

/// `memset` throughput of this thread on a populated memory file, in GiB per second of this
/// thread's CPU time (so that other work on a busy host does not count): the limit
/// [`zero_file`] is compared against (zeroes it twice, reports the faster pass).
///
/// # Errors
/// As [`zero_file`].
pub fn memset_gib_per_s(fd: BorrowedFd<'_>) -> Result<f64> {
    let mut r = map_to_zero(fd)?;
    let mut best = f64::INFINITY;
    for _ in 0..2 {
        let t = thread_cpu_seconds();
        r.as_mut_slice().fill(0);
        best = best.min(thread_cpu_seconds() - t);
    }
    Ok(r.len() as f64 / (1u64 << 30) as f64 / best)
}

/// Whether any process other than this one holds a descriptor to, or a mapping of, the memory
/// file `fd` (scans `/proc/*/fd` and `/proc/*/maps` for its inode). Conservative: an
/// unreadable process counts as holding it only if its fd links could not be read at all.
pub(crate) fn held_elsewhere(fd: BorrowedFd<'_>) -> bool {
    let Ok(st) = rustix::fs::fstat(fd.as_fd()) else {
        return true;
    };
    let ino = st.st_ino;
    let Some(procs) = crate::process::other_processes() else {
        return true;
    };
    for base in procs {
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for f in fds.flatten() {
                let Ok(link) = std::fs::read_link(f.path()) else {
                    continue;
                };
                if !link.to_string_lossy().starts_with("/memfd:") {
                    continue;
                }
                if std::fs::metadata(f.path()).is_ok_and(|m| {
                    use std::os::unix::fs::MetadataExt;
                    m.ino() == ino && m.dev() == st.st_dev
                }) {
                    return true;
                }
            }
        }
        if let Ok(maps) = std::fs::read_to_string(base.join("maps")) {
            for line in maps.lines() {
                // address perms offset dev inode path
                let mut it = line.split_whitespace();
                let (Some(inode), Some(path)) = (it.nth(4), it.next()) else {
                    continue;
                };
                if path.starts_with("/memfd:") && inode.parse::<u64>().ok() == Some(ino) {
                    return true;
                }
            }
        }
    }
    false
}
