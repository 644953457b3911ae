//! Who holds a slot, and whether that holder is alive.
//!
//! A slot's owner word (pid and start time) only says who claimed it, for `numapin status`.
//! Whether the holder lives is decided by its *beacon*: an open-file-description (OFD) write
//! lock on one byte of the ledger file, at the slot's offset, taken before the slot is claimed
//! and dropped only after it is freed. The kernel drops an OFD lock exactly when the last
//! descriptor of its open file description is closed: when the holding process exits (all of
//! its threads: a zombie leader whose worker threads still run keeps it), or execs with the
//! descriptor close-on-exec. No pid, start time or namespace enters the decision, so a time
//! namespace (which shifts `/proc/PID/stat` start times), a pid namespace, a reused pid or a
//! zombie leader cannot make a live holder look dead.
//!
//! Holding the beacon is also what entitles a process to write the slot (the fence): a holder
//! holds it from before its claim until after it frees the slot, a reaper takes it (never
//! waiting: `F_OFD_SETLK`) before it touches a dead holder's slot, so at most one process
//! writes a slot's own words at any time, and a reaper can only act after the previous holder's
//! lock is gone. Probing (`F_OFD_GETLK`) asks without taking anything. Charges and releases
//! never touch the locks: admission stays lock-free (no operation waits for another).
//!
//! Under `cfg(loom)` beacons are loom atomics (`compare_exchange` = `F_OFD_SETLK`, a store on
//! drop = the kernel dropping the lock), so the models run the same claim, fence and reap code.

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

/// This process's owner word: pid and start time (informational: liveness is the beacon).
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
    owner_word(pid, st.start_time & ((1 << 41) - 1)).ok_or_else(|| {
        Error::parse(
            format!("/proc/{pid}/stat").into(),
            format!("pid {pid} out of the ledger's range"),
        )
    })
}

#[cfg(loom)]
fn own_owner_word(pid: u32) -> Result<u64> {
    owner_word(pid.max(1) & 0x3f_ffff, 1).ok_or_else(|| {
        Error::parse(
            format!("/proc/{pid}/stat").into(),
            "pid out of range".into(),
        )
    })
}

#[cfg(not(loom))]
pub(crate) use ofd::{Beacon, Beacons};

#[cfg(loom)]
pub(crate) use sim::{Beacon, Beacons};

#[cfg(not(loom))]
mod ofd {
    use std::fs::File;
    use std::os::fd::{AsFd, AsRawFd, RawFd};
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::PathBuf;

    use crate::error::{Error, Result};

    /// The beacons of one ledger: the file (one open file description of it, used only to
    /// probe, never to lock) and its name for errors.
    #[derive(Debug)]
    pub(crate) struct Beacons {
        file: File,
        path: PathBuf,
    }

    /// One slot's lock, held through an open file description of its own (so that dropping
    /// one record never touches another's lock, and a record can be kept across `exec` alone).
    /// Dropping it closes the descriptor, which drops the lock.
    #[derive(Debug)]
    pub(crate) struct Beacon {
        file: File,
    }

    impl Beacons {
        pub(crate) fn new(file: File, path: PathBuf) -> Beacons {
            Beacons { file, path }
        }

        fn io(&self, op: &'static str, errno: i32) -> Error {
            Error::LedgerIo {
                path: self.path.clone(),
                op,
                source: std::io::Error::from_raw_os_error(errno),
            }
        }

        /// Takes the lock of the slot at byte `off`, through a new open file description of
        /// the ledger; `None` if another one holds it (a live holder, a claimer or a reaper).
        pub(crate) fn try_hold(&self, off: u64) -> Result<Option<Beacon>> {
            // A new open file description of the same inode (a `dup` would share this one's).
            let fd = format!("/proc/self/fd/{}", self.file.as_raw_fd());
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_CLOEXEC)
                .open(&fd)
                .map_err(|e| Error::LedgerIo {
                    path: self.path.clone(),
                    op: "reopen through /proc/self/fd",
                    source: e,
                })?;
            match crate::sys::ofd_try_lock(file.as_fd(), off, 1, true) {
                Ok(true) => Ok(Some(Beacon { file })),
                Ok(false) => Ok(None),
                Err(e) => Err(self.io("fcntl(F_OFD_SETLK)", e.code)),
            }
        }

