//! The host-wide ledger: capacity per (node, page-size class), charges per VM, and lock-free
//! admission control that no crash can corrupt.
//!
//! One algorithm, two homes: [`Ledger::in_memory`] (one process) and [`Ledger::open`] (a
//! shared file mapping, default `/run/numapin/ledger`, or `$NUMAPIN_LEDGER`), shared by
//! every VMM process on the host.
//!
//! ```
//! use std::sync::Arc;
//! use numapin::ledger::{ClassSpec, Ledger};
//! use numapin::NodeId;
//!
//! let class = ClassSpec::new(NodeId(0), 2 << 20, 1 << 30); // a 1 GiB pool of 2 MiB pages
//! let ledger = Arc::new(Ledger::in_memory(&[class], 16)?);
//! let mut vm = ledger.vm("web-1")?;
//! vm.try_charge(NodeId(0), 2 << 20, 512 << 20)?;
//! // The limit is 90% of the pool (10% headroom): 512 MiB more does not fit.
//! assert!(ledger.try_charge("web-2", NodeId(0), 2 << 20, 512 << 20).is_err());
//! drop(vm); // releases its charges
//! assert_eq!(ledger.classes()?[0].reserved_bytes, 0);
//! # Ok::<(), numapin::Error>(())
//! ```
//!
//! # How it works
//! Each class has two 8-byte counters that only grow: 4 KiB pages ever charged and ever
//! released (reserved = their difference), each word tagged with the slot that wrote it last.
//! Each VM holds one slot, claimed once, in which only it writes (except the marks helpers
//! raise). A charge publishes its intent in the slot, moves `charged` with one compare-exchange
//! (refusing if the result would pass the limit), then commits in the slot. A word never
//! recurs, so it names the one operation that wrote it; whoever replaces another slot's word
//! first marks it as applied in that slot, so the effect of every operation stays known after
//! its process dies; the reaper settles a dead slot's last operation from that and releases
//! exactly what it held.
//! The argument is written out in `docs/ledger.md`.
//!
//! Everything read from the shared file is untrusted: bad values give
//! [`crate::Error::LedgerInvalid`], never a panic or an out-of-bounds
//! access.

mod config;
mod file;
#[cfg(not(loom))]
mod handover;
mod layout;
mod owner;
mod reaper;
mod record;
mod region;
mod snapshot;
mod table;
#[cfg(test)]
mod tests;
#[cfg(not(loom))]
mod trust;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::units::{NodeId, PageSize};

pub use config::{ClassSpec, ClassStatus, LedgerConfig};
#[cfg(not(loom))]
pub use handover::Handover;
use owner::{current_owner, Beacon, Beacons};
pub use record::VmRecord;
pub use snapshot::{snapshot_is_consistent, SNAPSHOT_TRIES};
/// Where a simulated crash stops an operation (test seam: `cfg(loom)` or feature `test-hooks`).
#[cfg(any(test, loom, feature = "test-hooks"))]
pub use table::Crash;
use table::{
    owner_parts, Bad, Stat, Table, D_CAPACITY, D_HEADROOM_PPM, D_LIMIT, D_NODE, D_PAGE, D_RESERVE,
    OWNER_REAPING,
};

/// Where the host ledger lives unless `$NUMAPIN_LEDGER` says otherwise.
pub const DEFAULT_PATH: &str = "/run/numapin/ledger";
/// The environment variable naming the ledger file.
pub const ENV_PATH: &str = "NUMAPIN_LEDGER";
/// Default headroom: 10% of capacity kept free ("maintain 10–15% free capacity").
pub const DEFAULT_HEADROOM_PPM: u32 = 100_000;
/// Default number of VM records of a new ledger file.
pub const DEFAULT_SLOTS: u32 = 256;

/// The ledger path: `$NUMAPIN_LEDGER` if set and not empty, else [`DEFAULT_PATH`].
pub fn default_path() -> PathBuf {
    match std::env::var_os(ENV_PATH) {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_PATH),
    }
}

/// The page-size class a page size is accounted in: 4096 for base pages and THP (both come
/// from the node's buddy allocator), 2 MiB and 1 GiB for the hugetlb pools; `None` for `Auto`.
pub fn class_of(page: PageSize) -> Option<u64> {
    match page {
        PageSize::Base4K | PageSize::Transparent => Some(4096),
        PageSize::Huge2M => Some(2 << 20),
        PageSize::Huge1G => Some(1 << 30),
        PageSize::Auto => None,
    }
}

