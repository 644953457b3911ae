//! Placement policies for a new VM: first-fit, best-fit, spread, and market pricing.
//!
//! The market policy follows the economic model of VMTurbo: every (node, class) sells memory
//! at a price that is a convex function of its utilisation `u = reserved / limit`,
//! `p(u) = 1 / (1 - u)^2`, which rises steeply as `u` approaches the limit (the unsafe
//! region). Buying `d` bytes costs the integral of the price over the utilisation it spans,
//! `limit * (1 / (1 - u1) - 1 / (1 - u0))`; the VM buys the cheapest fit. A host sells a
//! multi-node VM its classes at the host's aggregate utilisation.

use super::failover::{recheck, Budget, FailoverReport, Verdict};
use super::{sat_sum, Fleet, Target};

/// A placement policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Policy {
    /// The first node (host) in fleet order that fits.
    FirstFit,
    /// The fit that leaves the least free (packs tightly).
    BestFit,
    /// The fit that leaves the most free (spreads load).
    Spread,
    /// The cheapest fit under convex utilisation pricing.
    Market,
}

impl Policy {
    /// All policies.
    pub const ALL: [Policy; 4] = [
        Policy::FirstFit,
        Policy::BestFit,
        Policy::Spread,
        Policy::Market,
    ];

    /// The policy's name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::FirstFit => "first-fit",
            Policy::BestFit => "best-fit",
            Policy::Spread => "spread",
            Policy::Market => "market",
        }
    }
}

/// The market price of buying `d` bytes where `limit` is allowed and `used` is taken:
/// `limit * (1/(1-u1) - 1/(1-u0))`; infinite when it would reach the limit.
pub fn price(limit: u64, used: u64, d: u64) -> f64 {
    if d == 0 {
        return 0.0;
    }
    let after = used.saturating_add(d);
    if limit == 0 || after >= limit {
        return f64::INFINITY;
    }
    let l = limit as f64;
    let u0 = used as f64 / l;
    let u1 = after as f64 / l;
    l * (1.0 / (1.0 - u1) - 1.0 / (1.0 - u0))
}

/// Where `policy` would put a VM needing `demand` (per class index) now, or `None` when it
/// fits nowhere. Single-node VMs get a node, others a host.
pub fn choose(fleet: &Fleet, demand: &[u64], single_node: bool, policy: Policy) -> Option<Target> {
    let nc = fleet.classes.len();
    if demand.len() != nc {
        return None;
    }
    // (target, free per class, limit per class, used per class)
    let cands: Vec<(Target, Vec<u64>, Vec<u64>)> = if single_node {
        (0..fleet.nodes.len())
            .map(|n| {
                (
                    Target::Node(n),
                    (0..nc).map(|c| fleet.free(n, c)).collect(),
                    fleet.nodes[n].limit.clone(),
                )
            })
            .collect()
    } else {
        (0..fleet.hosts.len())
            .map(|h| {
                let ns = fleet.hosts[h].nodes();
                (
                    Target::Host(h),
                    (0..nc)
                        .map(|c| sat_sum(ns.clone().map(|n| fleet.free(n, c))))
                        .collect(),
                    (0..nc)
                        .map(|c| sat_sum(ns.clone().map(|n| fleet.nodes[n].limit[c])))
                        .collect(),
                )
            })
            .collect()
    };
    let total = sat_sum(demand.iter().copied());
    let mut best: Option<(Target, f64)> = None;
    for (t, free, limit) in cands {
        if (0..nc).any(|c| free[c] < demand[c]) {
            continue;
        }
        let left = sat_sum(free.iter().copied()).saturating_sub(total);
        let score = match policy {
            Policy::FirstFit => return Some(t),
            Policy::BestFit => left as f64,
            Policy::Spread => -(left as f64),
            Policy::Market => (0..nc)
                .map(|c| price(limit[c], limit[c] - free[c].min(limit[c]), demand[c]))
                .sum(),
        };
        if best.is_none_or(|(_, s)| score < s) {
            best = Some((t, score));
        }
    }
    best.map(|(t, _)| t)
}

/// The N+k verdict after admitting a new VM of `demand` at `target`, given `base`, the report
/// of `fleet` as it is (reuses `base`'s witnesses where the change cannot affect them). A
/// target where the VM does not fit answers the verdict of the unchanged fleet.
pub fn verdict_after(
    fleet: &Fleet,
    base: &FailoverReport,
    demand: &[u64],
    target: Target,
    budget: &Budget,
) -> Verdict {
    let mut g = fleet.clone();
    let host = match target {
        Target::Node(n) => fleet.nodes[n].host,
        Target::Host(h) => h,
    };
    g.admit("new", demand, target);
    recheck(&g, base, host, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Host, Node};
    use crate::units::NodeId;

    fn two_nodes(used: [u64; 2]) -> Fleet {
        let g = 1u64 << 30;
        let mut f = Fleet {
            classes: vec![2 << 20],
            hosts: vec![Host {
                name: "a".into(),
                host_id: String::new(),
                first_node: 0,
                node_count: 2,
            }],
            nodes: (0..2)
                .map(|i| Node {
                    host: 0,
                    id: NodeId(i),
                    limit: vec![16 * g],
                    reserved: vec![0],
                })
                .collect(),
            vms: vec![],
        };
        for (n, u) in used.iter().enumerate() {
            if *u > 0 {
                f.admit("x", &[u * g], Target::Node(n)).unwrap();
            }
        }
        f
    }

    #[test]
    fn policies_pick_as_named() {
        let g = 1u64 << 30;
        let f = two_nodes([4, 10]);
        let d = [2 * g];
        assert_eq!(
            choose(&f, &d, true, Policy::FirstFit),
            Some(Target::Node(0))
        );
        assert_eq!(choose(&f, &d, true, Policy::BestFit), Some(Target::Node(1)));
        assert_eq!(choose(&f, &d, true, Policy::Spread), Some(Target::Node(0)));
        assert_eq!(choose(&f, &d, true, Policy::Market), Some(Target::Node(0)));
        assert_eq!(choose(&f, &[13 * g], true, Policy::Market), None);
        assert_eq!(
            choose(&f, &[13 * g], false, Policy::FirstFit),
            Some(Target::Host(0))
        );
    }

    #[test]
    fn price_is_convex_and_diverges() {
        let a = price(100, 0, 10);
        let b = price(100, 50, 10);
        let c = price(100, 85, 10);
        assert!(a < b && b < c, "{a} {b} {c}");
        assert!(c - b > b - a);
        assert!(price(100, 95, 5).is_infinite());
    }
}
