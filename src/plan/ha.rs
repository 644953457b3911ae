//! VMware HA's admission policies on the same input, compared with the exact answer.
//!
//! vSphere HA reasons about one memory pool per host; it knows nothing of NUMA nodes,
//! page-size classes or VMs that must stay on one node.
//!
//! - **Slot policy**: the slot is the largest VM's reservation; a host holds
//!   `floor(limit / slot)` slots; the cluster tolerates `k` failures when the VMs (one slot
//!   each) fit in the slots left after removing the `k` hosts with the most slots.
//! - **Percentage policy**: reserve `pct` of the cluster's memory (vSphere 6.5+ derives it as
//!   `k / hosts`); the cluster is protected while the reserved memory stays within the rest.
//!
//! Against the exact N+k answer of [`failover::check`](super::failover::check) each is
//! *too strict* where it refuses a fleet that is guaranteed, and *too lax* where it accepts a
//! fleet that is impossible.

use super::failover::{check, Budget, Verdict};
use super::{sat_sum, Fleet};
use crate::units::format_bytes;

/// How an HA policy's answer relates to the exact one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Agreement {
    /// Same answer.
    Agrees,
    /// Refuses a fleet whose failover is guaranteed.
    TooStrict,
    /// Accepts a fleet whose failover is impossible.
    TooLax,
    /// The exact answer is not proven, so neither is the comparison.
    Unknown,
}

/// One HA policy's answer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HaAnswer {
    /// Whether the policy considers `k` host failures covered.
    pub protected: bool,
    /// Its comparison with the exact answer.
    pub agreement: Agreement,
    /// Its arithmetic, in one line.
    pub detail: String,
}

/// Both HA policies and the exact answer.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HaComparison {
    /// Hosts failing together.
    pub k: usize,
    /// The exact verdict.
    pub exact: Verdict,
    /// The slot policy.
    pub slot: HaAnswer,
    /// The percentage policy.
    pub percentage: HaAnswer,
}

fn agreement(protected: bool, exact: Verdict) -> Agreement {
    match (protected, exact) {
        (_, Verdict::NotProven) => Agreement::Unknown,
        (true, Verdict::Guaranteed) | (false, Verdict::Impossible) => Agreement::Agrees,
        (false, Verdict::Guaranteed) => Agreement::TooStrict,
        (true, Verdict::Impossible) => Agreement::TooLax,
    }
}

/// Per host: (limit, reserved) over all nodes and classes.
fn host_totals(fleet: &Fleet) -> Vec<(u64, u64)> {
    fleet
        .hosts
        .iter()
        .map(|h| {
            h.nodes().fold((0u64, 0u64), |(l, r), n| {
                let node = &fleet.nodes[n];
                (
                    l.saturating_add(sat_sum(node.limit.iter().copied())),
                    r.saturating_add(sat_sum(node.reserved.iter().copied())),
                )
            })
        })
        .collect()
}

/// The slot policy: `(protected, detail)`.
pub fn slot_policy(fleet: &Fleet, k: usize) -> (bool, String) {
    let slot = fleet.vms.iter().map(|v| v.total()).max().unwrap_or(0);
    if slot == 0 {
        return (true, "no VMs: nothing to protect".into());
    }
    let mut slots: Vec<u64> = host_totals(fleet).iter().map(|t| t.0 / slot).collect();
    slots.sort_unstable_by(|a, b| b.cmp(a));
    let total = sat_sum(slots.iter().copied());
    let lost = sat_sum(slots.iter().take(k).copied());
    let vms = fleet.vms.len() as u64;
    (
        vms <= total.saturating_sub(lost),
        format!(
            "slot {}: {total} slots, {lost} on the {k} largest host(s), {vms} VMs need one each",
            format_bytes(slot)
        ),
    )
}

/// The percentage policy with `pct` reserved (`k / hosts` when `None`): `(protected, detail)`.
pub fn percentage_policy(fleet: &Fleet, k: usize, pct: Option<f64>) -> (bool, String) {
    let t = host_totals(fleet);
    let n = t.len().max(1);
    let pct = pct.unwrap_or(k as f64 / n as f64).clamp(0.0, 1.0);
    let limit = sat_sum(t.iter().map(|x| x.0));
    let reserved = sat_sum(t.iter().map(|x| x.1));
    let allowed = (limit as f64 * (1.0 - pct)).floor() as u64;
    (
        reserved <= allowed,
        format!(
            "reserve {:.1}% of {}: {} reserved, {} allowed",
            pct * 100.0,
            format_bytes(limit),
            format_bytes(reserved),
            format_bytes(allowed)
        ),
    )
}