/// The host ledger. Share it as `Arc<Ledger>`; see the [module docs](self).
#[derive(Debug)]
pub struct Ledger {
    table: Table,
    path: Option<PathBuf>,
    /// (node, page size) of each class: geometry, validated at open, immutable.
    classes: Vec<(NodeId, u64)>,
    /// The slots' locks: who is alive, and who may write a slot (see `owner.rs`).
    beacons: Beacons,
    /// Whether capacities follow this host's pools and memory ([`Ledger::follow_host`]).
    follows_host: std::sync::atomic::AtomicBool,
}

impl Ledger {
    // ---- construction --------------------------------------------------------------------

    /// A ledger in this process's memory (an anonymous memory file, `memfd_create`: also
    /// shared with children forked after this call).
    ///
    /// # Errors
    /// [`Error::LedgerShape`] for no or too many classes or slots (1..=1024 classes,
    /// 1..=4095 slots), [`Error::LedgerClassPageSize`] for an unknown page size,
    /// [`Error::LedgerClassTwice`] for a duplicate class; [`Error::LedgerIo`] if the
    /// memory file cannot be made.
    pub fn in_memory(classes: &[ClassSpec], slots: u32) -> Result<Ledger> {
        let (t, beacons) = file::new_table(classes, slots)?;
        Ledger::from_table(t, None, beacons)
    }

