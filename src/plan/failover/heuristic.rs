//! The shared scratch state of one check and the first-fit / best-fit decreasing heuristics.

use super::verify::verify_moves;
use super::{
    failed_hosts, Budget, Method, Move, Part, Proof, Scenario, ScenarioOutcome, Search,
    MAX_EXACT_ITEMS,
};
use crate::plan::{Fleet, Target};

/// Over how many hosts the hold-back's placements deal a failed host's VMs round-robin (the
/// N+k check itself packs them first-fit from the next host, which composes best).
pub const SPREAD_HOSTS: usize = 8;

/// Precomputed orders and scratch space shared by the scenarios of one check.
pub(super) struct Checker<'a> {
    pub(super) fleet: &'a Fleet,
    pub(super) nc: usize,
    /// Initial free per node and class (`n * nc + c`).
    pub(super) free0: Vec<u64>,
    /// Initial free per host and class, all nodes together.
    pub(super) slack0: Vec<u64>,
    pub(super) total0: Vec<u64>,
    /// Per class: nodes by decreasing initial free of that class (only those with some).
    pub(super) node_order: Vec<Vec<usize>>,
    /// Per class: hosts by decreasing initial free of that class (only those with some).
    pub(super) host_order: Vec<Vec<usize>>,
    pub(super) vms_of_host: Vec<Vec<usize>>,
    // Scratch.
    pub(super) free: Vec<u64>,
    pub(super) slack: Vec<u64>,
    pub(super) failed: Vec<bool>,
    pub(super) touched_nodes: Vec<usize>,
    pub(super) touched_hosts: Vec<usize>,
}

impl<'a> Checker<'a> {
    pub(super) fn new(fleet: &'a Fleet) -> Self {
        let nc = fleet.classes.len();
        let nn = fleet.nodes.len();
        let nh = fleet.hosts.len();
        let mut free0 = vec![0u64; nn * nc];
        let mut slack0 = vec![0u64; nh * nc];
        let mut total0 = vec![0u64; nc];
        for n in 0..nn {
            let h = fleet.nodes[n].host;
            for c in 0..nc {
                let f = fleet.free(n, c);
                free0[n * nc + c] = f;
                slack0[h * nc + c] = slack0[h * nc + c].saturating_add(f);
                total0[c] = total0[c].saturating_add(f);
            }
        }
        let node_order = (0..nc)
            .map(|c| {
                let mut v: Vec<usize> = (0..nn).filter(|&n| free0[n * nc + c] > 0).collect();
                v.sort_by(|&a, &b| free0[b * nc + c].cmp(&free0[a * nc + c]).then(a.cmp(&b)));
                v
            })
            .collect();
        let host_order = (0..nc)
            .map(|c| {
                let mut v: Vec<usize> = (0..nh).filter(|&h| slack0[h * nc + c] > 0).collect();
                v.sort_by(|&a, &b| slack0[b * nc + c].cmp(&slack0[a * nc + c]).then(a.cmp(&b)));
                v
            })
            .collect();
        let mut vms_of_host = vec![Vec::new(); nh];
        for (v, vm) in fleet.vms.iter().enumerate() {
            if vm.host < nh {
                vms_of_host[vm.host].push(v);
            }
        }
        Checker {
            fleet,
            nc,
            free: free0.clone(),
            slack: slack0.clone(),
            free0,
            slack0,
            total0,
            node_order,
            host_order,
            vms_of_host,
            failed: vec![false; nh],
            touched_nodes: Vec::new(),
            touched_hosts: Vec::new(),
        }
    }

    pub(super) fn dominant(&self, v: usize) -> Option<usize> {
        let d = &self.fleet.vms[v].demand;
        (0..self.nc).filter(|&c| d[c] > 0).max_by_key(|&c| d[c])
    }

    pub(super) fn reset(&mut self) {
        let nc = self.nc;
        for &n in &self.touched_nodes {
            self.free[n * nc..(n + 1) * nc].copy_from_slice(&self.free0[n * nc..(n + 1) * nc]);
        }
        for &h in &self.touched_hosts {
            self.slack[h * nc..(h + 1) * nc].copy_from_slice(&self.slack0[h * nc..(h + 1) * nc]);
        }
        self.touched_nodes.clear();
        self.touched_hosts.clear();
    }

    pub(super) fn scenario(&mut self, failed: &[usize], budget: &Budget) -> Scenario {
        let fleet = self.fleet;
        let failed = failed_hosts(fleet, failed);
        let mut displaced: Vec<usize> = failed
            .iter()
            .flat_map(|&h| self.vms_of_host[h].iter().copied())
            .collect();
        displaced.sort_unstable();
        let demand_bytes = displaced
            .iter()
            .fold(0u64, |a, &v| a.saturating_add(fleet.vms[v].total()));
        let mut outcome = self.solve(&failed, &displaced, budget);
        // Belt and braces: a witness that does not check out is not a guarantee.
        if let ScenarioOutcome::Guaranteed { witness, .. } = &outcome {
            if verify_moves(fleet, &failed, &displaced, witness).is_err() {
                outcome = ScenarioOutcome::NotProven { steps: 0 };
            }
        }
        Scenario {
            failed,
            displaced,
            demand_bytes,
            outcome,
            witness_kept: true,
        }
    }

