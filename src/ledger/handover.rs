//! Handing a record to another process: the charge stays where it is, its holder changes.
//!
//! A record is alive while its slot's lock is held (see `owner.rs`), and that lock belongs to
//! an open file description, not to a process. So a record is moved to another process by
//! moving the descriptor of that open file description (`SCM_RIGHTS`, or inheritance): the
//! charges never leave the slot, so no moment exists at which the bytes count twice or not at
//! all — the class counters are not touched at all. What changes is who may write the slot:
//!
//! 1. the holder renames the record ([`VmRecord::hand_over`]) and gives up its `VmRecord`
//!    without releasing anything, keeping only the lock's descriptor ([`Handover`]);
//! 2. it sends that descriptor (and the memory) to the receiver, then closes its own copy;
//!    while the message is in flight the kernel holds the description, so the lock stays;
//! 3. the receiver calls [`Ledger::take_over`] with the slot, the owner word it was told and
//!    the descriptor: the lock is re-taken *through that description* (`F_OFD_SETLK` on a lock
//!    the same description holds succeeds; one held by any other description fails), the owner
//!    word is checked and swapped to the receiver, and the record is the receiver's `VmRecord`.
//!
//! Whoever dies at any point, the kernel drops the lock when the last descriptor of the
//! description closes — the sender's copy, the in-flight message (discarded with the socket),
//! or the receiver's — and the reaper settles the record exactly as for any dead holder.
//! If sending fails, the sender takes the record back with [`Ledger::take_over`] itself.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use super::owner::{current_owner, Beacon};
use super::table::OWNER_REAPING;
use super::{Ledger, VmRecord};
use crate::error::{Error, Result};

/// A record given up by its holder and not yet taken by anyone: the slot, the owner word to
/// expect, and the descriptor of the open file description holding the slot's lock. Dropping
/// it closes that descriptor (if no copy was sent, the record is dead then and the reaper
/// releases its charges).
#[derive(Debug)]
pub struct Handover {
    slot: u32,
    owner: u64,
    lock: OwnedFd,
}

impl Handover {
    /// The record's slot (send it to the receiver).
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The owner word the slot holds now (send it to the receiver, which checks it).
    pub fn owner(&self) -> u64 {
        self.owner
    }

    /// The descriptor of the open file description that holds the slot's lock (send it
    /// with `SCM_RIGHTS`).
    pub fn lock_fd(&self) -> BorrowedFd<'_> {
        self.lock.as_fd()
    }

    /// Takes the record back into this process (e.g. after sending failed).
    ///
    /// # Errors
    /// As [`Ledger::take_over`].
    pub fn take_back(self, ledger: &Arc<Ledger>) -> Result<VmRecord> {
        ledger.take_over(self.slot, self.owner, self.lock)
    }

    /// Takes back a record that was sent and taken over by another process, through the copy
    /// of the lock's descriptor this process kept: the receiver may have changed the owner
    /// word (it did, when it took the record over), so the slot's current one is taken over.
    /// Call it only once the receiver is done with the record (it handed it back on drop, see
    /// [`VmRecord::hand_back_on_drop`], or died): [`Handover::held_elsewhere`] says so. While
    /// this copy is open the record can be neither reaped nor freed by anyone but a holder,
    /// so the charges never leave the slot between the receiver and this call.
    ///
    /// Returns `None` if a holder freed the record meanwhile (released its charges itself):
    /// the copy is closed then, and the slot is free for others again.
    ///
    /// # Errors
    /// As [`Ledger::take_over`].
    pub fn reclaim(self, ledger: &Arc<Ledger>) -> Result<Option<VmRecord>> {
        let o = ledger
            .table
            .owner(self.slot as usize)
            .map_err(|b| ledger.bad(b))?;
        if o == 0 {
            return Ok(None);
        }
        ledger.take_over(self.slot, o, self.lock).map(Some)
    }

    /// Whether a process other than this one holds a descriptor of the record's lock
    /// description (a receiver still holding the record, or a program it passed it to): scans
    /// `/proc/*/fd` for the ledger file and each match's `fdinfo` for this slot's OFD lock.
    /// A process whose descriptors cannot be read (another user's, when not root) counts as
    /// holding it: taking a record back from under a live holder would let two processes
    /// write one slot.
    pub fn held_elsewhere(&self, ledger: &Ledger) -> bool {
        use std::os::unix::fs::MetadataExt;
        let Ok(st) = rustix::fs::fstat(&self.lock) else {
            return true;
        };
        let off = ledger.lock_offset(self.slot as usize);
        let Some(procs) = crate::process::other_processes() else {
            return true;
        };
        for p in procs {
            let fds = match std::fs::read_dir(p.join("fd")) {
                Ok(f) => f,
                Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => return true,
                Err(_) => continue, // exited meanwhile
            };
            for f in fds.flatten() {
                if !std::fs::metadata(f.path())
                    .is_ok_and(|m| m.dev() == st.st_dev && m.ino() == st.st_ino)
                {
                    continue;
                }
                let info = p.join("fdinfo").join(f.file_name());
                let Ok(info) = std::fs::read_to_string(info) else {
                    continue;
                };
                if info.lines().any(|l| ofd_lock_at(l, off)) {
                    return true;
                }
            }
        }
        false
    }
}