/// Compares both HA policies with the exact N+`k` answer.
pub fn compare(fleet: &Fleet, k: usize, budget: &Budget) -> HaComparison {
    let exact = check(fleet, k, budget).verdict;
    let (sp, sd) = slot_policy(fleet, k);
    let (pp, pd) = percentage_policy(fleet, k, None);
    HaComparison {
        k,
        exact,
        slot: HaAnswer {
            protected: sp,
            agreement: agreement(sp, exact),
            detail: sd,
        },
        percentage: HaAnswer {
            protected: pp,
            agreement: agreement(pp, exact),
            detail: pd,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Host, Node, Target};
    use crate::units::NodeId;

    /// Hosts of `nodes` nodes each with `pages` 2M pages per node.
    fn fleet(hosts: usize, nodes: usize, pages: u64) -> Fleet {
        let m = 2u64 << 20;
        let mut f = Fleet {
            classes: vec![m],
            ..Fleet::default()
        };
        for h in 0..hosts {
            f.hosts.push(Host {
                name: format!("h{h}"),
                host_id: String::new(),
                first_node: h * nodes,
                node_count: nodes,
            });
            for i in 0..nodes {
                f.nodes.push(Node {
                    host: h,
                    id: NodeId(i as u32),
                    limit: vec![pages * m],
                    reserved: vec![0],
                });
            }
        }
        f
    }

    #[test]
    fn slot_policy_too_strict_with_one_big_vm() {
        // Three hosts of 16 pages; one 10-page VM and eight 1-page VMs. Slot = 10 pages:
        // 1 slot per host, 2 after a failure, 9 VMs: refused. Exactly it is guaranteed.
        let m = 2u64 << 20;
        let mut f = fleet(3, 1, 16);
        f.admit("big", &[10 * m], Target::Node(0)).unwrap();
        for i in 0..8 {
            f.admit(&format!("s{i}"), &[m], Target::Node(1 + i % 2))
                .unwrap();
        }
        let c = compare(&f, 1, &Budget::default());
        assert_eq!(c.exact, Verdict::Guaranteed);
        assert_eq!(c.slot.agreement, Agreement::TooStrict, "{c:?}");
    }

    #[test]
    fn slot_policy_too_lax_with_numa() {
        // Host a: two 8-page nodes, a 6-page single-node VM. Host b: nodes of 8 and 5 pages,
        // a 4-page VM on node 0. Slot = 6 pages: 2 slots on a (16 pages), 2 on b (13); after
        // losing a, 2 slots for 2 VMs: protected. Exactly: the 6-page VM needs one node with
        // 6 free, b has 4 and 5.
        let m = 2u64 << 20;
        let mut f = fleet(2, 2, 8);
        f.nodes[3].limit[0] = 5 * m;
        f.admit("a", &[6 * m], Target::Node(0)).unwrap();
        f.admit("b", &[4 * m], Target::Node(2)).unwrap();
        let c = compare(&f, 1, &Budget::default());
        assert_eq!(c.exact, Verdict::Impossible);
        assert!(c.slot.protected, "{c:?}");
        assert_eq!(c.slot.agreement, Agreement::TooLax);
    }

    #[test]
    fn percentage_policy_too_lax_with_numa() {
        // Two hosts of two 8-page nodes: a 6-page single-node VM on host 0, 4-page VMs on
        // both nodes of host 1. Percentage (50% for N+1 of 2 hosts): 14 of 32 pages reserved,
        // 16 allowed: protected.
        let m = 2u64 << 20;
        let mut f = fleet(2, 2, 8);
        f.admit("a", &[6 * m], Target::Node(0)).unwrap();
        f.admit("b", &[4 * m], Target::Node(2)).unwrap();
        f.admit("c", &[4 * m], Target::Node(3)).unwrap();
        // Host 1 has 4 + 4 free; VM a (6, single-node) fits on no node of it.
        let c = compare(&f, 1, &Budget::default());
        assert_eq!(c.exact, Verdict::Impossible);
        assert!(c.percentage.protected, "{c:?}");
        assert_eq!(c.percentage.agreement, Agreement::TooLax);
    }
}
