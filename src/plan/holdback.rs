//! Failover hold-back: how much of each (host, node, class) must stay free so that N+k stays
//! guaranteed, and so what a scheduler may still hand out.
//!
//! The N+k check gives, for every scenario, a placement (witness) of the displaced VMs on the
//! survivors. A new VM admitted on host `H` can break a scenario in two ways, and the hold-back
//! covers both:
//!
//! 1. **`H` survives.** The scenario's witness puts `u_s(n, c)` bytes on node `n` of `H`. If
//!    every node keeps at least `survive(n, c) = max_s u_s(n, c)` free, every witness still
//!    fits: the new VM may take at most `free(n, c) - survive(n, c)`.
//! 2. **`H` fails.** The new VM is displaced too. For each such scenario the planner picks one
//!    surviving *spare node* `m_s`, the one with the most left over after the witness
//!    (`free - u_s`, each class weighed by its share of the fleet's free bytes); the new VM goes
//!    there, next to the witness. So the new VM may need at most
//!    `cap(H, c) = min over scenarios failing H of leftover_s(m_s, c)` of class `c`, in every
//!    class at once (one spare node per scenario, so a VM using several classes fits too).
//!
//! The published availability of node `n` of `H`, class `c`, is
//! `available = min(free - survive, cap(H, c))` in whole pages, and the hold-back is
//! `free - available`. Promise (tested against the exact search in `tests/plan_props.rs`): from
//! a fleet whose N+k is guaranteed, admitting **one** VM
//! - on one node, taking at most `available` of every class there, or
//! - spread over one host's nodes, at most `available` on each and at most
//!   [`HostCap::failover_cap_bytes`] of each class in total,
//!
//! keeps N+k guaranteed. After an admission the hold-back must be computed again (publish it
//! with each snapshot). When N+k is not guaranteed now (impossible, not proven, or scenarios
//! not evaluated), nothing can be promised: everything is held back (`available = 0`).

use super::failover::{for_each_scenario_spread, Budget, ScenarioOutcome, Verdict, SPREAD_HOSTS};
use super::Fleet;
use crate::units::NodeId;

/// The hold-back of a fleet, per (host, node, class) and per (host, class).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Holdback {
    /// Hosts failing together.
    pub k: usize,
    /// The N+k verdict the hold-back rests on (anything but guaranteed holds back everything).
    pub verdict: Option<Verdict>,
    /// One entry per node and class the node offers (limit > 0).
    pub nodes: Vec<NodeHoldback>,
    /// One entry per host and class: the most of the class a VM admitted there may use in
    /// total.
    pub hosts: Vec<HostCap>,
}

/// The hold-back of one (host, node, class).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeHoldback {
    /// The host.
    pub host: String,
    /// The host's identity (its snapshot's `host_id`).
    pub host_id: String,
    /// The node.
    pub node: NodeId,
    /// The class.
    pub page_size_bytes: u64,
    /// Free now (limit - reserved, whole pages).
    pub free_bytes: u64,
    /// What must stay free for N+k: `free - available`.
    pub holdback_bytes: u64,
    /// What a new VM may take here while N+k stays guaranteed.
    pub available_bytes: u64,
}

/// The failover cap of one (host, class).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostCap {
    /// The host.
    pub host: String,
    /// The class.
    pub page_size_bytes: u64,
    /// The most of this class one new VM on this host may use, all its nodes together.
    pub failover_cap_bytes: u64,
}

impl Holdback {
    /// The entry of `(host, node, page_size_bytes)`, if any.
    pub fn node(&self, host: &str, node: NodeId, page_size_bytes: u64) -> Option<&NodeHoldback> {
        self.nodes
            .iter()
            .find(|e| e.host == host && e.node == node && e.page_size_bytes == page_size_bytes)
    }
}

/// Computes the hold-back of `fleet` for N+`k` (see the module docs).
pub fn holdback(fleet: &Fleet, k: usize, budget: &Budget) -> Holdback {
    let (avail, cap, k, verdict) = holdback_indexed(fleet, k, budget);
    let nc = fleet.classes.len();
    let mut out = Holdback {
        k,
        verdict: Some(verdict),
        ..Holdback::default()
    };
    for (n, node) in fleet.nodes.iter().enumerate() {
        for c in 0..nc {
            if node.limit[c] == 0 {
                continue;
            }
            let free = fleet.free(n, c);
            out.nodes.push(NodeHoldback {
                host: fleet.hosts[node.host].name.clone(),
                host_id: fleet.hosts[node.host].host_id.clone(),
                node: node.id,
                page_size_bytes: fleet.classes[c],
                free_bytes: free,
                holdback_bytes: free - avail[n * nc + c],
                available_bytes: avail[n * nc + c],
            });
        }
    }
    for (h, host) in fleet.hosts.iter().enumerate() {
        for c in 0..nc {
            if host.nodes().all(|n| fleet.nodes[n].limit[c] == 0) {
                continue;
            }
            out.hosts.push(HostCap {
                host: host.name.clone(),
                page_size_bytes: fleet.classes[c],
                failover_cap_bytes: cap[h * nc + c],
            });
        }
    }
    out
}