/// Whether an `fdinfo` line is an OFD lock starting at byte `off`
/// (`lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:1234 4096 4096`).
fn ofd_lock_at(line: &str, off: u64) -> bool {
    let Some(rest) = line.strip_prefix("lock:") else {
        return false;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    f.get(1) == Some(&"OFDLCK") && f.len() >= 2 && f[f.len() - 2].parse() == Ok(off)
}

impl VmRecord {
    /// The record's slot in the ledger.
    pub fn slot(&self) -> u32 {
        self.slot as u32
    }

    /// Renames this record to `name` and gives it up without releasing anything: the charges
    /// stay in the slot, held by the returned [`Handover`]'s descriptor, for another process
    /// to [`Ledger::take_over`]. See `docs/ledger.md` ("Handing a record over").
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`]; [`Error::HandoverRefused`] if this record no longer holds
    /// its slot (a simulated death).
    pub fn hand_over(mut self, name: &str) -> Result<Handover> {
        let slot = self.slot as u32;
        let t = &self.ledger.table;
        if t.owner(self.slot).map_err(|b| self.ledger.bad(b))? != self.owner {
            return Err(Error::HandoverRefused {
                slot,
                reason: "the slot's owner word is no longer this record's".into(),
            });
        }
        t.set_name(self.slot, name)
            .map_err(|b| self.ledger.bad(b))?;
        let Some(beacon) = self.beacon.take() else {
            return Err(Error::HandoverRefused {
                slot,
                reason: "this record holds no lock".into(),
            });
        };
        // `Drop` sees no beacon and leaves the slot alone: the charges travel with the lock.
        Ok(Handover {
            slot,
            owner: self.owner,
            lock: beacon.into_fd(),
        })
    }
}

impl Ledger {
    /// Takes over the record in `slot` handed over by another process: `lock` must be the
    /// descriptor of the open file description holding the slot's lock (received with
    /// `SCM_RIGHTS`), `owner` the owner word the sender reported. The charges stay as they
    /// are; from now on this process holds the record (and releases it on drop, or the reaper
    /// does when this process dies). See `docs/ledger.md` ("Handing a record over").
    ///
    /// # Errors
    /// [`Error::HandoverRefused`] if `lock` is not a descriptor of this ledger's file, another
    /// description holds the slot's lock, or the slot's owner is not `owner` (reaped, freed or
    /// reused meanwhile); [`Error::LedgerInvalid`]; [`Error::LedgerIo`].
    pub fn take_over(self: &Arc<Self>, slot: u32, owner: u64, lock: OwnedFd) -> Result<VmRecord> {
        let refuse = |reason: String| Error::HandoverRefused { slot, reason };
        let s = slot as usize;
        if s >= self.table.geo.slots {
            return Err(refuse(format!(
                "no such slot: the ledger has {} records",
                self.table.geo.slots
            )));
        }
        if !self.beacons.same_file(lock.as_fd())? {
            return Err(refuse(format!(
                "the descriptor is not the ledger file {} (is the receiver using the same ledger as the sender?)",
                self.display_path().display()
            )));
        }
        let off = self.lock_offset(s);
        match crate::sys::ofd_try_lock(lock.as_fd(), off, 1, true) {
            Ok(true) => {}
            Ok(false) => {
                return Err(refuse(
                    "another open file description holds the slot's lock: the descriptor is not the one holding the record".into(),
                ))
            }
            Err(e) => {
                return Err(Error::LedgerIo {
                    path: self.display_path(),
                    op: "fcntl(F_OFD_SETLK)",
                    source: std::io::Error::from_raw_os_error(e.into()),
                })
            }
        }
        // We hold the lock through `lock`: nobody else may write the slot now.
        let beacon = Beacon::from_fd(lock);
        let t = &self.table;
        let o = t.owner(s).map_err(|b| self.bad(b))?;
        if o != owner || o & OWNER_REAPING != 0 {
            // Dropping `beacon` releases a lock that was free before (or a stale copy's).
            return Err(refuse(format!(
                "the slot's owner word is {o:#x}, not {owner:#x}: the record was freed, reaped or reused"
            )));
        }
        let me = current_owner()?;
        if !t.claim(s, owner, me).map_err(|b| self.bad(b))? {
            return Err(refuse(
                "the slot's owner word changed under its lock".into(),
            ));
        }
        // The previous holder committed its last operation; `take_up` settles it anyway.
        match t.take_up(s) {
            Ok((seq, lanes)) => Ok(VmRecord::holding(self, s, me, seq, lanes, beacon)),
            Err(b) => {
                // Leave the record as it was found, for the reaper.
                let _ = t.claim(s, me, owner);
                Err(self.bad(b))
            }
        }
    }

    /// Whether the record in `slot` is held (its lock taken) by a live process, and by whom
    /// (pid, from the owner word, informational). `None` if the slot is free.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`]; [`Error::LedgerIo`].
    pub fn slot_holder(&self, slot: u32) -> Result<Option<(u32, bool)>> {
        let s = slot as usize;
        if s >= self.table.geo.slots {
            return Ok(None);
        }
        let o = self.table.owner(s).map_err(|b| self.bad(b))?;
        if o == 0 {
            return Ok(None);
        }
        let held = self.beacons.is_held(self.lock_offset(s))?;
        Ok(Some((super::table::owner_parts(o).0, held)))
    }
}

