//! Headroom: the largest VM of a class that can be admitted now while keeping N+k.
//!
//! For a size `s` (whole pages of the class), the VM is admissible when some node (for a
//! single-node VM) or host can take it now *and* the fleet with it still passes the N+k
//! check as [`Verdict::Guaranteed`]. The search tries candidate targets with the most free
//! first, and bisects over sizes. The answer is a *proven lower bound* (the reported size has
//! a target and a failover witness for every scenario) and a *proven upper bound* (no target
//! has more free of the class than that now). Admissibility is not monotone in the size in
//! every fleet, so a size between the bounds is not claimed either way.
//!
//! Each probe is checked with [`recheck`]: scenarios whose witness does not touch the probe's
//! host keep it, so a probe costs the scenarios that fail that host plus those that relied on
//! the capacity the probe took.

use super::failover::{check, recheck, Budget, Verdict};
use super::{sat_sum, Fleet, Target};

/// The headroom answer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Headroom {
    /// The class's page size.
    pub page_size_bytes: u64,
    /// Whether the VM must sit on one node.
    pub single_node: bool,
    /// Hosts failing together.
    pub k: usize,
    /// The largest size found admissible (0 when none is).
    pub admissible_bytes: u64,
    /// Where it goes.
    pub target: Option<Target>,
    /// No VM larger than this fits anywhere now.
    pub upper_bound_bytes: u64,
    /// N+k checks run.
    pub checks: u64,
}

/// Finds the largest VM of class `page_size_bytes` admissible while keeping N+`k`.
/// `candidates` bounds how many targets each size tries (most free first).
pub fn headroom(
    fleet: &Fleet,
    page_size_bytes: u64,
    single_node: bool,
    k: usize,
    candidates: usize,
    budget: &Budget,
) -> Headroom {
    let mut out = Headroom {
        page_size_bytes,
        single_node,
        k,
        admissible_bytes: 0,
        target: None,
        upper_bound_bytes: 0,
        checks: 0,
    };
    let Some(c) = fleet.class_index(page_size_bytes) else {
        return out;
    };
    let page = page_size_bytes.max(1);
    let nc = fleet.classes.len();
    let mut targets: Vec<(Target, u64)> = if single_node {
        (0..fleet.nodes.len())
            .map(|n| (Target::Node(n), fleet.free(n, c)))
            .collect()
    } else {
        (0..fleet.hosts.len())
            .map(|h| {
                let f = sat_sum(fleet.hosts[h].nodes().map(|n| fleet.free(n, c)));
                (Target::Host(h), f)
            })
            .collect()
    };
    targets.retain(|t| t.1 >= page);
    targets.sort_by_key(|t| std::cmp::Reverse(t.1));
    out.upper_bound_bytes = targets.first().map_or(0, |t| t.1);
    targets.truncate(candidates.max(1));
    // The fleet as it is, with every witness kept: each probe re-checks only the scenarios
    // its host touches (see `recheck`).
    let keep_all = Budget {
        keep_witnesses: u64::MAX,
        ..*budget
    };
    let base = check(fleet, k, &keep_all);
    out.checks += 1;
    if base.verdict == Verdict::Impossible {
        // Adding load never makes an impossible scenario possible: nothing is admissible.
        return out;
    }
    let mut g = fleet.clone();
    let mut admissible = |pages: u64, out: &mut Headroom| -> Option<Target> {
        let mut demand = vec![0u64; nc];
        demand[c] = pages * page;
        for &(t, f) in &targets {
            if f < demand[c] {
                continue;
            }
            let Some(v) = g.admit("headroom-probe", &demand, t) else {
                continue;
            };
            let host = g.vms[v].host;
            out.checks += 1;
            let verdict = recheck(&g, &base, host, budget);
            g.release(v);
            if verdict == Verdict::Guaranteed {
                return Some(t);
            }
        }
        None
    };
    // Bisect over whole pages: lo admissible (or 0), hi + 1 not found admissible.
    let (mut lo, mut hi) = (0u64, out.upper_bound_bytes / page);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if let Some(t) = admissible(mid, &mut out) {
            lo = mid;
            out.target = Some(t);
        } else {
            hi = mid - 1;
        }
    }
    out.admissible_bytes = lo * page;
    if lo == 0 {
        out.target = None;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Host, Node};
    use crate::units::NodeId;

    #[test]
    fn keeps_n_plus_one() {
        let m = 2u64 << 20;
        // Three hosts with 10 pages each; host 0 runs 4 pages.
        let mut f = Fleet {
            classes: vec![m],
            ..Fleet::default()
        };
        for h in 0..3 {
            f.hosts.push(Host {
                name: format!("h{h}"),
                host_id: String::new(),
                first_node: h,
                node_count: 1,
            });
            f.nodes.push(Node {
                host: h,
                id: NodeId(0),
                limit: vec![10 * m],
                reserved: vec![0],
            });
        }
        f.admit("a", &[4 * m], Target::Node(0)).unwrap();
        let h = headroom(&f, m, true, 1, 8, &Budget::default());
        // x = 10 pages on host 1: host 0 fails -> its 4 pages go to host 2; host 1 fails ->
        // x goes to host 2; host 2 fails -> nothing moves. No node has more than 10 free.
        assert_eq!(h.admissible_bytes, 10 * m, "{h:?}");
        assert_eq!(h.upper_bound_bytes, 10 * m);
        let mut g = f.clone();
        g.admit("x", &[10 * m], h.target.unwrap()).unwrap();
        assert_eq!(
            check(&g, 1, &Budget::default()).verdict,
            Verdict::Guaranteed
        );
    }
}
