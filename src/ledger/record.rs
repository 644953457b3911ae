//! A VM's record: the slot one VMM process holds, and every charge and release it makes.

use std::sync::Arc;

use super::config::headroom;
use super::owner::Beacon;
use super::table::{self, Crash, Stat};
use super::{guess, invalid, Ledger};
use crate::error::{Error, Result};
use crate::units::NodeId;

/// A VM's record in the ledger and everything charged through it. Dropping it releases all
/// its charges and frees the record; if the process dies instead, the next admission, status
/// or [`Ledger::reap`] does.
///
/// Operations take `&mut self`: one record has one writer, which is what makes the fast path
/// one compare-exchange. Threads that charge concurrently use one `VmRecord` each.
#[derive(Debug)]
pub struct VmRecord {
    pub(super) ledger: Arc<Ledger>,
    pub(super) slot: usize,
    pub(super) owner: u64,
    pub(super) pid: u32,
    pub(super) seq: u64,
    /// Per class: our words (validated at claim), our charge and the last counter words we
    /// wrote.
    pub(super) lanes: Vec<table::Lane>,
    /// The slot's lock (see `owner.rs`), held for as long as this record; `None` only after a
    /// simulated death (test seams).
    pub(super) beacon: Option<Beacon>,
    /// Drop leaves the charges to the other holder of the lock's description instead of
    /// releasing them (see [`VmRecord::hand_back_on_drop`]).
    pub(super) hand_back: bool,
}

impl VmRecord {
    /// The record of slot `s` for this process (`me`), which holds the slot's lock (`beacon`),
    /// has claimed its owner word and took up its state ([`table::Table::take_up`]).
    pub(super) fn holding(
        ledger: &Arc<Ledger>,
        s: usize,
        me: u64,
        seq: u64,
        lanes: Vec<table::Lane>,
        beacon: Beacon,
    ) -> VmRecord {
        VmRecord {
            ledger: Arc::clone(ledger),
            slot: s,
            owner: me,
            pid: std::process::id(),
            seq,
            lanes,
            beacon: Some(beacon),
            hand_back: false,
        }
    }

    /// Charges `bytes` more on (node, class) if the class's limit allows it.
    ///
    /// Atomic against every thread and process: the sum of charges never passes the limit, and
    /// a refusal means the limit was passed at the moment of the decision (a concurrent
    /// request that failed never causes it). When refused, reaps dead owners once and retries.
    ///
    /// # Errors
    /// [`Error::AdmissionRefused`] with the numbers; [`Error::LedgerNoClass`];
    /// [`Error::InvalidSize`] for zero bytes or a size that is not a multiple of 4096;
    /// [`Error::LedgerInvalid`].
    pub fn try_charge(&mut self, node: NodeId, page_size_bytes: u64, bytes: u64) -> Result<()> {
        let c = self.ledger.class_index(node, page_size_bytes)?;
        self.try_charge_class(c, bytes)
    }

    /// [`VmRecord::try_charge`] by class index ([`Ledger::class_index`]).
    ///
    /// # Errors
    /// As [`VmRecord::try_charge`].
    #[inline] // the fast path is a few instructions; the slow paths are cold functions
    pub fn try_charge_class(&mut self, c: usize, bytes: u64) -> Result<()> {
        if let Some(lane) = self.lanes.get_mut(c) {
            if bytes != 0
                && bytes % table::UNIT == 0
                && lane.fast(self.seq, lane.charged.saturating_add(bytes))
            {
                self.seq += 1;
                return Ok(());
            }
        }
        self.charge_slow(c, bytes)
    }

