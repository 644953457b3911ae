//! Who holds a slot: this process's owner word, and whether another owner is alive.

use super::table::{owner_parts, owner_word};
use crate::error::{Error, Result};

#[cfg(not(loom))]
pub(super) fn pid_namespace() -> u64 {
    crate::sys::pid_namespace()
}

#[cfg(loom)]
pub(super) fn pid_namespace() -> u64 {
    0
}

/// This process's owner word: pid and start time.
pub(super) fn current_owner() -> Result<u64> {
    use std::sync::atomic::{AtomicU64 as StdU64, Ordering as O};
    // Cached per pid (a forked child recomputes): reading /proc costs microseconds.
    static CACHE: StdU64 = StdU64::new(0);
    let pid = std::process::id();
    let c = CACHE.load(O::Relaxed);
    if c != 0 && owner_parts(c).0 == pid {
        return Ok(c);
    }
    let w = own_owner_word(pid)?;
    CACHE.store(w, O::Relaxed);
    Ok(w)
}

#[cfg(not(loom))]
fn own_owner_word(pid: u32) -> Result<u64> {
    let st = crate::sys::proc_stat(pid)
        .map_err(|e| Error::Sysfs {
            path: format!("/proc/{pid}/stat").into(),
            source: e,
        })?
        .ok_or_else(|| Error::parse(format!("/proc/{pid}/stat").into(), "missing".into()))?;
    owner_word(pid, st.start_time).ok_or_else(|| {
        Error::parse(
            format!("/proc/{pid}/stat").into(),
            format!(
                "pid {pid} or start time {} out of the ledger's range",
                st.start_time
            ),
        )
    })
}

#[cfg(loom)]
fn own_owner_word(pid: u32) -> Result<u64> {
    owner_word(pid.max(1) & 0x3f_ffff, 1).ok_or_else(|| Error::InvalidConfig("pid".into()))
}

/// The default liveness: the pid exists with the same start time and is not a zombie.
#[cfg(not(loom))]
pub(super) fn process_alive(owner: u64) -> bool {
    let (pid, start) = owner_parts(owner);
    match crate::sys::proc_stat(pid) {
        Ok(Some(st)) => st.start_time == start && st.state != 'Z' && st.state != 'X',
        // Not in our /proc (e.g. hidepid): trust kill(0) so that a live owner is never reaped.
        Ok(None) => crate::sys::process_exists(pid),
        // Unreadable: assume alive (never reap what we cannot prove dead).
        Err(_) => true,
    }
}

#[cfg(loom)]
pub(super) fn process_alive(_owner: u64) -> bool {
    true
}
