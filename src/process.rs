//! Safe questions about the calling process and thread: the CPUs it may run on (and pinning the
//! calling thread to some of them), its memlock limit and capability, the kernel it runs
//! on, and the other processes it can see in `/proc`. The raw system calls behind them stay in the crate's private `sys` module;
//! [`crate::HostFacts`] gathers all of this for a preflight at once.

use crate::error::{Error, Result};
use crate::sys;

/// The CPUs the calling thread may run on, ascending.
///
/// # Errors
/// [`Error::Sys`] if `sched_getaffinity` fails.
#[doc(alias = "sched_getaffinity")]
pub fn affinity() -> Result<Vec<u32>> {
    sys::affinity().map_err(|e| Error::sys("sched_getaffinity", e))
}

/// Pins the calling thread to these CPUs.
///
/// # Errors
/// [`Error::Sys`] if `sched_setaffinity` refuses (e.g. none of the CPUs is online or allowed).
#[doc(alias = "sched_setaffinity")]
pub fn set_thread_affinity(cpus: &[u32]) -> Result<()> {
    sys::set_affinity(cpus).map_err(|e| Error::sys("sched_setaffinity", e))
}

/// The CPU the calling thread runs on right now, if the kernel says.
#[doc(alias = "sched_getcpu")]
pub fn current_cpu() -> Option<u32> {
    sys::current_cpu()
}

/// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` = unlimited).
pub fn memlock_limit() -> u64 {
    sys::memlock_limit()
}

/// Whether the process has `CAP_IPC_LOCK` (then no memlock limit applies to it).
pub fn has_cap_ipc_lock() -> bool {
    sys::has_cap_ipc_lock()
}

/// Bytes the process has locked (`VmLck`).
pub fn locked_bytes() -> u64 {
    sys::locked_bytes()
}

/// The running kernel's release (`uname -r`).
#[doc(alias = "uname")]
pub fn kernel_release() -> String {
    sys::kernel_release()
}

/// The `/proc/PID` directories of every process but this one (those of this process's pid
/// namespace), for the scans that find who still holds a file; `None` if `/proc` cannot be
/// read.
#[cfg(not(loom))]
pub(crate) fn other_processes() -> Option<impl Iterator<Item = std::path::PathBuf>> {
    let me = std::process::id();
    let procs = std::fs::read_dir("/proc").ok()?;
    Some(procs.flatten().filter_map(move |p| {
        let pid = p.file_name().to_str()?.parse::<u32>().ok()?;
        (pid != me).then(|| p.path())
    }))
}
