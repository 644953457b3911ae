//! Simulation: the placement policies over one stream of arrivals and departures.
//!
//! Every policy sees the same stream (same seed): VMs arrive with a size drawn from the
//! workload's mix, stay for a random number of events, and leave. At regular sample points
//! the simulation records, per policy:
//! - **rejections**: arrivals that fit nowhere;
//! - **fragmentation**: the share of free memory stranded on nodes too small for the largest
//!   VM size of the mix (`1 - usable / free`);
//! - **N+1 safety**: the share of samples at which [`failover::check`](super::failover::check)
//!   with `k = 1` is `Guaranteed`;
//! - **utilisation**: reserved / limit, averaged over samples;
//! - how often VMware HA's slot and percentage policies (see [`ha`](super::ha)) were too
//!   strict or too lax against the exact N+1 answer at the same samples.

use super::failover::{check, Budget, Verdict};
use super::ha::{percentage_policy, slot_policy};
use super::policy::{choose, Policy};
use super::{Fleet, Host, Node, Target};
use crate::units::NodeId;

/// A deterministic generator (SplitMix64), so every policy sees the same stream.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (0 when `n == 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next_u64() % n
        }
    }
}

/// What the simulation runs.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    /// A name for reports.
    pub name: String,
    /// Hosts.
    pub hosts: usize,
    /// NUMA nodes per host.
    pub nodes_per_host: usize,
    /// Limit per node, bytes (one 2 MiB class).
    pub node_bytes: u64,
    /// Limit per node on odd-numbered hosts (equal to `node_bytes` for a uniform fleet).
    pub node_bytes_odd: u64,
    /// VM sizes in bytes with their weights.
    pub mix: Vec<(u64, u32)>,
    /// Share of VMs that must sit on one node (0..=1).
    pub single_node_share: f64,
    /// Target utilisation: arrivals outnumber departures below it, and the opposite above.
    pub target_load: f64,
    /// Events (arrivals and departures).
    pub events: usize,
    /// Sample every this many events.
    pub sample_every: usize,
    /// The seed.
    pub seed: u64,
}

/// Per policy results.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PolicyResult {
    /// The policy.
    pub policy: Policy,
    /// Arrivals.
    pub arrivals: u64,
    /// Arrivals that fit nowhere.
    pub rejections: u64,
    /// Mean fragmentation over samples (0..=1).
    pub fragmentation: f64,
    /// Share of samples where N+1 was guaranteed.
    pub n1_safe: f64,
    /// Share of samples where N+1 was not proven either way.
    pub n1_unknown: f64,
    /// Mean utilisation over samples.
    pub utilisation: f64,
    /// Share of samples where VMware HA's slot policy refused a guaranteed fleet.
    pub slot_too_strict: f64,
    /// Share of samples where the slot policy accepted an impossible fleet.
    pub slot_too_lax: f64,
    /// Share of samples where the percentage policy refused a guaranteed fleet.
    pub pct_too_strict: f64,
    /// Share of samples where the percentage policy accepted an impossible fleet.
    pub pct_too_lax: f64,
}

fn fleet_of(w: &Workload) -> Fleet {
    let mut f = Fleet {
        classes: vec![2 << 20],
        ..Fleet::default()
    };
    for h in 0..w.hosts {
        f.hosts.push(Host {
            name: format!("h{h}"),
            host_id: String::new(),
            first_node: h * w.nodes_per_host,
            node_count: w.nodes_per_host,
        });
        for i in 0..w.nodes_per_host {
            f.nodes.push(Node {
                host: h,
                id: NodeId(i as u32),
                limit: vec![if h % 2 == 1 {
                    w.node_bytes_odd
                } else {
                    w.node_bytes
                }],
                reserved: vec![0],
            });
        }
    }
    f
}

