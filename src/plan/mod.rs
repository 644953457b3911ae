//! Capacity and failover planning over ledger snapshots: pure arithmetic, no I/O.
//!
//! The input is one [`Snapshot`] per host, exactly what `numapin status --json` prints. A
//! [`Fleet`] is built from them after checking that each is consistent (every limit at most
//! the capacity, every reservation at most the limit, VM charges summing to the node totals,
//! no duplicate nodes or classes). On a fleet:
//!
//! - [`failover`](mod@failover): N+k. For every set of `k` failed hosts, can every VM of the failed hosts be
//!   re-placed on the survivors, within every (node, page-size class) limit, keeping each VM
//!   in its classes and single-node VMs on one node? Each scenario is answered
//!   [`Guaranteed`](failover::ScenarioOutcome::Guaranteed) with a placement as witness,
//!   [`Impossible`](failover::ScenarioOutcome::Impossible) with a proof, or
//!   [`NotProven`](failover::ScenarioOutcome::NotProven) when the heuristic failed and the exact search
//!   ran out of budget.
//! - [`headroom`]: the largest VM of a class that can be admitted while keeping N+k.
//! - [`rightsize`]: VMs whose guest-used peak stays far below their allocation.
//! - [`policy`]: where to place a new VM (first-fit, best-fit, spread, market pricing).
//! - [`ha`]: VMware HA's slot and percentage admission policies on the same input, compared
//!   with the exact answer.
//! - [`sim`]: the policies over a stream of arrivals and departures.
//!
//! # The capacity model
//! A host has NUMA nodes; a node offers page-size classes (4 KiB base pages, 2 MiB and 1 GiB
//! hugetlb pools). The free capacity of a (node, class) is `limit - reserved`, rounded down to
//! whole pages. A VM demands, per class, the bytes it has reserved. A *single-node* VM must
//! get all its classes on one node; any other VM must sit on one host but its memory of each
//! class may be split over that host's nodes. So a host can take a set of VMs exactly when
//! every node holds its single-node VMs and, per class, the host's total free covers all of
//! them together.
//!
//! Everything here is safe Rust without I/O; JSON reading belongs to the caller (the CLI).

use crate::error::{Error, Result};
use crate::snapshot::Snapshot;
pub use crate::units::class_name;
use crate::units::{format_bytes, NodeId};

// The planner walks several per-class arrays in step; an index reads clearer than zips.
#[allow(clippy::needless_range_loop)]
pub mod failover;
pub mod ha;
pub mod headroom;
pub mod holdback;
pub mod policy;
pub mod report;
pub mod rightsize;
pub mod sim;

pub use failover::{failover, Budget, FailoverReport, Proof, ScenarioOutcome, Verdict};
pub use report::{plan, PlanOptions, PlanReport};

/// A fleet of hosts with their nodes, classes and VMs, checked for consistency.
///
/// Built only by [`Fleet::from_snapshots`] / [`Fleet::from_labelled`] (which validate) and
/// changed only by [`Fleet::admit`] / [`Fleet::release`], so its indices always agree: every
/// node's host, every VM's charges and every per-class vector is in range.
///
/// Indices (`host`, `node`, `class`, `vm`) are positions in the vectors of this struct.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fleet {
    /// The distinct page sizes of the fleet in bytes, ascending; a class index points here.
    pub(crate) classes: Vec<u64>,
    /// The hosts, in input order.
    pub(crate) hosts: Vec<Host>,
    /// Every node of every host; a host's nodes are contiguous.
    pub(crate) nodes: Vec<Node>,
    /// Every VM of every host.
    pub(crate) vms: Vec<Vm>,
}

/// One host of a [`Fleet`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Host {
    /// The host name from the snapshot (`#i` when it had none; `name#i` when an earlier
    /// snapshot has the same name), where `i` is its position.
    pub name: String,
    /// The snapshot's `host_id` (empty when it had none).
    pub host_id: String,
    /// The first of its nodes in [`Fleet::nodes`].
    pub first_node: usize,
    /// How many nodes it has.
    pub node_count: usize,
}