    pub(super) fn solve(
        &mut self,
        failed: &[usize],
        displaced: &[usize],
        budget: &Budget,
    ) -> ScenarioOutcome {
        let fleet = self.fleet;
        let nc = self.nc;
        if displaced.is_empty() {
            return ScenarioOutcome::Guaranteed {
                method: Method::Heuristic,
                witness: Vec::new(),
            };
        }
        if failed.len() >= fleet.hosts.len() {
            return ScenarioOutcome::Impossible {
                proof: Proof::NoSurvivors,
            };
        }
        for &h in failed {
            self.failed[h] = true;
        }
        let mut items = displaced.to_vec();
        items.sort_by(|&a, &b| {
            fleet.vms[b]
                .total()
                .cmp(&fleet.vms[a].total())
                .then(a.cmp(&b))
        });
        let mut result = None;
        for best_fit in [false, true] {
            let r = self.greedy(&items, best_fit);
            self.reset();
            if let Some(assign) = r {
                result = Some(ScenarioOutcome::Guaranteed {
                    method: Method::Heuristic,
                    witness: self.witness(&assign),
                });
                break;
            }
        }
        if result.is_none() {
            result = self.prove_impossible(failed, &items);
        }
        if result.is_none() && items.len() > MAX_EXACT_ITEMS {
            result = Some(ScenarioOutcome::NotProven { steps: 0 });
        }
        if result.is_none() {
            let mut s = Search::new(self, &items, budget.search_steps);
            let found = s.dfs(0);
            let steps = s.steps;
            let assign = s.assignment();
            result = Some(match found {
                Some(true) => ScenarioOutcome::Guaranteed {
                    method: Method::Exact,
                    witness: self.witness(&assign),
                },
                Some(false) => ScenarioOutcome::Impossible {
                    proof: Proof::Exhausted { steps },
                },
                None => ScenarioOutcome::NotProven { steps },
            });
        }
        for &h in failed {
            self.failed[h] = false;
        }
        let _ = nc;
        result.unwrap_or(ScenarioOutcome::NotProven { steps: 0 })
    }