    /// [`VmRecord::try_charge_class`] when the fast path declined: a bad size, a stale guess, a
    /// refusal to judge, a class out of range.
    #[cold]
    #[inline(never)]
    fn charge_slow(&mut self, c: usize, bytes: u64) -> Result<()> {
        if bytes == 0 || bytes % table::UNIT != 0 {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: "the ledger counts memory in 4 KiB pages: charge a positive multiple of 4096 bytes (every page size is one)".into(),
            });
        }
        let Some(lane) = self.lanes.get(c) else {
            return Err(invalid(self.ledger.path(), "class index out of range"));
        };
        let from = lane.charged;
        let to = from.saturating_add(bytes);
        if to > table::MAX_BYTES {
            // More than any limit can be (limits are at most 4 PiB): a refusal, not corruption.
            let t = &self.ledger.table;
            let limit = t.limit(c).map_err(|b| self.ledger.bad(b))?;
            let reserved = t.read_counter(c).map_err(|b| self.ledger.bad(b))?.bytes;
            return Err(self.refusal(c, bytes, reserved, limit));
        }
        for attempt in 0..2 {
            let t = &self.ledger.table;
            let limit = t.limit(c).map_err(|b| self.ledger.bad(b))?;
            let seq = self.seq;
            self.seq += 1;
            match t
                .apply(
                    self.slot,
                    seq,
                    c,
                    from,
                    to,
                    Some(limit),
                    guess(self.lanes[c].last[0]),
                    Crash::Never,
                )
                .map_err(|b| self.ledger.bad(b))?
            {
                Ok(w) => {
                    self.lanes[c].charged = to;
                    self.lanes[c].last[0] = w;
                    return Ok(());
                }
                Err(reserved) => {
                    if attempt == 0 && self.ledger.reap()? > 0 {
                        continue;
                    }
                    return Err(self.refusal(c, bytes, reserved, limit));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn refusal(&self, c: usize, requested: u64, reserved: u64, limit: u64) -> Error {
        let (node, page_size_bytes) = self.ledger.classes[c];
        let st = self.ledger.classes().ok().and_then(|v| v.get(c).cloned());
        let (capacity, host_reserve, ppm) = st
            .map(|s| (s.capacity_bytes, s.host_reserve_bytes, s.headroom_ppm))
            .unwrap_or((0, 0, 0));
        Error::AdmissionRefused {
            node,
            page_size_bytes,
            requested,
            available: limit.saturating_sub(reserved),
            limit,
            reserved,
            capacity,
            host_reserve,
            headroom: headroom(capacity, u64::from(ppm)),
        }
    }

    /// Gives back `bytes` of this record's charge on (node, class).
    ///
    /// # Errors
    /// [`Error::InvalidSize`] if more than charged; [`Error::LedgerNoClass`];
    /// [`Error::LedgerInvalid`].
    pub fn release(&mut self, node: NodeId, page_size_bytes: u64, bytes: u64) -> Result<()> {
        let c = self.ledger.class_index(node, page_size_bytes)?;
        self.release_class(c, bytes)
    }

    /// [`VmRecord::release`] by class index.
    ///
    /// # Errors
    /// As [`VmRecord::release`].
    #[inline] // as for `try_charge_class`
    pub fn release_class(&mut self, c: usize, bytes: u64) -> Result<()> {
        if let Some(lane) = self.lanes.get_mut(c) {
            if bytes != 0
                && bytes <= lane.charged
                && bytes % table::UNIT == 0
                && lane.fast(self.seq, lane.charged - bytes)
            {
                self.seq += 1;
                return Ok(());
            }
        }
        self.release_slow(c, bytes)
    }

    /// [`VmRecord::release_class`] when the fast path declined: a bad size, a stale guess, a
    /// class out of range.
    #[cold]
    #[inline(never)]
    fn release_slow(&mut self, c: usize, bytes: u64) -> Result<()> {
        let Some(lane) = self.lanes.get(c) else {
            return Err(invalid(self.ledger.path(), "class index out of range"));
        };
        let from = lane.charged;
        if bytes > from {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: format!("only {from} bytes are charged on this class"),
            });
        }
        if bytes % table::UNIT != 0 {
            return Err(Error::InvalidSize {
                size: bytes,
                reason: "the ledger counts memory in 4 KiB pages: release a multiple of 4096 bytes"
                    .into(),
            });
        }
        if bytes == 0 {
            return Ok(());
        }
        let seq = self.seq;
        self.seq += 1;
        let w = self
            .ledger
            .table
            .apply(
                self.slot,
                seq,
                c,
                from,
                from - bytes,
                None,
                guess(self.lanes[c].last[1]),
                Crash::Never,
            )
            .map_err(|b| self.ledger.bad(b))?;
        self.lanes[c].charged = from - bytes;
        self.lanes[c].last[1] = w.unwrap_or(0);
        Ok(())
    }

    /// Releases every charge of this record (the record stays claimed).
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn release_all(&mut self) -> Result<()> {
        for c in 0..self.lanes.len() {
            let b = self.lanes[c].charged;
            if b != 0 {
                self.release_class(c, b)?;
            }
        }
        Ok(())
    }

    /// Bytes charged on (node, class); 0 for an unknown class.
    pub fn charged(&self, node: NodeId, page_size_bytes: u64) -> u64 {
        self.ledger
            .class_index(node, page_size_bytes)
            .map_or(0, |c| self.lanes[c].charged)
    }

    /// Bytes charged over all classes.
    pub fn total(&self) -> u64 {
        self.lanes.iter().map(|l| l.charged).sum()
    }

    /// The ledger this record is in.
    pub fn ledger(&self) -> &Arc<Ledger> {
        &self.ledger
    }

    /// Records how many bytes of the VM's memory are populated (faulted in).
    pub fn set_populated(&self, bytes: u64) {
        let _ = self
            .ledger
            .table
            .set_stat(self.slot, Stat::Populated, bytes);
    }

    /// Lets this record outlive an `exec` of this process: clears close-on-exec on the
    /// descriptor that holds the record's lock, and returns that descriptor. The program
    /// `exec`ed then holds the record (and its charges) for as long as it keeps the descriptor
    /// open — in practice until it exits, which is when the memory it was charged for goes
    /// too; the reaper then settles the record. Without this call the record dies with the
    /// `exec` (the descriptor is close-on-exec), as the memory mapped before the `exec` does.
    ///
    /// How a launcher hands a reservation to a VMM it `exec`s: map and charge, call this,
    /// pass the memory on (a memfd, also without close-on-exec), `exec` the VMM; this value's
    /// `Drop` never runs then. Children `fork`ed (without `exec`) after this call hold a copy
    /// of the descriptor too and keep the record alive until they exit as well; a launcher
    /// that forks helpers should call this just before its `exec`. If the `exec` fails, the
    /// record is still this value's, and dropping it releases everything as usual.
    ///
    /// # Errors
    /// [`Error::LedgerIo`] if `fcntl(F_SETFD)` fails.
    pub fn keep_across_exec(&self) -> Result<std::os::fd::RawFd> {
        let b = self.beacon.as_ref().ok_or_else(|| Error::LedgerIo {
            path: self.ledger.display_path(),
            op: "keep_across_exec",
            source: std::io::Error::from_raw_os_error(libc::EBADF),
        })?;
        b.keep_across_exec().map_err(|e| Error::LedgerIo {
            path: self.ledger.display_path(),
            op: "fcntl(F_SETFD)",
            source: e,
        })
    }

    /// Records what the guest reports it uses (balloon statistics, a guest agent), and raises
    /// the recorded peak if this is higher.
    pub fn set_guest_used(&self, bytes: u64) {
        let t = &self.ledger.table;
        let _ = t.set_stat(self.slot, Stat::GuestUsed, bytes);
        let _ = t.raise_stat(self.slot, Stat::GuestPeak, bytes);
    }
}