/// Runs `policy` over the workload's stream.
pub fn run(w: &Workload, policy: Policy, budget: &Budget) -> PolicyResult {
    let mut f = fleet_of(w);
    let mut rng = Rng::new(w.seed);
    let limit: u64 = f.nodes.iter().map(|n| n.limit[0]).sum();
    let weights: u64 = w.mix.iter().map(|m| u64::from(m.1)).sum();
    let largest = w.mix.iter().map(|m| m.0).max().unwrap_or(0);
    let mut r = PolicyResult {
        policy,
        arrivals: 0,
        rejections: 0,
        fragmentation: 0.0,
        n1_safe: 0.0,
        n1_unknown: 0.0,
        utilisation: 0.0,
        slot_too_strict: 0.0,
        slot_too_lax: 0.0,
        pct_too_strict: 0.0,
        pct_too_lax: 0.0,
    };
    let mut samples = 0u64;
    for e in 0..w.events {
        // The stream's randomness is drawn the same way whatever the policy did.
        let coin = rng.below(1_000_000) as f64 / 1_000_000.0;
        let pick = rng.below(weights.max(1));
        let single = (rng.below(1_000_000) as f64 / 1_000_000.0) < w.single_node_share;
        let leave = rng.next_u64();
        let reserved: u64 = f.nodes.iter().map(|n| n.reserved[0]).sum();
        let load = reserved as f64 / limit.max(1) as f64;
        // Arrive with probability 0.5 + (target - load), clamped.
        let p_arrive = (0.5 + (w.target_load - load) * 2.0).clamp(0.05, 0.95);
        if coin < p_arrive || f.vms.is_empty() {
            let mut acc = 0u64;
            let size = w
                .mix
                .iter()
                .find(|m| {
                    acc += u64::from(m.1);
                    pick < acc
                })
                .map_or(largest, |m| m.0);
            r.arrivals += 1;
            match choose(&f, &[size], single, policy) {
                Some(t) => {
                    f.admit(&format!("vm{e}"), &[size], t);
                }
                None => r.rejections += 1,
            }
        } else {
            let v = (leave % f.vms.len() as u64) as usize;
            f.release(v);
        }
        if (e + 1) % w.sample_every.max(1) == 0 {
            samples += 1;
            let free: u64 = (0..f.nodes.len()).map(|n| f.free(n, 0)).sum();
            let usable: u64 = (0..f.nodes.len())
                .map(|n| {
                    let x = f.free(n, 0);
                    x.checked_div(largest).map_or(x, |q| q * largest)
                })
                .sum();
            if free > 0 {
                r.fragmentation += 1.0 - usable as f64 / free as f64;
            }
            let reserved = limit - free.min(limit);
            r.utilisation += reserved as f64 / limit.max(1) as f64;
            let exact = check(&f, 1, budget).verdict;
            match exact {
                Verdict::Guaranteed => r.n1_safe += 1.0,
                Verdict::NotProven => r.n1_unknown += 1.0,
                Verdict::Impossible => {}
            }
            let slot = slot_policy(&f, 1).0;
            let pct = percentage_policy(&f, 1, None).0;
            let strict = |p: bool| f64::from(u8::from(!p && exact == Verdict::Guaranteed));
            let lax = |p: bool| f64::from(u8::from(p && exact == Verdict::Impossible));
            r.slot_too_strict += strict(slot);
            r.slot_too_lax += lax(slot);
            r.pct_too_strict += strict(pct);
            r.pct_too_lax += lax(pct);
        }
    }
    let s = samples.max(1) as f64;
    r.fragmentation /= s;
    r.n1_safe /= s;
    r.n1_unknown /= s;
    r.utilisation /= s;
    r.slot_too_strict /= s;
    r.slot_too_lax /= s;
    r.pct_too_strict /= s;
    r.pct_too_lax /= s;
    r
}

/// Runs every policy over the workload.
pub fn compare(w: &Workload, budget: &Budget) -> Vec<PolicyResult> {
    Policy::ALL.iter().map(|&p| run(w, p, budget)).collect()
}