        /// Whether `fd` refers to the ledger's file (same device and inode).
        pub(crate) fn same_file(&self, fd: std::os::fd::BorrowedFd<'_>) -> Result<bool> {
            let a =
                rustix::fs::fstat(&self.file).map_err(|e| self.io("fstat", e.raw_os_error()))?;
            let b = rustix::fs::fstat(fd).map_err(|e| self.io("fstat", e.raw_os_error()))?;
            Ok(a.st_dev == b.st_dev && a.st_ino == b.st_ino)
        }

        /// Whether some open file description holds the lock of the slot at byte `off`.
        pub(crate) fn is_held(&self, off: u64) -> Result<bool> {
            crate::sys::ofd_is_locked(self.file.as_fd(), off, 1)
                .map_err(|e| self.io("fcntl(F_OFD_GETLK)", e.code))
        }
    }

    impl Beacon {
        /// The descriptor of the lock's open file description (to hand the record over).
        pub(crate) fn into_fd(self) -> std::os::fd::OwnedFd {
            self.file.into()
        }

        /// A lock held through this descriptor's open file description (a handed-over record).
        pub(crate) fn from_fd(fd: std::os::fd::OwnedFd) -> Beacon {
            Beacon { file: fd.into() }
        }

        /// The lock's descriptor number (see [`crate::shared::keep_above`]).
        pub(crate) fn raw_fd(&self) -> RawFd {
            self.file.as_raw_fd()
        }

        /// Clears close-on-exec on the lock's descriptor and returns it: the record then stays
        /// alive across `exec` for as long as the new program keeps that descriptor open.
        pub(crate) fn keep_across_exec(&self) -> std::io::Result<RawFd> {
            crate::sys::set_cloexec(self.file.as_fd(), false)
                .map_err(|e| std::io::Error::from_raw_os_error(e.code))?;
            Ok(self.file.as_raw_fd())
        }
    }
}

#[cfg(loom)]
mod sim {
    use std::sync::Arc;

    use crate::error::Result;
    use crate::sync::{AtomicU64, Ordering};

    /// Simulated locks, one word per slot (by slot index: the models' ledgers are small).
    #[derive(Debug)]
    pub(crate) struct Beacons {
        held: Arc<Vec<AtomicU64>>,
        slot_of: Vec<u64>,
    }

    #[derive(Debug)]
    pub(crate) struct Beacon {
        held: Arc<Vec<AtomicU64>>,
        i: usize,
    }

    impl Beacons {
        /// `offs`: the byte offset of each slot (the key the real locks use).
        pub(crate) fn new(offs: Vec<u64>) -> Beacons {
            Beacons {
                held: Arc::new(offs.iter().map(|_| AtomicU64::new(0)).collect()),
                slot_of: offs,
            }
        }

        fn index(&self, off: u64) -> usize {
            self.slot_of.iter().position(|&o| o == off).unwrap_or(0)
        }

        pub(crate) fn try_hold(&self, off: u64) -> Result<Option<Beacon>> {
            let i = self.index(off);
            // AcqRel: acquire what the previous holder wrote before its lock was dropped, as
            // the kernel's lock hand-off does.
            Ok(self.held[i]
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
                .then(|| Beacon {
                    held: Arc::clone(&self.held),
                    i,
                }))
        }

        pub(crate) fn is_held(&self, off: u64) -> Result<bool> {
            Ok(self.held[self.index(off)].load(Ordering::Acquire) != 0)
        }
    }

    impl Beacon {
        /// There is no descriptor under loom.
        pub(crate) fn keep_across_exec(&self) -> std::io::Result<std::os::fd::RawFd> {
            Err(std::io::Error::from_raw_os_error(libc::EOPNOTSUPP))
        }
    }

    impl Drop for Beacon {
        fn drop(&mut self) {
            // Release: everything the holder wrote before it "died" or freed the slot.
            self.held[self.i].store(0, Ordering::Release);
        }
    }
}