    /// Places the VMs of host `failed` alone (largest first), each first-fit over the other
    /// hosts in circular order, VM `i` starting at the `(i mod spread) + 1`-th host after the
    /// failed one (`spread` 1: plain first-fit from the next host), and returns the placement (`None` when some VM fits nowhere). Different
    /// hosts' placements mostly land on different hosts, thinly, so they can be combined for
    /// multi-host scenarios.
    pub(super) fn spread_witness(&mut self, failed: usize, spread: usize) -> Option<Vec<Move>> {
        let fleet = self.fleet;
        let nc = self.nc;
        let nh = fleet.hosts.len();
        let mut items = self.vms_of_host[failed].clone();
        items.sort_by(|&a, &b| {
            fleet.vms[b]
                .total()
                .cmp(&fleet.vms[a].total())
                .then(a.cmp(&b))
        });
        let mut assign = Vec::with_capacity(items.len());
        let mut ok = true;
        // With spread > 1 the VMs are dealt round-robin over a few hosts, each taking a thin
        // slice of each, which leaves room on every node for new VMs (the hold-back).
        let window = nh.saturating_sub(1).clamp(1, spread.max(1));
        'vm: for (i, &v) in items.iter().enumerate() {
            let vm = &fleet.vms[v];
            for j in 0..nh.saturating_sub(1) {
                let step = 1 + (i % window + j) % (nh - 1);
                let h = (failed + step) % nh;
                if !(0..nc).all(|c| self.slack[h * nc + c] >= vm.demand[c]) {
                    continue;
                }
                if vm.single_node {
                    for n in fleet.hosts[h].nodes() {
                        if (0..nc).all(|c| self.free[n * nc + c] >= vm.demand[c]) {
                            for c in 0..nc {
                                self.free[n * nc + c] -= vm.demand[c];
                                self.slack[h * nc + c] -= vm.demand[c];
                            }
                            self.touched_nodes.push(n);
                            self.touched_hosts.push(h);
                            assign.push((v, Target::Node(n)));
                            continue 'vm;
                        }
                    }
                } else {
                    for c in 0..nc {
                        self.slack[h * nc + c] -= vm.demand[c];
                    }
                    self.touched_hosts.push(h);
                    assign.push((v, Target::Host(h)));
                    continue 'vm;
                }
            }
            ok = false;
            break;
        }
        self.reset();
        ok.then(|| self.witness(&assign))
    }

    /// Places `items` greedily; `None` when one does not fit.
    pub(super) fn greedy(
        &mut self,
        items: &[usize],
        best_fit: bool,
    ) -> Option<Vec<(usize, Target)>> {
        let fleet = self.fleet;
        let nc = self.nc;
        let mut assign = Vec::with_capacity(items.len());
        for &v in items {
            let vm = &fleet.vms[v];
            let Some(dom) = self.dominant(v) else {
                // Needs nothing: any surviving host takes it.
                let h = (0..fleet.hosts.len()).find(|&h| !self.failed[h])?;
                assign.push((v, Target::Host(h)));
                continue;
            };
            let dd = vm.demand[dom];
            let mut chosen: Option<(usize, u64)> = None;
            if vm.single_node {
                for &n in &self.node_order[dom] {
                    if self.free0[n * nc + dom] < dd {
                        break;
                    }
                    let h = fleet.nodes[n].host;
                    if self.failed[h] {
                        continue;
                    }
                    let fits = (0..nc).all(|c| {
                        self.free[n * nc + c] >= vm.demand[c]
                            && self.slack[h * nc + c] >= vm.demand[c]
                    });
                    if fits {
                        let left = self.free[n * nc + dom] - dd;
                        if !best_fit {
                            chosen = Some((n, left));
                            break;
                        }
                        if chosen.is_none_or(|(_, l)| left < l) {
                            chosen = Some((n, left));
                        }
                    }
                }
                let (n, _) = chosen?;
                let h = fleet.nodes[n].host;
                for c in 0..nc {
                    self.free[n * nc + c] -= vm.demand[c];
                    self.slack[h * nc + c] -= vm.demand[c];
                }
                self.touched_nodes.push(n);
                self.touched_hosts.push(h);
                assign.push((v, Target::Node(n)));
            } else {
                for &h in &self.host_order[dom] {
                    if self.slack0[h * nc + dom] < dd {
                        break;
                    }
                    if self.failed[h] {
                        continue;
                    }
                    if (0..nc).all(|c| self.slack[h * nc + c] >= vm.demand[c]) {
                        let left = self.slack[h * nc + dom] - dd;
                        if !best_fit {
                            chosen = Some((h, left));
                            break;
                        }
                        if chosen.is_none_or(|(_, l)| left < l) {
                            chosen = Some((h, left));
                        }
                    }
                }
                let (h, _) = chosen?;
                for c in 0..nc {
                    self.slack[h * nc + c] -= vm.demand[c];
                }
                self.touched_hosts.push(h);
                assign.push((v, Target::Host(h)));
            }
        }
        Some(assign)
    }

    /// Turns an assignment into parts: single-node VMs on their node, the others split over
    /// their host's nodes greedily after the single-node VMs took theirs.
    pub(super) fn witness(&self, assign: &[(usize, Target)]) -> Vec<Move> {
        let fleet = self.fleet;
        let nc = self.nc;
        // The few nodes the assignment touches, with what is left on them.
        let mut free: Vec<(usize, Vec<u64>)> = Vec::new();
        let get = |n: usize| -> Vec<u64> { self.free0[n * nc..(n + 1) * nc].to_vec() };
        fn entry(
            free: &mut Vec<(usize, Vec<u64>)>,
            n: usize,
            get: impl Fn(usize) -> Vec<u64>,
        ) -> &mut Vec<u64> {
            let i = match free.iter().position(|e| e.0 == n) {
                Some(i) => i,
                None => {
                    free.push((n, get(n)));
                    free.len() - 1
                }
            };
            &mut free[i].1
        }
        let mut moves = Vec::with_capacity(assign.len());
        for &(v, t) in assign {
            if let Target::Node(n) = t {
                let f = entry(&mut free, n, get);
                let vm = &fleet.vms[v];
                let mut parts = Vec::new();
                for c in 0..nc {
                    if vm.demand[c] > 0 {
                        f[c] = f[c].saturating_sub(vm.demand[c]);
                        parts.push(Part {
                            node: n,
                            class: c,
                            bytes: vm.demand[c],
                        });
                    }
                }
                moves.push(Move { vm: v, parts });
            }
        }
        for &(v, t) in assign {
            if let Target::Host(h) = t {
                let vm = &fleet.vms[v];
                let mut parts = Vec::new();
                for c in 0..nc {
                    let mut left = vm.demand[c];
                    for n in fleet.hosts[h].nodes() {
                        if left == 0 {
                            break;
                        }
                        let f = entry(&mut free, n, get);
                        let take = left.min(f[c]);
                        if take > 0 {
                            f[c] -= take;
                            left -= take;
                            parts.push(Part {
                                node: n,
                                class: c,
                                bytes: take,
                            });
                        }
                    }
                }
                moves.push(Move { vm: v, parts });
            }
        }
        moves.sort_by_key(|m| m.vm);
        moves
    }
}