/// The hold-back by fleet index: `(available per node * classes + class, cap per host *
/// classes + class, k, verdict)`.
pub fn holdback_indexed(
    fleet: &Fleet,
    k: usize,
    budget: &Budget,
) -> (Vec<u64>, Vec<u64>, usize, Verdict) {
    let nc = fleet.classes.len();
    let nn = fleet.nodes.len();
    let nh = fleet.hosts.len();
    let free: Vec<u64> = (0..nn * nc).map(|i| fleet.free(i / nc, i % nc)).collect();
    // Weigh classes by their share of the fleet's free bytes to rank spare nodes.
    let total: Vec<f64> = (0..nc)
        .map(|c| {
            (0..nn)
                .map(|n| free[n * nc + c] as f64)
                .sum::<f64>()
                .max(1.0)
        })
        .collect();
    let score = |n: usize, used: &[u64]| -> f64 {
        (0..nc)
            .map(|c| free[n * nc + c].saturating_sub(used[n * nc + c]) as f64 / total[c])
            .sum()
    };
    let zero = vec![0u64; nn * nc];
    let mut order: Vec<usize> = (0..nn).collect();
    order.sort_by(|&a, &b| score(b, &zero).total_cmp(&score(a, &zero)).then(a.cmp(&b)));

    let mut survive = vec![0u64; nn * nc];
    let mut cap = vec![u64::MAX; nh * nc];
    let mut used = vec![0u64; nn * nc];
    let mut touched: Vec<usize> = Vec::new();
    let mut failed_host = vec![false; nh];
    let mut broken = false;
    let (k, _, verdict) =
        for_each_scenario_spread(fleet, k, budget, u64::MAX, SPREAD_HOSTS, |sc| {
            let ScenarioOutcome::Guaranteed { witness, .. } = &sc.outcome else {
                broken = true;
                return;
            };
            for m in witness {
                for p in &m.parts {
                    let i = p.node * nc + p.class;
                    if used[i] == 0 && p.bytes > 0 {
                        touched.push(i);
                    }
                    used[i] = used[i].saturating_add(p.bytes);
                }
            }
            for &i in &touched {
                survive[i] = survive[i].max(used[i]);
            }
            for &h in &sc.failed {
                failed_host[h] = true;
            }
            // The spare node: the best untouched survivor by static rank, or a touched one.
            let is_touched = |n: usize| (0..nc).any(|c| used[n * nc + c] > 0);
            let mut best: Option<(f64, usize)> = order
                .iter()
                .copied()
                .find(|&n| !failed_host[fleet.nodes[n].host] && !is_touched(n))
                .map(|n| (score(n, &used), n));
            for &i in &touched {
                let n = i / nc;
                let s = score(n, &used);
                if best.is_none_or(|(b, bn)| s > b || (s == b && n < bn)) {
                    best = Some((s, n));
                }
            }
            for &h in &sc.failed {
                for c in 0..nc {
                    let left = best.map_or(0, |(_, m)| {
                        free[m * nc + c].saturating_sub(used[m * nc + c])
                    });
                    let slot = &mut cap[h * nc + c];
                    *slot = (*slot).min(left);
                }
            }
            for &h in &sc.failed {
                failed_host[h] = false;
            }
            for &i in &touched {
                used[i] = 0;
            }
            touched.clear();
        });
    let mut avail = vec![0u64; nn * nc];
    if verdict == Verdict::Guaranteed && !broken {
        for n in 0..nn {
            let h = fleet.nodes[n].host;
            for c in 0..nc {
                let i = n * nc + c;
                let a = free[i].saturating_sub(survive[i]).min(cap[h * nc + c]);
                let page = fleet.classes[c].max(1);
                avail[i] = a - a % page;
            }
        }
    } else {
        cap.iter_mut().for_each(|x| *x = 0);
    }
    (avail, cap, k, verdict)
}