/// One NUMA node of a [`Fleet`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The host it belongs to.
    pub host: usize,
    /// Its id on that host.
    pub id: NodeId,
    /// Per class index: what admission allows (0 when the node does not offer the class).
    pub limit: Vec<u64>,
    /// Per class index: reserved by the VMs on it.
    pub reserved: Vec<u64>,
}

/// One VM of a [`Fleet`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Vm {
    /// Its name.
    pub name: String,
    /// The host it runs on.
    pub host: usize,
    /// Per class index: bytes it needs (what it has reserved).
    pub demand: Vec<u64>,
    /// Whether all its memory must come from one node.
    pub single_node: bool,
    /// Where its memory is now: (node index, class index, bytes).
    pub charges: Vec<(usize, usize, u64)>,
    /// The peak of what the guest reported using; 0 if unknown.
    pub guest_used_peak: u64,
}

impl Node {
    /// Free bytes of class `c`: `limit - reserved`, rounded down to whole pages of `page`.
    pub fn free(&self, c: usize, page: u64) -> u64 {
        let f = self.limit[c].saturating_sub(self.reserved[c]);
        f - f % page.max(1)
    }
}

impl Vm {
    /// Total bytes over all classes.
    pub fn total(&self) -> u64 {
        self.demand.iter().fold(0u64, |a, &b| a.saturating_add(b))
    }
}

impl Host {
    /// The index range of its nodes in [`Fleet::nodes`].
    pub fn nodes(&self) -> std::ops::Range<usize> {
        self.first_node..self.first_node + self.node_count
    }
}

/// Refuses two snapshots of one host (see [`Fleet::from_labelled`]).
fn check_distinct_hosts<S: AsRef<str>>(snaps: &[(S, &Snapshot)]) -> Result<()> {
    use std::collections::HashMap;
    let mut by_id: HashMap<(&str, &str), usize> = HashMap::new();
    let mut anonymous: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (label, s)) in snaps.iter().enumerate() {
        let first = if s.host_id.is_empty() {
            let same = anonymous.entry(s.host.as_str()).or_default();
            let hit = same.iter().copied().find(|&j| snaps[j].1 == *s);
            same.push(i);
            hit
        } else {
            by_id.insert((s.host_id.as_str(), s.host.as_str()), i)
        };
        if let Some(j) = first {
            return Err(Error::DuplicateHost {
                host: s.host.clone(),
                host_id: s.host_id.clone(),
                first: snaps[j].0.as_ref().to_string(),
                second: label.as_ref().to_string(),
            });
        }
    }
    Ok(())
}

fn invalid(file: &str, field: String, what: String) -> Error {
    Error::InvalidSnapshot {
        file: file.to_string(),
        field,
        what,
    }
}

impl Fleet {
    /// The distinct page sizes of the fleet in bytes, ascending; a class index points here.
    pub fn classes(&self) -> &[u64] {
        &self.classes
    }

    /// The hosts, in input order.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// Every node of every host; a host's nodes are contiguous.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Every VM of every host.
    pub fn vms(&self) -> &[Vm] {
        &self.vms
    }

