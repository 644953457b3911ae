//! Reading the whole ledger at once: consistent snapshots (what `numapin status` shows) and
//! the audit.

use super::table::{self, owner_parts, Stat, OWNER_REAPING};
use super::{invalid, Ledger};
use crate::error::Result;
use crate::snapshot::{ClassSnapshot, NodeSnapshot, Snapshot, VmReservation, VmSnapshot};

impl Ledger {
    // ---- status --------------------------------------------------------------------------

    /// Reaps dead owners, then returns the ledger as a [`Snapshot`] (what
    /// `numapin status --json` prints). Records of one VM name held by one process are merged.
    ///
    /// The class totals and the VMs' charges are read one after the other, so a charge or
    /// release in between would tear the picture (a total that no set of VM charges explains,
    /// which the planner rightly refuses). The snapshot is therefore read again, up to
    /// [`SNAPSHOT_TRIES`] times, until every class total equals the sum of the VMs' charges in
    /// it: a consistent cut. Only under unceasing churn can a torn snapshot come back.
    ///
    /// # Errors
    /// [`crate::Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn snapshot(&self) -> Result<Snapshot> {
        self.refresh_if_host()?;
        let _ = self.reap()?;
        let mut snap = self.snapshot_no_reap()?;
        for _ in 1..SNAPSHOT_TRIES {
            if snapshot_is_consistent(&snap) {
                break;
            }
            std::thread::yield_now();
            snap = self.snapshot_no_reap()?;
        }
        Ok(snap)
    }

    /// The snapshot without reaping first (dead owners' records still appear).
    ///
    /// # Errors
    /// [`crate::Error::LedgerInvalid`] if the file holds out-of-range values.
    pub fn snapshot_no_reap(&self) -> Result<Snapshot> {
        let t = &self.table;
        let mut nodes: Vec<NodeSnapshot> = Vec::new();
        for c in self.classes()? {
            let cs = ClassSnapshot {
                page_size_bytes: c.page_size_bytes,
                capacity_bytes: c.capacity_bytes,
                limit_bytes: c.limit_bytes,
                reserved_bytes: c.reserved_bytes,
                available_bytes: c.available_bytes(),
            };
            match nodes.iter_mut().find(|n| n.id == c.node) {
                Some(n) => n.classes.push(cs),
                None => nodes.push(NodeSnapshot {
                    id: c.node,
                    classes: vec![cs],
                }),
            }
        }
        let mut vms: Vec<VmSnapshot> = Vec::new();
        let r = (|| -> table::R<()> {
            for s in 0..t.geo.slots {
                let o = t.owner(s)?;
                if o == 0 || o & OWNER_REAPING != 0 {
                    continue;
                }
                let pid = owner_parts(o).0;
                let name = t.name(s)?;
                let idx = match vms.iter().position(|v| v.name == name && v.pid == pid) {
                    Some(i) => i,
                    None => {
                        vms.push(VmSnapshot {
                            name,
                            pid,
                            ..VmSnapshot::default()
                        });
                        vms.len() - 1
                    }
                };
                let v = &mut vms[idx];
                for c in 0..t.geo.classes {
                    let b = t.charged(s, c)?;
                    if b == 0 {
                        continue;
                    }
                    let (node, page) = self.classes[c];
                    match v
                        .reservations
                        .iter_mut()
                        .find(|r| r.node == node && r.page_size_bytes == page)
                    {
                        Some(r) => r.bytes = r.bytes.saturating_add(b),
                        None => v.reservations.push(VmReservation {
                            node,
                            page_size_bytes: page,
                            bytes: b,
                        }),
                    }
                }
                v.guest_used_bytes = v
                    .guest_used_bytes
                    .saturating_add(t.stat(s, Stat::GuestUsed)?);
                v.guest_used_peak_bytes = v
                    .guest_used_peak_bytes
                    .saturating_add(t.stat(s, Stat::GuestPeak)?);
                v.populated_bytes = Some(
                    v.populated_bytes
                        .unwrap_or(0)
                        .saturating_add(t.stat(s, Stat::Populated)?),
                );
            }
            Ok(())
        })();
        r.map_err(|b| self.bad(b))?;
        for v in &mut vms {
            let mut ns: Vec<_> = v.reservations.iter().map(|r| r.node).collect();
            ns.dedup();
            if !v.reservations.is_empty() {
                v.single_node = Some(ns.len() == 1);
            }
        }
        let who = crate::snapshot::HostIdentity::this_host();
        let mut snap = Snapshot {
            host: who.host,
            host_id: who.host_id,
            nodes,
            vms,
        };
        snap.canonicalize();
        Ok(snap)
    }

    /// Checks that every class counter equals the sum of the charges of the records holding
    /// it. Meaningful only when no operation is in flight (tests, after all VMMs stopped).
    ///
    /// # Errors
    /// [`crate::Error::LedgerInvalid`] naming the first class that differs.
    pub fn audit(&self) -> Result<()> {
        let t = &self.table;
        let r = (|| -> table::R<Option<String>> {
            for c in 0..t.geo.classes {
                let mut sum: u64 = 0;
                for s in 0..t.geo.slots {
                    if t.owner(s)? != 0 {
                        sum = sum.saturating_add(t.charged(s, c)?);
                    }
                }
                let k = t.read_counter(c)?.bytes;
                if k != sum {
                    return Ok(Some(format!(
                        "class {c} counter {k} != sum of records {sum}"
                    )));
                }
            }
            Ok(None)
        })();
        match r.map_err(|b| self.bad(b))? {
            None => Ok(()),
            Some(w) => Err(invalid(self.path.as_deref(), &w)),
        }
    }
}

/// How many times [`Ledger::snapshot`] reads the ledger at most to get a consistent cut.
pub const SNAPSHOT_TRIES: usize = 1000;

/// Whether every class total of `s` equals the sum of its VMs' charges in that class.
pub fn snapshot_is_consistent(s: &Snapshot) -> bool {
    s.nodes.iter().all(|n| {
        n.classes.iter().all(|c| {
            let sum = s
                .vms
                .iter()
                .flat_map(|v| &v.reservations)
                .filter(|r| r.node == n.id && r.page_size_bytes == c.page_size_bytes)
                .fold(0u64, |a, r| a.saturating_add(r.bytes));
            sum == c.reserved_bytes
        })
    })
}