impl VmRecord {
    /// The number of the descriptor holding this record's lock (`None` after a simulated
    /// death): memory charged through this record should sit on a higher descriptor, see
    /// [`crate::shared::keep_above`].
    pub(crate) fn lock_raw_fd(&self) -> Option<std::os::fd::RawFd> {
        self.beacon.as_ref().map(|b| b.raw_fd())
    }

    /// Makes dropping this record leave its charges in the slot instead of releasing them,
    /// for the other holder of its lock's description to take back ([`Handover::reclaim`]):
    /// the warm-pool service keeps a copy of every record it hands out, so the memory a client
    /// gives back stays charged until the service has it again. If no other holder is left
    /// (the service died), the record is reaped at once by the drop, as if released.
    pub fn hand_back_on_drop(&mut self) {
        self.hand_back = true;
    }

    /// Renames this record (its holder may).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn rename(&mut self, name: &str) -> Result<()> {
        self.ledger
            .table
            .set_name(self.slot, name)
            .map_err(|b| self.ledger.bad(b))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::ClassSpec;
    use crate::units::NodeId;

    fn ledger() -> Arc<Ledger> {
        Arc::new(Ledger::in_memory(&[ClassSpec::new(NodeId(0), 2 << 20, 1 << 30)], 8).unwrap())
    }

    fn reserved(l: &Ledger) -> u64 {
        l.classes().unwrap()[0].reserved_bytes
    }

    #[test]
    fn a_handed_over_record_keeps_its_charge_and_changes_holder() {
        let l = ledger();
        let mut r = l.vm("warm").unwrap();
        r.try_charge(NodeId(0), 2 << 20, 64 << 20).unwrap();
        let h = r.hand_over("vm-1").unwrap();
        // Held by the descriptor alone: not dead, not reaped, still charged.
        assert_eq!(l.reap().unwrap(), 0);
        assert_eq!(reserved(&l), 64 << 20);
        let (slot, owner) = (h.slot(), h.owner());
        let lock = h.lock_fd().try_clone_to_owned().unwrap();
        drop(h); // the sender's copy goes; the receiver's keeps the lock
        assert_eq!(l.reap().unwrap(), 0);
        let mut taken = l.take_over(slot, owner, lock).unwrap();
        assert_eq!(taken.charged(NodeId(0), 2 << 20), 64 << 20);
        assert_eq!(l.snapshot().unwrap().vms[0].name, "vm-1");
        assert_eq!(reserved(&l), 64 << 20);
        taken.release(NodeId(0), 2 << 20, 32 << 20).unwrap();
        assert_eq!(reserved(&l), 32 << 20);
        drop(taken);
        assert_eq!(reserved(&l), 0);
    }

    #[test]
    fn a_record_whose_lock_died_in_transit_is_reaped_and_cannot_be_taken() {
        let l = ledger();
        let mut r = l.vm("warm").unwrap();
        r.try_charge(NodeId(0), 2 << 20, 16 << 20).unwrap();
        let h = r.hand_over("vm-1").unwrap();
        let (slot, owner) = (h.slot(), h.owner());
        drop(h); // no copy anywhere: the holder is dead
        assert_eq!(l.reap().unwrap(), 1);
        assert_eq!(reserved(&l), 0);
        let e = l.take_over(
            slot,
            owner,
            std::fs::File::open("/dev/null").unwrap().into(),
        );
        assert!(matches!(e, Err(Error::HandoverRefused { .. })), "{e:?}");
    }