    /// Builds a fleet from snapshots, labelling errors `snapshot[i]`.
    ///
    /// # Errors
    /// [`Error::InvalidSnapshot`] when a snapshot is inconsistent (see
    /// [`Fleet::from_labelled`]).
    pub fn from_snapshots(snaps: &[Snapshot]) -> Result<Fleet> {
        let labelled: Vec<(String, &Snapshot)> = snaps
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("snapshot[{i}]"), s))
            .collect();
        Fleet::from_labelled(&labelled)
    }

    /// Builds a fleet from snapshots, each with the label (a file name) its errors name.
    ///
    /// # Errors
    /// [`Error::InvalidSnapshot`], naming the label and the field, when: a page size is not a
    /// power of two; a node id or a class repeats; `limit_bytes > capacity_bytes`;
    /// `reserved_bytes > limit_bytes`; `available_bytes != limit_bytes - reserved_bytes`; a VM
    /// charges a node or class the host does not list; the VM charges of a (node, class) do not
    /// sum to its `reserved_bytes`; a VM marked `single_node` has charges on several nodes.
    /// Records of warm memory ([`crate::snapshot::is_pool_memory`]) are not VMs: their bytes
    /// count as free.
    /// [`Error::DuplicateHost`] when two snapshots are of one host: the same (`host_id`,
    /// `host`), or, for snapshots without `host_id`, the same name and identical contents (one
    /// file given twice).
    pub fn from_labelled<S: AsRef<str>>(snaps: &[(S, &Snapshot)]) -> Result<Fleet> {
        check_distinct_hosts(snaps)?;
        let mut names: std::collections::HashSet<String> = std::collections::HashSet::new();
        let mut classes: Vec<u64> = Vec::new();
        for (label, s) in snaps {
            let label = label.as_ref();
            for (i, n) in s.nodes.iter().enumerate() {
                for (j, c) in n.classes.iter().enumerate() {
                    let p = c.page_size_bytes;
                    if !p.is_power_of_two() {
                        return Err(invalid(
                            label,
                            format!("nodes[{i}].classes[{j}].page_size_bytes"),
                            format!("{p} is not a page size (expected a power of two such as 4096, 2097152 or 1073741824)"),
                        ));
                    }
                    if let Err(pos) = classes.binary_search(&p) {
                        classes.insert(pos, p);
                    }
                }
            }
        }
        let nc = classes.len();
        let cidx = |p: u64| classes.binary_search(&p).ok();
        let mut fleet = Fleet {
            classes: classes.clone(),
            ..Fleet::default()
        };
        for (h, (label, s)) in snaps.iter().enumerate() {
            let label = label.as_ref();
            let first_node = fleet.nodes.len();
            for (i, n) in s.nodes.iter().enumerate() {
                if s.nodes[..i].iter().any(|m| m.id == n.id) {
                    return Err(invalid(
                        label,
                        format!("nodes[{i}].id"),
                        format!("node {} is listed twice; each node appears once", n.id),
                    ));
                }
                let mut node = Node {
                    host: h,
                    id: n.id,
                    limit: vec![0; nc],
                    reserved: vec![0; nc],
                };
                for (j, c) in n.classes.iter().enumerate() {
                    let f = |name: &str| format!("nodes[{i}].classes[{j}].{name}");
                    if n.classes[..j]
                        .iter()
                        .any(|d| d.page_size_bytes == c.page_size_bytes)
                    {
                        return Err(invalid(
                            label,
                            f("page_size_bytes"),
                            format!(
                                "class {} is listed twice on node {}",
                                class_name(c.page_size_bytes),
                                n.id
                            ),
                        ));
                    }
                    if c.limit_bytes > c.capacity_bytes {
                        return Err(invalid(
                            label,
                            f("limit_bytes"),
                            format!(
                                "limit {} exceeds capacity {} on node {} class {}",
                                format_bytes(c.limit_bytes),
                                format_bytes(c.capacity_bytes),
                                n.id,
                                class_name(c.page_size_bytes)
                            ),
                        ));
                    }
                    if c.reserved_bytes > c.limit_bytes {
                        return Err(invalid(
                            label,
                            f("reserved_bytes"),
                            format!(
                                "reserved {} exceeds limit {} on node {} class {}",
                                format_bytes(c.reserved_bytes),
                                format_bytes(c.limit_bytes),
                                n.id,
                                class_name(c.page_size_bytes)
                            ),
                        ));
                    }
                    if c.available_bytes != c.limit_bytes - c.reserved_bytes {
                        return Err(invalid(
                            label,
                            f("available_bytes"),
                            format!(
                                "available {} is not limit {} minus reserved {}",
                                c.available_bytes, c.limit_bytes, c.reserved_bytes
                            ),
                        ));
                    }
                    let k = cidx(c.page_size_bytes).unwrap_or(0);
                    node.limit[k] = c.limit_bytes;
                    node.reserved[k] = c.reserved_bytes;
                }
                fleet.nodes.push(node);
            }
            let node_count = fleet.nodes.len() - first_node;
            // Names label the output; two snapshots of the same name are still two hosts.
            let mut name = if s.host.is_empty() {
                format!("#{h}")
            } else {
                s.host.clone()
            };
            if !names.insert(name.clone()) {
                name = format!("{name}#{h}");
                names.insert(name.clone());
            }
            fleet.hosts.push(Host {
                name,
                host_id: s.host_id.clone(),
                first_node,
                node_count,
            });
            // Charges must add up to the node totals.
            let mut charged = vec![0u64; node_count * nc];
            let mut warm: Vec<(usize, usize, u64)> = Vec::new();
            for (v, vm) in s.vms.iter().enumerate() {
                let mut out = Vm {
                    name: vm.name.clone(),
                    host: h,
                    demand: vec![0; nc],
                    single_node: false,
                    charges: Vec::new(),
                    guest_used_peak: vm.guest_peak_bytes(),
                };
                for (r, res) in vm.reservations.iter().enumerate() {
                    let f = |name: &str| format!("vms[{v}].reservations[{r}].{name}");
                    let Some(ni) = s.nodes.iter().position(|n| n.id == res.node) else {
                        return Err(invalid(
                            label,
                            f("node"),
                            format!(
                                "VM {:?} charges node {}, which the snapshot does not list",
                                vm.name, res.node
                            ),
                        ));
                    };
                    let listed = s.nodes[ni]
                        .classes
                        .iter()
                        .any(|c| c.page_size_bytes == res.page_size_bytes);
                    let k = match cidx(res.page_size_bytes) {
                        Some(k) if listed => k,
                        _ => {
                            return Err(invalid(
                                label,
                                f("page_size_bytes"),
                                format!(
                                    "VM {:?} charges class {} on node {}, which that node does not offer",
                                    vm.name, res.page_size_bytes, res.node
                                ),
                            ))
                        }
                    };
                    let slot = &mut charged[ni * nc + k];
                    *slot = slot.saturating_add(res.bytes);
                    out.demand[k] = out.demand[k].saturating_add(res.bytes);
                    out.charges.push((first_node + ni, k, res.bytes));
                }
                let mut on: Vec<usize> = out
                    .charges
                    .iter()
                    .filter(|c| c.2 > 0)
                    .map(|c| c.0)
                    .collect();
                on.sort_unstable();
                on.dedup();
                out.single_node = match vm.single_node {
                    Some(true) if on.len() > 1 => {
                        return Err(invalid(
                            label,
                            format!("vms[{v}].single_node"),
                            format!(
                                "VM {:?} is marked single_node but has charges on {} nodes",
                                vm.name,
                                on.len()
                            ),
                        ))
                    }
                    Some(b) => b,
                    None => on.len() <= 1,
                };
                if crate::snapshot::is_pool_memory(&vm.name) {
                    // Warm memory of `numapin serve` (or being zeroed to be warm again): ready
                    // for whoever needs it (it is how failover capacity is kept ready), so
                    // free for the planner.
                    warm.extend(out.charges);
                    continue;
                }
                fleet.vms.push(out);
            }
            for (i, n) in s.nodes.iter().enumerate() {
                for (j, c) in n.classes.iter().enumerate() {
                    let k = cidx(c.page_size_bytes).unwrap_or(0);
                    let sum = charged[i * nc + k];
                    if sum != c.reserved_bytes {
                        return Err(invalid(
                            label,
                            format!("nodes[{i}].classes[{j}].reserved_bytes"),
                            format!(
                                "node {} class {} says {} ({} B) reserved but its VMs' charges sum to {} ({} B) (a snapshot taken while VMs start or stop can be torn: take it again)",
                                n.id,
                                class_name(c.page_size_bytes),
                                format_bytes(c.reserved_bytes),
                                c.reserved_bytes,
                                format_bytes(sum),
                                sum
                            ),
                        ));
                    }
                }
            }
            for (n, k, bytes) in warm {
                let r = &mut fleet.nodes[n].reserved[k];
                *r = r.saturating_sub(bytes);
            }
        }
        Ok(fleet)
    }

    /// The fleet as one snapshot per host (capacity taken as the limit; VM pids are their
    /// indices), e.g. to write synthetic fleets as `numapin status --json` files.
    /// `Fleet::from_snapshots(&f.snapshots())` gives back `f`.
    pub fn snapshots(&self) -> Vec<Snapshot> {
        use crate::snapshot::{ClassSnapshot, NodeSnapshot, VmReservation, VmSnapshot};
        let mut out: Vec<Snapshot> = self
            .hosts
            .iter()
            .map(|h| Snapshot {
                host: h.name.clone(),
                host_id: h.host_id.clone(),
                nodes: h
                    .nodes()
                    .map(|n| NodeSnapshot {
                        id: self.nodes[n].id,
                        classes: (0..self.classes.len())
                            .filter(|&c| self.nodes[n].limit[c] > 0)
                            .map(|c| ClassSnapshot {
                                page_size_bytes: self.classes[c],
                                capacity_bytes: self.nodes[n].limit[c],
                                limit_bytes: self.nodes[n].limit[c],
                                reserved_bytes: self.nodes[n].reserved[c],
                                available_bytes: self.nodes[n].limit[c] - self.nodes[n].reserved[c],
                            })
                            .collect(),
                    })
                    .collect(),
                vms: Vec::new(),
            })
            .collect();
        for (i, vm) in self.vms.iter().enumerate() {
            out[vm.host].vms.push(VmSnapshot {
                name: vm.name.clone(),
                pid: u32::try_from(i).unwrap_or(u32::MAX),
                reservations: vm
                    .charges
                    .iter()
                    .map(|&(n, c, bytes)| VmReservation {
                        node: self.nodes[n].id,
                        page_size_bytes: self.classes[c],
                        bytes,
                    })
                    .collect(),
                guest_used_peak_bytes: vm.guest_used_peak,
                single_node: Some(vm.single_node),
                ..VmSnapshot::default()
            });
        }
        out
    }

    /// Free bytes of class `c` on node `n` (whole pages).
    pub fn free(&self, n: usize, c: usize) -> u64 {
        self.nodes[n].free(c, self.classes[c])
    }

    /// The index of the class with page size `page_size_bytes`, if the fleet has it.
    pub fn class_index(&self, page_size_bytes: u64) -> Option<usize> {
        self.classes.binary_search(&page_size_bytes).ok()
    }

    /// Adds a VM, charging `target` (a node for a single-node VM, any node of the host
    /// otherwise, spread greedily over the host's nodes). Returns its index, or `None` (and
    /// changes nothing) when it does not fit there.
    pub fn admit(&mut self, name: &str, demand: &[u64], target: Target) -> Option<usize> {
        let nc = self.classes.len();
        if demand.len() != nc {
            return None;
        }
        let mut charges = Vec::new();
        let (host, single) = match target {
            Target::Node(n) => {
                if n >= self.nodes.len() || (0..nc).any(|c| self.free(n, c) < demand[c]) {
                    return None;
                }
                for (c, &d) in demand.iter().enumerate() {
                    if d > 0 {
                        charges.push((n, c, d));
                    }
                }
                (self.nodes[n].host, true)
            }
            Target::Host(h) => {
                let hn = self.hosts.get(h)?.nodes();
                for (c, &d) in demand.iter().enumerate() {
                    let total = sat_sum(hn.clone().map(|n| self.free(n, c)));
                    if total < d {
                        return None;
                    }
                    let mut left = d;
                    for n in hn.clone() {
                        let take = left.min(self.free(n, c));
                        if take > 0 {
                            charges.push((n, c, take));
                            left -= take;
                        }
                    }
                }
                (h, false)
            }
        };
        for &(n, c, b) in &charges {
            self.nodes[n].reserved[c] += b;
        }
        self.vms.push(Vm {
            name: name.to_string(),
            host,
            demand: demand.to_vec(),
            single_node: single,
            charges,
            guest_used_peak: 0,
        });
        Some(self.vms.len() - 1)
    }

    /// Removes VM `v` and refunds its charges (the last VM takes its index).
    pub fn release(&mut self, v: usize) {
        if v >= self.vms.len() {
            return;
        }
        let vm = self.vms.swap_remove(v);
        for (n, c, b) in vm.charges {
            self.nodes[n].reserved[c] = self.nodes[n].reserved[c].saturating_sub(b);
        }
    }
}

/// Where a VM goes: one node (single-node VMs) or one host (memory split over its nodes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum Target {
    /// A node index of [`Fleet::nodes`].
    Node(usize),
    /// A host index of [`Fleet::hosts`].
    Host(usize),
}

/// Sums without overflow (saturating at `u64::MAX`): snapshots are untrusted input.
pub fn sat_sum<I: IntoIterator<Item = u64>>(it: I) -> u64 {
    it.into_iter().fold(0u64, |a, b| a.saturating_add(b))
}