impl Drop for VmRecord {
    fn drop(&mut self) {
        // A child forked with a copy of this value does not own the record: leave it to the
        // parent (or to the reaper once the parent is gone). Dropping the child's copy of the
        // lock's descriptor keeps the lock: the parent's descriptor still refers to it.
        if std::process::id() != self.pid || self.beacon.is_none() {
            return;
        }
        // The fence, checked once more: the slot must still be ours. It is, as long as we hold
        // its lock (nobody else may claim or reap it); if a hostile writer changed the owner
        // word anyway, leave the slot alone rather than write into someone else's record.
        if self.ledger.table.owner(self.slot).ok() != Some(self.owner) {
            return;
        }
        if self.hand_back {
            // The charges stay in the slot for whoever else holds the lock's description (the
            // sender keeps a copy and takes the record back). If nobody does, the record is
            // dead the moment our descriptor closes: settle it now rather than at the next
            // reap. The reaper takes the lock first, so this cannot race the other holder.
            drop(self.beacon.take());
            if let Ok(me) = super::owner::current_owner() {
                let _ = self.ledger.reap_slot(self.slot, me);
            }
            return;
        }
        // Errors mean a corrupted ledger; nothing better to do in drop than leave the record to
        // the reaper (it is settled when this process exits).
        if self.release_all().is_ok() {
            let t = &self.ledger.table;
            let _ = t.clear_info(self.slot);
            let _ = t.free(self.slot, self.owner);
        }
        // Then the lock goes (field drop): the slot is free before anyone may take it.
    }
}

/// Test seams: crash simulation for the loom models, the in-crate tests and the fuzz targets
/// (`cfg(loom)`, `cfg(test)` or feature `test-hooks`); not part of the stable API.
#[cfg(any(test, loom, feature = "test-hooks"))]
impl VmRecord {
    /// Simulates this process dying in the middle of an operation: runs a charge
    /// (`bytes > 0`) or release (`bytes < 0`) on class `c` up to `at`, then abandons the record
    /// without releasing anything and drops the slot's lock, as a SIGKILL there would (the
    /// kernel drops a dead process's locks): the reaper then settles the record.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn crash_during(self, c: usize, bytes: i64, at: Crash) -> Result<()> {
        let from = self.lanes.get(c).map_or(0, |l| l.charged);
        let to = from.saturating_add_signed(bytes);
        let limit = self.ledger.table.limit(c).map_err(|b| self.ledger.bad(b))?;
        let seq = self.seq;
        let _ = self
            .ledger
            .table
            .apply(self.slot, seq, c, from, to, Some(limit), None, at)
            .map_err(|b| self.ledger.bad(b))?;
        self.kill();
        Ok(())
    }

    /// Simulates this process dying between operations: the record is abandoned without
    /// releasing anything, and its lock dropped.
    pub fn kill(mut self) {
        // Dead: no release in Drop; the lock goes with it.
        self.beacon = None;
    }
}