    #[test]
    fn fdinfo_lock_lines_are_matched_by_offset() {
        let l = "lock:\t1: OFDLCK ADVISORY  WRITE -1 fe:00:10010626 4096 4096";
        assert!(ofd_lock_at(l, 4096));
        assert!(!ofd_lock_at(l, 0));
        assert!(!ofd_lock_at(
            "lock:\t1: POSIX  ADVISORY  WRITE 77 fe:00:10010626 4096 4096",
            4096
        ));
        assert!(!ofd_lock_at("pos:\t4096", 4096));
    }

    /// A record handed back on drop keeps its charge while another holder of the lock's
    /// description lives (here a child process that inherited it), the copy left behind sees
    /// that holder, and reclaims the record once it is gone.
    #[test]
    fn a_record_handed_back_stays_charged_and_is_reclaimed_through_the_kept_copy() {
        let l = ledger(); // a memfd: /proc shows its descriptors like any file's
        let mut r = l.vm("warm").unwrap();
        r.try_charge(NodeId(0), 2 << 20, 64 << 20).unwrap();
        let h = r.hand_over("vm-1").unwrap();
        // The receiver: takes the record over through its own descriptor of the description.
        let mut taken = l
            .take_over(
                h.slot(),
                h.owner(),
                h.lock_fd().try_clone_to_owned().unwrap(),
            )
            .unwrap();
        taken.hand_back_on_drop();
        // A process that inherited the description (as an `exec`ed VMM does).
        let inherited = h.lock_fd().try_clone_to_owned().unwrap();
        crate::sys::set_cloexec(inherited.as_fd(), false).unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        drop(inherited);
        drop(taken);
        assert_eq!(l.reap().unwrap(), 0, "held by the copies: not dead");
        assert_eq!(reserved(&l), 64 << 20, "handed back, not released");
        let t0 = std::time::Instant::now();
        while !h.held_elsewhere(&l) {
            // /proc of a just-spawned child may not list its fds yet.
            assert!(
                t0.elapsed().as_secs() < 10,
                "the child's descriptor was not seen"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(!h.held_elsewhere(&l));
        let mut back = h.reclaim(&l).unwrap().expect("still charged");
        assert_eq!(back.total(), 64 << 20);
        back.rename("warm").unwrap();
        drop(back);
        assert_eq!(reserved(&l), 0);
    }

    #[test]
    fn a_record_handed_back_with_nobody_left_is_released_at_once() {
        let l = ledger();
        let mut r = l.vm("warm").unwrap();
        r.try_charge(NodeId(0), 2 << 20, 16 << 20).unwrap();
        let h = r.hand_over("vm-1").unwrap();
        let lock = h.lock_fd().try_clone_to_owned().unwrap();
        let mut taken = l.take_over(h.slot(), h.owner(), lock).unwrap();
        taken.hand_back_on_drop();
        drop(h); // the sender died
        drop(taken);
        assert_eq!(reserved(&l), 0, "no reaper needed");
        assert!(l.snapshot_no_reap().unwrap().vms.is_empty());
    }

    #[test]
    fn taking_over_with_the_wrong_descriptor_or_owner_is_refused() {
        let l = ledger();
        let mut r = l.vm("warm").unwrap();
        r.try_charge(NodeId(0), 2 << 20, 16 << 20).unwrap();
        let h = r.hand_over("vm-1").unwrap();
        // Not the ledger file.
        let (rd, _wr) = rustix::pipe::pipe().unwrap();
        let e = l.take_over(h.slot(), h.owner(), rd).unwrap_err();
        assert!(e.to_string().contains("not the ledger file"), "{e}");
        // Wrong owner word: refused, and the record stays with its holder.
        let lock = h.lock_fd().try_clone_to_owned().unwrap();
        let e = l.take_over(h.slot(), h.owner() ^ 1, lock).unwrap_err();
        assert!(e.to_string().contains("owner word"), "{e}");
        assert_eq!(l.reap().unwrap(), 0);
        // Out of range.
        let lock = h.lock_fd().try_clone_to_owned().unwrap();
        assert!(l.take_over(99, h.owner(), lock).is_err());
        let back = h.take_back(&l).unwrap();
        assert_eq!(back.total(), 16 << 20);
        drop(back);
        assert_eq!(reserved(&l), 0);
    }
}