/// The workloads the documentation reports: small VMs (1–4 GiB, half single-node) and a mix
/// with large single-node VMs (2–32 GiB, 80% single-node), on 8 hosts of two 64 GiB nodes
/// (`-het`: every other host has two 128 GiB nodes), at a moderate and a high load.
pub fn standard_workloads(events: usize) -> Vec<Workload> {
    let g = 1u64 << 30;
    let mut out = Vec::new();
    let small = vec![(g, 4), (2 * g, 4), (4 * g, 2)];
    let mixed = vec![(2 * g, 6), (4 * g, 3), (16 * g, 2), (32 * g, 1)];
    for (name, mix, single, odd, loads) in [
        ("small", small.clone(), 0.5, 64 * g, &[0.6, 0.85][..]),
        ("mixed", mixed.clone(), 0.8, 64 * g, &[0.6, 0.85][..]),
        ("small-het", small, 0.5, 128 * g, &[0.85][..]),
        ("mixed-het", mixed, 0.8, 128 * g, &[0.6, 0.85][..]),
    ] {
        for &load in loads {
            out.push(Workload {
                name: format!("{name} @{:.0}%", load * 100.0),
                hosts: 8,
                nodes_per_host: 2,
                node_bytes: 64 * g,
                node_bytes_odd: odd,
                mix: mix.clone(),
                single_node_share: single,
                target_load: load,
                events,
                sample_every: 50,
                seed: 7,
            });
        }
    }
    out
}

/// A synthetic fleet for scale measurements: `hosts` hosts of two nodes, each node offering
/// 32 GiB of base pages, 192 GiB of 2 MiB pages and 64 GiB of 1 GiB pages, with
/// `vms_per_host` VMs per host (2–8 GiB of 2M pages on one node for most, 16 GiB of 1G
/// pages for one in ten, 8 GiB of 2M pages spread over both nodes for one in ten, and a
/// 1 GiB base-page helper for one in twenty). About 45% of the limits are reserved.
pub fn synthetic_fleet(hosts: usize, vms_per_host: usize, seed: u64) -> Fleet {
    let g = 1u64 << 30;
    let (k4, m2, g1) = (4096u64, 2u64 << 20, 1u64 << 30);
    let mut f = Fleet {
        classes: vec![k4, m2, g1],
        ..Fleet::default()
    };
    for h in 0..hosts {
        f.hosts.push(Host {
            name: format!("host{h:05}"),
            host_id: String::new(),
            first_node: 2 * h,
            node_count: 2,
        });
        for i in 0..2 {
            f.nodes.push(Node {
                host: h,
                id: NodeId(i),
                limit: vec![32 * g, 192 * g, 64 * g],
                reserved: vec![0, 0, 0],
            });
        }
    }
    let mut rng = Rng::new(seed);
    for h in 0..hosts {
        for v in 0..vms_per_host {
            let kind = rng.below(20);
            let node = 2 * h + rng.below(2) as usize;
            let (demand, target) = match kind {
                0 => (vec![g, 0, 0], Target::Node(node)),
                1 | 2 => (vec![0, 0, 16 * g], Target::Node(node)),
                3 | 4 => (vec![0, 8 * g, 0], Target::Host(h)),
                _ => (vec![0, (2 + rng.below(7)) * g, 0], Target::Node(node)),
            };
            let name = format!("h{h}-vm{v}");
            if f.admit(&name, &demand, target).is_none() {
                let other = if let Target::Node(n) = target {
                    Target::Node(n ^ 1)
                } else {
                    target
                };
                f.admit(&name, &demand, other);
            }
        }
    }
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_stream_for_every_policy_and_sane_numbers() {
        let mut w = standard_workloads(400).remove(0);
        w.hosts = 4;
        let rs = compare(&w, &Budget::default());
        assert_eq!(rs.len(), 4);
        for r in &rs {
            // Arrivals only depend on the stream until a rejection changes the load.
            assert!(r.arrivals > 100, "{r:?}");
            assert!((0.0..=1.0).contains(&r.fragmentation));
            assert!((0.0..=1.0).contains(&r.n1_safe));
            assert!(r.utilisation > 0.2 && r.utilisation < 1.0, "{r:?}");
        }
    }
}