    fn from_table(table: Table, path: Option<PathBuf>, beacons: Beacons) -> Result<Ledger> {
        let mut classes = Vec::with_capacity(table.geo.classes);
        for c in 0..table.geo.classes {
            let d = table.geo.desc_off(c);
            let node = table
                .load(d + D_NODE)
                .map_err(|b| invalid(path.as_deref(), &b.text()))?;
            let page = table
                .load(d + D_PAGE)
                .map_err(|b| invalid(path.as_deref(), &b.text()))?;
            classes.push((NodeId(node as u32), page));
        }
        Ok(Ledger {
            table,
            path,
            classes,
            beacons,
            follows_host: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The file, or `None` for an in-memory ledger.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    fn bad(&self, b: Bad) -> Error {
        invalid(self.path.as_deref(), &b.text())
    }

    /// The index of a class.
    ///
    /// # Errors
    /// [`Error::LedgerNoClass`] if the ledger has no such class.
    pub fn class_index(&self, node: NodeId, page_size_bytes: u64) -> Result<usize> {
        self.classes
            .iter()
            .position(|&(n, p)| n == node && p == page_size_bytes)
            .ok_or_else(|| Error::LedgerNoClass {
                node,
                page_size_bytes,
                known: self.classes.clone(),
            })
    }

    // ---- reading -------------------------------------------------------------------------

    /// Every class with its capacity, limit and what is reserved now.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn classes(&self) -> Result<Vec<ClassStatus>> {
        let t = &self.table;
        (0..t.geo.classes)
            .map(|c| {
                let d = t.geo.desc_off(c);
                let (node, page) = self.classes[c];
                Ok(ClassStatus {
                    node,
                    page_size_bytes: page,
                    capacity_bytes: t.load(d + D_CAPACITY)?,
                    host_reserve_bytes: t.load(d + D_RESERVE)?,
                    headroom_ppm: t.load(d + D_HEADROOM_PPM)?.min(1_000_000) as u32,
                    limit_bytes: t.limit(c)?,
                    reserved_bytes: t.read_counter(c)?.bytes,
                })
            })
            .collect::<table::R<Vec<_>>>()
            .map_err(|b| self.bad(b))
    }

    /// Sets a class's capacity, host reserve and headroom (e.g. after the pool was grown) and
    /// recomputes its limit. Charges already admitted stay; a lower limit only refuses new ones.
    ///
    /// # Errors
    /// [`Error::LedgerNoClass`], [`Error::LedgerInvalid`].
    pub fn set_capacity(&self, spec: &ClassSpec) -> Result<()> {
        let c = self.class_index(spec.node, spec.page_size_bytes)?;
        let d = self.table.geo.desc_off(c);
        let t = &self.table;
        (|| {
            t.store(d + D_CAPACITY, spec.capacity_bytes)?;
            t.store(d + D_RESERVE, spec.host_reserve_bytes)?;
            t.store(d + D_HEADROOM_PPM, u64::from(spec.headroom_ppm))?;
            t.store(d + D_LIMIT, spec.limit_bytes())
        })()
        .map_err(|b| self.bad(b))
    }

    /// Makes this ledger's capacities follow this host: from now on every [`Ledger::snapshot`]
    /// (`numapin status`) and every [`Ledger::try_charge_parts`] (a reservation's admission)
    /// first re-reads the pools and node memory ([`Ledger::refresh_capacity`]). Set by
    /// [`Ledger::open`] and [`Ledger::open_or_create`], whose classes come from this host.
    pub fn follow_host(&self) {
        self.follows_host
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Re-reads this host's hugetlb pools and node memory (sysfs) and sets every class's
    /// capacity, and so its limit, to what the host has now (each class keeps its host reserve
    /// and headroom). A pool that grew admits more at once; one that shrank below what is
    /// reserved shows as over-commit ([`ClassStatus::overcommitted_bytes`], a warning in
    /// `numapin status`), never as a limit that silently disagrees with the host. Charges
    /// already admitted stay. Returns how many classes changed.
    ///
    /// # Errors
    /// A sysfs error; [`Error::LedgerInvalid`].
    #[cfg(not(loom))]
    pub fn refresh_capacity(&self) -> Result<usize> {
        let topo = crate::topology::Topology::from_sysfs()?;
        let now = ClassSpec::from_topology(&topo, 0, 0);
        let mut changed = 0;
        for st in self.classes()? {
            let Some(spec) = now
                .iter()
                .find(|c| c.node == st.node && c.page_size_bytes == st.page_size_bytes)
            else {
                continue; // the node or pool is gone from sysfs: keep what the file says
            };
            if spec.capacity_bytes != st.capacity_bytes {
                self.set_capacity(&ClassSpec {
                    capacity_bytes: spec.capacity_bytes,
                    host_reserve_bytes: st.host_reserve_bytes,
                    headroom_ppm: st.headroom_ppm,
                    ..*spec
                })?;
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// [`Ledger::refresh_capacity`] if this ledger follows the host.
    pub(crate) fn refresh_if_host(&self) -> Result<()> {
        #[cfg(not(loom))]
        if self.follows_host.load(std::sync::atomic::Ordering::Relaxed) {
            self.refresh_capacity()?;
        }
        Ok(())
    }

    // ---- charging ------------------------------------------------------------------------

    /// Claims a VM record named `name` for this process (once per VM); charge through it.
    ///
    /// The record lives as long as the returned value, or until this process exits, whichever
    /// comes first; [`VmRecord::keep_across_exec`] extends it to a program this process
    /// `exec`s. Reaps dead owners' records first if every record is taken.
    ///
    /// # Errors
    /// [`Error::InvalidVmName`] for an empty name, one over 64 bytes or one with control
    /// characters; [`Error::LedgerFull`] if every record belongs to a live process;
    /// [`Error::LedgerInvalid`]; [`Error::LedgerIo`] if the slot's lock cannot be taken.
    pub fn vm(self: &Arc<Self>, name: &str) -> Result<VmRecord> {
        check_vm_name(name)?;
        let me = current_owner()?;
        for attempt in 0..2 {
            for s in 0..self.table.geo.slots {
                if self.table.owner(s).map_err(|b| self.bad(b))? != 0 {
                    continue;
                }
                // The slot's lock first: whoever holds it is the only writer of the slot.
                let Some(beacon) = self.beacons.try_hold(self.lock_offset(s))? else {
                    continue;
                };
                if self.table.claim(s, 0, me).map_err(|b| self.bad(b))? {
                    return self.adopt(s, me, name, beacon);
                }
                // Taken between our look and our lock (by a holder that has since died, or
                // a writer that ignores the locks): leave it to the reaper.
            }
            if attempt == 0 {
                // Scan again even if this reaped nothing: another reaper may have freed a
                // record meanwhile.
                self.reap()?;
            }
        }
        Err(Error::LedgerFull {
            path: self.display_path(),
            slots: self.table.geo.slots as u32,
        })
    }

    /// The byte of the ledger file whose lock is slot `s`'s beacon: the slot's first byte.
    fn lock_offset(&self, s: usize) -> u64 {
        self.table.geo.slot_off(s) as u64
    }

    fn adopt(self: &Arc<Self>, s: usize, me: u64, name: &str, beacon: Beacon) -> Result<VmRecord> {
        let t = &self.table;
        let r = (|| {
            // A free slot's previous holder released everything and committed.
            let taken = t.take_up(s)?;
            t.clear_info(s)?;
            t.set_name(s, name)?;
            Ok(taken)
        })();
        match r {
            Ok((seq, lanes)) => {
                let mut ch = VmRecord::holding(self, s, me, seq, lanes, beacon);
                // A free slot should hold no charge; if a corrupted one does, give it back.
                if ch.lanes.iter().any(|l| l.charged != 0) {
                    ch.release_all()?;
                }
                Ok(ch)
            }
            Err(b) => {
                let _ = t.free(s, me);
                drop(beacon);
                Err(self.bad(b))
            }
        }
    }

    /// Claims a record for `name` and charges `bytes` on one class, in one call.
    ///
    /// # Errors
    /// As [`Ledger::vm`] and [`VmRecord::try_charge`].
    pub fn try_charge(
        self: &Arc<Self>,
        name: &str,
        node: NodeId,
        page_size_bytes: u64,
        bytes: u64,
    ) -> Result<VmRecord> {
        let mut ch = self.vm(name)?;
        ch.try_charge(node, page_size_bytes, bytes)?;
        Ok(ch)
    }

    fn display_path(&self) -> PathBuf {
        self.path
            .clone()
            .unwrap_or_else(|| PathBuf::from("<in-memory>"))
    }

    /// Records guest-used bytes for every record named `name` (optionally only those of
    /// process `pid`), for a VMM or an operator tool that is not the record's holder (e.g.
    /// `numapin status --guest-used NAME=SIZE`). Returns how many records were updated.
    ///
    /// # Errors
    /// [`Error::LedgerInvalid`].
    pub fn set_guest_used(&self, name: &str, pid: Option<u32>, bytes: u64) -> Result<usize> {
        let t = &self.table;
        let r = (|| -> table::R<usize> {
            let mut n = 0;
            for s in 0..t.geo.slots {
                let o = t.owner(s)?;
                if o == 0 || o & OWNER_REAPING != 0 || t.name(s)? != name {
                    continue;
                }
                if pid.is_some_and(|p| p != owner_parts(o).0) {
                    continue;
                }
                t.set_stat(s, Stat::GuestUsed, bytes)?;
                t.raise_stat(s, Stat::GuestPeak, bytes)?;
                n += 1;
            }
            Ok(n)
        })();
        r.map_err(|b| self.bad(b))
    }

    /// Claims a record for `name` and charges every part `(node, page-size class, bytes)`
    /// of one request, all or nothing: if one part is refused, the parts already charged are
    /// released and the record is freed before the error returns.
    ///
    /// A ledger that follows the host ([`Ledger::follow_host`]) re-reads its capacities first.
    ///
    /// # Errors
    /// As [`Ledger::vm`] and [`VmRecord::try_charge`] (for the first part refused); a sysfs
    /// error from [`Ledger::refresh_capacity`].
    pub fn try_charge_parts(
        self: &Arc<Self>,
        name: &str,
        parts: &[(NodeId, u64, u64)],
    ) -> Result<VmRecord> {
        self.refresh_if_host()?;
        let mut rec = self.vm(name)?;
        for &(node, page_size_bytes, bytes) in parts {
            if bytes > 0 {
                // On error `rec` drops: everything charged so far is refunded.
                rec.try_charge(node, page_size_bytes, bytes)?;
            }
        }
        Ok(rec)
    }
}

// ---- helpers ---------------------------------------------------------------------------------

/// A VM name the ledger records as given: 1 to 64 bytes (the slot's name field; nothing is cut
/// silently), no control characters (they would reach the terminal of whoever runs `status`).
fn check_vm_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidVmName {
            name: name.escape_debug().to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > table::NAME_MAX {
        return bad("it is longer than 64 bytes, the most a ledger record holds");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains control characters (use printable characters)");
    }
    Ok(())
}

/// The guess to pass to [`table::Table::apply`]: none for 0 (nothing written yet).
fn guess(w: u64) -> Option<u64> {
    (w != 0).then_some(w)
}

fn invalid(path: Option<&Path>, what: &str) -> Error {
    Error::LedgerInvalid {
        path: path.map_or_else(|| PathBuf::from("<in-memory>"), Path::to_path_buf),
        what: what.to_string(),
    }
}
