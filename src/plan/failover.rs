//! N+k failover: can every VM of any `k` failed hosts be re-placed on the survivors?
//!
//! Each scenario (one set of `k` failed hosts) is checked against the survivors' free capacity
//! as it is now; scenarios are independent of each other (they do not share what is left
//! over), and within a scenario all displaced VMs are placed together, so they never count the
//! same free bytes twice.
//!
//! Per scenario, in this order:
//! 1. **First-fit decreasing** (VMs largest first, nodes by decreasing free), then
//!    **best-fit decreasing**. A success is a placement, checked by [`verify_witness`]:
//!    [`Outcome::Guaranteed`].
//! 2. **Proofs of impossibility** that cost nothing: no survivors; per class, the displaced
//!    VMs need more than all survivors have free ([`Proof::ClassShortfall`]); a VM fits on no
//!    surviving node (single-node VMs) or host ([`Proof::DoesNotFit`]).
//! 3. **Exact search** (branch and bound over VMs largest first, with hosts and nodes in the
//!    same state tried once, and a per-class capacity bound), limited by
//!    [`Budget::search_steps`]. It finds a placement ([`Outcome::Guaranteed`]), or exhausts the
//!    space ([`Proof::Exhausted`]: impossible), or runs out of budget
//!    ([`Outcome::NotProven`]).
//!
//! The verdict of a report is `Impossible` if any scenario is, else `NotProven` if any is (or
//! some scenarios were not evaluated because there were more than
//! [`Budget::max_scenarios`]), else `Guaranteed`.

use std::collections::HashSet;

use super::{class_name, sat_sum, Fleet, Target};
use crate::error::Result;
use crate::snapshot::Snapshot;
use crate::units::format_bytes;

/// Limits that keep every check bounded, whatever the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Work units (candidate bins examined) the exact search may spend per scenario.
    pub search_steps: u64,
    /// Scenarios evaluated at most; beyond, the verdict is at best `NotProven`.
    pub max_scenarios: u64,
    /// Guaranteed scenarios whose placement is kept in the report (each was found and
    /// checked either way); later ones keep an empty witness and `witness_kept: false`, so
    /// that N+2 over a large fleet does not hold millions of placements in memory.
    pub keep_witnesses: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Budget {
            search_steps: 200_000,
            max_scenarios: 100_000,
            keep_witnesses: 10_000,
        }
    }
}

/// The answer for a scenario or a whole report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Verdict {
    /// Every scenario has a placement.
    Guaranteed,
    /// Some scenario cannot be settled within the budget (and none is impossible).
    NotProven,
    /// Some scenario is proven impossible.
    Impossible,
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Verdict::Guaranteed => "guaranteed",
            Verdict::NotProven => "not proven",
            Verdict::Impossible => "impossible",
        })
    }
}

/// One piece of a re-placed VM: `bytes` of class `class` on node `node` (fleet indices).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Part {
    /// Node index in [`Fleet::nodes`].
    pub node: usize,
    /// Class index in [`Fleet::classes`].
    pub class: usize,
    /// Bytes placed there.
    pub bytes: u64,
}

/// Where one displaced VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Move {
    /// VM index in [`Fleet::vms`].
    pub vm: usize,
    /// Its pieces (all on one host; on one node for single-node VMs).
    pub parts: Vec<Part>,
}

/// How a placement was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Method {
    /// First-fit or best-fit decreasing.
    Heuristic,
    /// The exact search.
    Exact,
}

/// Why a scenario is impossible.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Proof {
    /// Every host failed and there are VMs to place.
    NoSurvivors,
    /// The displaced VMs need more of class `page_size_bytes` than all survivors have free.
    ClassShortfall {
        /// The class.
        page_size_bytes: u64,
        /// What the displaced VMs need of it.
        demand: u64,
        /// What the survivors have free of it.
        free: u64,
    },
    /// The `vms` displaced VMs that need at least `at_least` bytes of class `page_size_bytes`
    /// each (`demand` together) do not fit in the pieces the survivors' free capacity comes
    /// in. A node (a host, when some of these VMs may span nodes) with free `f` can take at
    /// most `f / at_least` of them, and of their bytes at most `f` rounded down to a multiple
    /// of `granule` (the greatest common divisor of their demands), and nothing when
    /// `f < at_least`. Summed over the survivors that is `slots` VMs and `usable` bytes; the
    /// proof holds when `vms > slots` or `demand > usable`.
    Fragmented {
        /// The class.
        page_size_bytes: u64,
        /// The smallest demand of the VMs counted.
        at_least: u64,
        /// How many VMs need at least that much.
        vms: u64,
        /// What they need together.
        demand: u64,
        /// How many of them the survivors' free pieces can take at most.
        slots: u64,
        /// How many of their bytes the survivors' free pieces can hold at most.
        usable: u64,
        /// The greatest common divisor of their demands.
        granule: u64,
    },
    /// VM `vm` fits on no surviving node (single-node) or host.
    DoesNotFit {
        /// VM index in [`Fleet::vms`].
        vm: usize,
        /// Whether it must sit on one node.
        single_node: bool,
    },
    /// The exact search tried every distinct placement.
    Exhausted {
        /// Work units spent.
        steps: u64,
    },
}

/// The answer for one scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Outcome {
    /// A placement exists; here it is.
    Guaranteed {
        /// How it was found.
        method: Method,
        /// One move per displaced VM.
        witness: Vec<Move>,
    },
    /// No placement exists.
    Impossible {
        /// Why.
        proof: Proof,
    },
    /// The heuristics failed and the exact search ran out of budget.
    NotProven {
        /// Work units spent by the exact search.
        steps: u64,
    },
}

impl Outcome {
    /// The verdict of this outcome.
    pub fn verdict(&self) -> Verdict {
        match self {
            Outcome::Guaranteed { .. } => Verdict::Guaranteed,
            Outcome::Impossible { .. } => Verdict::Impossible,
            Outcome::NotProven { .. } => Verdict::NotProven,
        }
    }
}

/// One failure scenario.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Scenario {
    /// Failed host indices.
    pub failed: Vec<usize>,
    /// Displaced VM indices.
    pub displaced: Vec<usize>,
    /// Bytes the displaced VMs need, all classes together.
    pub demand_bytes: u64,
    /// The answer.
    pub outcome: Outcome,
    /// Whether a `Guaranteed` outcome still carries its witness (see
    /// [`Budget::keep_witnesses`]).
    pub witness_kept: bool,
}

/// All scenarios of an N+k check.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FailoverReport {
    /// Hosts failing together.
    pub k: usize,
    /// How many scenarios there are (`C(hosts, k)`, saturating).
    pub total_scenarios: u64,
    /// The scenarios evaluated (all of them unless more than [`Budget::max_scenarios`]).
    pub scenarios: Vec<Scenario>,
    /// The overall answer.
    pub verdict: Verdict,
}

/// Parses nothing, trusts nothing: builds a fleet from arbitrary snapshots and checks N+k
/// within `budget`. Never panics and always terminates (this is the fuzzing entry point).
///
/// # Errors
/// [`Error::InvalidSnapshot`](crate::Error::InvalidSnapshot) when a snapshot is inconsistent.
pub fn failover(snaps: &[Snapshot], k: usize, budget: &Budget) -> Result<FailoverReport> {
    let fleet = Fleet::from_snapshots(snaps)?;
    Ok(check(&fleet, k, budget))
}

/// Number of k-subsets of n, saturating at `u64::MAX`.
pub fn binomial(n: usize, k: usize) -> u64 {
    if k > n {
        return 0;
    }
    let k = k.min(n - k) as u128;
    let mut r: u128 = 1;
    for i in 0..k {
        r = r * (n as u128 - i) / (i + 1);
        if r > u64::MAX as u128 {
            return u64::MAX;
        }
    }
    r as u64
}

/// Checks N+k on `fleet`: every set of `k` hosts failing together.
///
/// `k = 0` gives one scenario with nothing failed (trivially guaranteed); `k >= hosts` fails
/// everything.
pub fn check(fleet: &Fleet, k: usize, budget: &Budget) -> FailoverReport {
    let n = fleet.hosts.len();
    let k = k.min(n);
    let total = binomial(n, k);
    let mut ck = Checker::new(fleet);
    let mut scenarios = Vec::new();
    let mut idx: Vec<usize> = (0..k).collect();
    let mut evaluated = 0u64;
    loop {
        if evaluated >= budget.max_scenarios {
            break;
        }
        let mut sc = ck.scenario(&idx, budget);
        if evaluated >= budget.keep_witnesses {
            if let Outcome::Guaranteed { witness, .. } = &mut sc.outcome {
                *witness = Vec::new();
                sc.witness_kept = false;
            }
        }
        scenarios.push(sc);
        evaluated += 1;
        // Next combination in lexicographic order.
        let mut i = k;
        let mut advanced = false;
        while i > 0 {
            i -= 1;
            if idx[i] < n - k + i {
                idx[i] += 1;
                for j in i + 1..k {
                    idx[j] = idx[j - 1] + 1;
                }
                advanced = true;
                break;
            }
        }
        if !advanced {
            break;
        }
    }
    let mut verdict = scenarios
        .iter()
        .map(|s| s.outcome.verdict())
        .max()
        .unwrap_or(Verdict::Guaranteed);
    if (scenarios.len() as u64) < total && verdict == Verdict::Guaranteed {
        verdict = Verdict::NotProven;
    }
    FailoverReport {
        k,
        total_scenarios: total,
        scenarios,
        verdict,
    }
}

/// Re-checks N+k on `fleet` after a change confined to host `changed` that only *adds* load
/// (VMs or reservations added there, new VMs appended at the end of [`Fleet::vms`]), reusing
/// `base`, the report of the fleet before the change:
/// - an impossible `base` stays impossible (a placement after the change, minus the added
///   load, would be one before it);
/// - a scenario without `changed` among its failed hosts keeps its witness when what the
///   witness puts on `changed`'s nodes still fits their free now;
/// - every other scenario is checked again from scratch.
///
/// The answer has the same meaning as [`check`]'s verdict. When `base` lacks scenarios or
/// witnesses (budget limits), everything is checked again.
pub fn recheck(fleet: &Fleet, base: &FailoverReport, changed: usize, budget: &Budget) -> Verdict {
    if base.verdict == Verdict::Impossible {
        return Verdict::Impossible;
    }
    let complete = base.scenarios.len() as u64 == base.total_scenarios
        && base.scenarios.iter().all(|s| s.witness_kept);
    if !complete || changed >= fleet.hosts.len() {
        return check(fleet, base.k, budget).verdict;
    }
    let nc = fleet.classes.len();
    let nodes = fleet.hosts[changed].nodes();
    let mut ck: Option<Checker<'_>> = None;
    let mut worst = Verdict::Guaranteed;
    let mut used = vec![0u64; nodes.len() * nc];
    for s in &base.scenarios {
        let keep = !s.failed.contains(&changed)
            && match &s.outcome {
                Outcome::Guaranteed { witness, .. } => {
                    used.iter_mut().for_each(|u| *u = 0);
                    for p in witness.iter().flat_map(|m| &m.parts) {
                        if nodes.contains(&p.node) && p.class < nc {
                            let u = &mut used[(p.node - nodes.start) * nc + p.class];
                            *u = u.saturating_add(p.bytes);
                        }
                    }
                    nodes.clone().all(|n| {
                        (0..nc).all(|c| used[(n - nodes.start) * nc + c] <= fleet.free(n, c))
                    })
                }
                _ => false,
            };
        if keep {
            continue;
        }
        let ck = ck.get_or_insert_with(|| Checker::new(fleet));
        match ck.scenario(&s.failed, budget).outcome.verdict() {
            Verdict::Impossible => return Verdict::Impossible,
            v => worst = worst.max(v),
        }
    }
    worst
}

/// The exact search is not tried on scenarios displacing more VMs than this (its depth is the
/// number of VMs); such scenarios are settled by the heuristics and proofs or not at all.
pub const MAX_EXACT_ITEMS: usize = 256;

/// The failed hosts of a scenario: in range, ascending, each once.
fn failed_hosts(fleet: &Fleet, failed: &[usize]) -> Vec<usize> {
    let mut failed: Vec<usize> = failed
        .iter()
        .copied()
        .filter(|&h| h < fleet.hosts.len())
        .collect();
    failed.sort_unstable();
    failed.dedup();
    failed
}

/// Runs only the exact search on one scenario (no heuristics, no cheap proofs), for testing
/// it against brute force: `Guaranteed` with [`Method::Exact`], `Impossible` with
/// [`Proof::Exhausted`] (or [`Proof::NoSurvivors`]), or `NotProven`.
pub fn exact(fleet: &Fleet, failed: &[usize], budget: &Budget) -> Outcome {
    let mut ck = Checker::new(fleet);
    let failed = failed_hosts(fleet, failed);
    let mut items: Vec<usize> = failed
        .iter()
        .flat_map(|&h| ck.vms_of_host[h].iter().copied())
        .collect();
    items.sort_by(|&a, &b| {
        fleet.vms[b]
            .total()
            .cmp(&fleet.vms[a].total())
            .then(a.cmp(&b))
    });
    if items.is_empty() {
        return Outcome::Guaranteed {
            method: Method::Exact,
            witness: Vec::new(),
        };
    }
    if failed.len() >= fleet.hosts.len() {
        return Outcome::Impossible {
            proof: Proof::NoSurvivors,
        };
    }
    if items.len() > MAX_EXACT_ITEMS {
        return Outcome::NotProven { steps: 0 };
    }
    for &h in &failed {
        ck.failed[h] = true;
    }
    let mut s = Search::new(&ck, &items, budget.search_steps);
    let found = s.dfs(0);
    let steps = s.steps;
    let assign = s.assignment();
    match found {
        Some(true) => Outcome::Guaranteed {
            method: Method::Exact,
            witness: ck.witness(&assign),
        },
        Some(false) => Outcome::Impossible {
            proof: Proof::Exhausted { steps },
        },
        None => Outcome::NotProven { steps },
    }
}

/// Checks one scenario: the hosts in `failed` are gone.
pub fn scenario(fleet: &Fleet, failed: &[usize], budget: &Budget) -> Scenario {
    Checker::new(fleet).scenario(failed, budget)
}

/// Checks that `witness` re-places exactly the VMs of the `failed` hosts on survivors within
/// every limit: each VM once, all its classes in full, on one host, on one node if it is
/// single-node, and no (node, class) given more than it has free.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn verify_witness(
    fleet: &Fleet,
    failed: &[usize],
    witness: &[Move],
) -> std::result::Result<(), String> {
    let displaced: Vec<usize> = (0..fleet.vms.len())
        .filter(|&v| failed.contains(&fleet.vms[v].host))
        .collect();
    verify_moves(fleet, failed, &displaced, witness)
}

/// [`verify_witness`] in time linear in the witness, given the displaced VMs.
fn verify_moves(
    fleet: &Fleet,
    failed: &[usize],
    displaced: &[usize],
    witness: &[Move],
) -> std::result::Result<(), String> {
    let nc = fleet.classes.len();
    let mut seen = HashSet::new();
    let mut used = std::collections::HashMap::<(usize, usize), u64>::new();
    for m in witness {
        let vm = fleet.vms.get(m.vm).ok_or(format!("VM {} unknown", m.vm))?;
        if !failed.contains(&vm.host) {
            return Err(format!("VM {} was not on a failed host", vm.name));
        }
        if !seen.insert(m.vm) {
            return Err(format!("VM {} placed twice", vm.name));
        }
        let mut got = vec![0u64; nc];
        let mut hosts = HashSet::new();
        let mut nodes = HashSet::new();
        for p in &m.parts {
            let node = fleet
                .nodes
                .get(p.node)
                .ok_or(format!("node {} unknown", p.node))?;
            if failed.contains(&node.host) {
                return Err(format!("VM {} placed on failed host", vm.name));
            }
            if p.class >= nc {
                return Err(format!("class {} unknown", p.class));
            }
            if p.bytes == 0 {
                continue;
            }
            hosts.insert(node.host);
            nodes.insert(p.node);
            got[p.class] = got[p.class].saturating_add(p.bytes);
            let u = used.entry((p.node, p.class)).or_insert(0);
            *u = u.saturating_add(p.bytes);
        }
        if got != vm.demand {
            return Err(format!(
                "VM {} gets {got:?}, needs {:?}",
                vm.name, vm.demand
            ));
        }
        if hosts.len() > 1 || (vm.single_node && nodes.len() > 1) {
            return Err(format!("VM {} split over {} nodes", vm.name, nodes.len()));
        }
    }
    for &v in displaced {
        if !seen.contains(&v) {
            return Err(format!("VM {} not placed", fleet.vms[v].name));
        }
    }
    for ((n, c), u) in used {
        if u > fleet.free(n, c) {
            return Err(format!(
                "node {n} class {} gets {u}, has {} free",
                class_name(fleet.classes[c]),
                fleet.free(n, c)
            ));
        }
    }
    Ok(())
}

/// Describes a proof in one sentence.
pub fn explain(fleet: &Fleet, proof: &Proof) -> String {
    match proof {
        Proof::NoSurvivors => "no host survives".to_string(),
        Proof::ClassShortfall {
            page_size_bytes,
            demand,
            free,
        } => format!(
            "the displaced VMs need {} of {} pages, the survivors have {} free",
            format_bytes(*demand),
            class_name(*page_size_bytes),
            format_bytes(*free)
        ),
        Proof::Fragmented {
            page_size_bytes,
            at_least,
            vms,
            demand,
            slots,
            usable,
            granule,
        } => format!(
            "{vms} displaced VM(s) need at least {} of {} pages each ({} together); the survivors' free pieces can take at most {slots} such VM(s) and {} of their memory (whole VMs, in multiples of {})",
            format_bytes(*at_least),
            class_name(*page_size_bytes),
            format_bytes(*demand),
            format_bytes(*usable),
            format_bytes(*granule)
        ),
        Proof::DoesNotFit { vm, single_node } => {
            let v = &fleet.vms[*vm];
            let need: Vec<String> = v
                .demand
                .iter()
                .enumerate()
                .filter(|(_, &d)| d > 0)
                .map(|(c, &d)| format!("{} {}", format_bytes(d), class_name(fleet.classes[c])))
                .collect();
            format!(
                "VM {} needs {} and fits on no surviving {}",
                v.name,
                need.join(" + "),
                if *single_node { "node" } else { "host" }
            )
        }
        Proof::Exhausted { steps } => {
            format!("exact search tried every distinct placement ({steps} steps)")
        }
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// Precomputed orders and scratch space shared by the scenarios of one check.
struct Checker<'a> {
    fleet: &'a Fleet,
    nc: usize,
    /// Initial free per node and class (`n * nc + c`).
    free0: Vec<u64>,
    /// Initial free per host and class, all nodes together.
    slack0: Vec<u64>,
    total0: Vec<u64>,
    /// Per class: nodes by decreasing initial free of that class (only those with some).
    node_order: Vec<Vec<usize>>,
    /// Per class: hosts by decreasing initial free of that class (only those with some).
    host_order: Vec<Vec<usize>>,
    vms_of_host: Vec<Vec<usize>>,
    // Scratch.
    free: Vec<u64>,
    slack: Vec<u64>,
    failed: Vec<bool>,
    touched_nodes: Vec<usize>,
    touched_hosts: Vec<usize>,
}

impl<'a> Checker<'a> {
    fn new(fleet: &'a Fleet) -> Self {
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

    fn dominant(&self, v: usize) -> Option<usize> {
        let d = &self.fleet.vms[v].demand;
        (0..self.nc).filter(|&c| d[c] > 0).max_by_key(|&c| d[c])
    }

    fn reset(&mut self) {
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

    fn scenario(&mut self, failed: &[usize], budget: &Budget) -> Scenario {
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
        if let Outcome::Guaranteed { witness, .. } = &outcome {
            if verify_moves(fleet, &failed, &displaced, witness).is_err() {
                outcome = Outcome::NotProven { steps: 0 };
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

    fn solve(&mut self, failed: &[usize], displaced: &[usize], budget: &Budget) -> Outcome {
        let fleet = self.fleet;
        let nc = self.nc;
        if displaced.is_empty() {
            return Outcome::Guaranteed {
                method: Method::Heuristic,
                witness: Vec::new(),
            };
        }
        if failed.len() >= fleet.hosts.len() {
            return Outcome::Impossible {
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
                result = Some(Outcome::Guaranteed {
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
            result = Some(Outcome::NotProven { steps: 0 });
        }
        if result.is_none() {
            let mut s = Search::new(self, &items, budget.search_steps);
            let found = s.dfs(0);
            let steps = s.steps;
            let assign = s.assignment();
            result = Some(match found {
                Some(true) => Outcome::Guaranteed {
                    method: Method::Exact,
                    witness: self.witness(&assign),
                },
                Some(false) => Outcome::Impossible {
                    proof: Proof::Exhausted { steps },
                },
                None => Outcome::NotProven { steps },
            });
        }
        for &h in failed {
            self.failed[h] = false;
        }
        let _ = nc;
        result.unwrap_or(Outcome::NotProven { steps: 0 })
    }

    /// Places `items` greedily; `None` when one does not fit.
    fn greedy(&mut self, items: &[usize], best_fit: bool) -> Option<Vec<(usize, Target)>> {
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

    /// Cheap proofs that no placement exists.
    fn prove_impossible(&self, failed: &[usize], items: &[usize]) -> Option<Outcome> {
        let fleet = self.fleet;
        let nc = self.nc;
        for c in 0..nc {
            let demand = items
                .iter()
                .fold(0u64, |a, &v| a.saturating_add(fleet.vms[v].demand[c]));
            let lost = failed
                .iter()
                .fold(0u64, |a, &h| a.saturating_add(self.slack0[h * nc + c]));
            let free = self.total0[c].saturating_sub(lost);
            if demand > free {
                return Some(Outcome::Impossible {
                    proof: Proof::ClassShortfall {
                        page_size_bytes: fleet.classes[c],
                        demand,
                        free,
                    },
                });
            }
        }
        for &v in items {
            let vm = &fleet.vms[v];
            let Some(dom) = self.dominant(v) else {
                continue;
            };
            let dd = vm.demand[dom];
            let fits = if vm.single_node {
                self.node_order[dom]
                    .iter()
                    .take_while(|&&n| self.free0[n * nc + dom] >= dd)
                    .any(|&n| {
                        !self.failed[fleet.nodes[n].host]
                            && (0..nc).all(|c| self.free0[n * nc + c] >= vm.demand[c])
                    })
            } else {
                self.host_order[dom]
                    .iter()
                    .take_while(|&&h| self.slack0[h * nc + dom] >= dd)
                    .any(|&h| {
                        !self.failed[h] && (0..nc).all(|c| self.slack0[h * nc + c] >= vm.demand[c])
                    })
            };
            if !fits {
                return Some(Outcome::Impossible {
                    proof: Proof::DoesNotFit {
                        vm: v,
                        single_node: vm.single_node,
                    },
                });
            }
        }
        for c in 0..nc {
            let mut sizes: Vec<u64> = items
                .iter()
                .map(|&v| fleet.vms[v].demand[c])
                .filter(|&d| d > 0)
                .collect();
            sizes.sort_unstable();
            sizes.dedup();
            for &t in &sizes {
                let big: Vec<usize> = items
                    .iter()
                    .copied()
                    .filter(|&v| fleet.vms[v].demand[c] >= t)
                    .collect();
                let granule = big
                    .iter()
                    .fold(0u64, |g, &v| gcd(g, fleet.vms[v].demand[c]));
                let demand = sat_sum(big.iter().map(|&v| fleet.vms[v].demand[c]));
                let all_single = big.iter().all(|&v| fleet.vms[v].single_node);
                let frees: Box<dyn Iterator<Item = u64>> = if all_single {
                    Box::new(
                        (0..fleet.nodes.len())
                            .filter(|&n| !self.failed[fleet.nodes[n].host])
                            .map(|n| self.free0[n * nc + c]),
                    )
                } else {
                    Box::new(
                        (0..fleet.hosts.len())
                            .filter(|&h| !self.failed[h])
                            .map(|h| self.slack0[h * nc + c]),
                    )
                };
                let (mut slots, mut usable) = (0u64, 0u64);
                for f in frees.filter(|&f| f >= t) {
                    slots = slots.saturating_add(f / t);
                    usable = usable.saturating_add(f / granule * granule);
                }
                let vms = big.len() as u64;
                if vms > slots || demand > usable {
                    return Some(Outcome::Impossible {
                        proof: Proof::Fragmented {
                            page_size_bytes: fleet.classes[c],
                            at_least: t,
                            vms,
                            demand,
                            slots,
                            usable,
                            granule,
                        },
                    });
                }
            }
        }
        None
    }

    /// Turns an assignment into parts: single-node VMs on their node, the others split over
    /// their host's nodes greedily after the single-node VMs took theirs.
    fn witness(&self, assign: &[(usize, Target)]) -> Vec<Move> {
        let fleet = self.fleet;
        let nc = self.nc;
        let mut free = std::collections::HashMap::<usize, Vec<u64>>::new();
        let get = |n: usize| -> Vec<u64> { self.free0[n * nc..(n + 1) * nc].to_vec() };
        let mut moves = Vec::with_capacity(assign.len());
        for &(v, t) in assign {
            if let Target::Node(n) = t {
                let f = free.entry(n).or_insert_with(|| get(n));
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
                        let f = free.entry(n).or_insert_with(|| get(n));
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

/// Branch and bound over the displaced VMs of one scenario, on the survivors only.
struct Search {
    nc: usize,
    /// The VMs to place, largest first.
    items: Vec<usize>,
    demand: Vec<Vec<u64>>,
    single: Vec<bool>,
    /// Per class, demand of items `i..` (suffix sums).
    suffix: Vec<Vec<u64>>,
    /// Survivor hosts (fleet indices) and their nodes (fleet indices).
    hosts: Vec<usize>,
    host_nodes: Vec<Vec<usize>>,
    /// Local state: per survivor node (flattened over `host_nodes`) and class.
    free: Vec<Vec<Vec<u64>>>,
    slack: Vec<Vec<u64>>,
    choice: Vec<Option<Target>>,
    /// Per class, the greatest common divisor of all items' demands: whatever a host takes of
    /// the class is a multiple of it.
    granule: Vec<u64>,
    steps: u64,
    limit: u64,
}

impl Search {
    fn new(ck: &Checker<'_>, items: &[usize], limit: u64) -> Self {
        let fleet = ck.fleet;
        let nc = ck.nc;
        let hosts: Vec<usize> = (0..fleet.hosts.len()).filter(|&h| !ck.failed[h]).collect();
        let host_nodes: Vec<Vec<usize>> = hosts
            .iter()
            .map(|&h| fleet.hosts[h].nodes().collect())
            .collect();
        let free = host_nodes
            .iter()
            .map(|ns| {
                ns.iter()
                    .map(|&n| ck.free0[n * nc..(n + 1) * nc].to_vec())
                    .collect()
            })
            .collect();
        let slack = hosts
            .iter()
            .map(|&h| ck.slack0[h * nc..(h + 1) * nc].to_vec())
            .collect();
        let demand: Vec<Vec<u64>> = items.iter().map(|&v| fleet.vms[v].demand.clone()).collect();
        let mut suffix = vec![vec![0u64; nc]; items.len() + 1];
        for i in (0..items.len()).rev() {
            for c in 0..nc {
                suffix[i][c] = suffix[i + 1][c].saturating_add(demand[i][c]);
            }
        }
        let granule = (0..nc)
            .map(|c| demand.iter().fold(0u64, |g, d| gcd(g, d[c])))
            .collect();
        Search {
            nc,
            granule,
            single: items.iter().map(|&v| fleet.vms[v].single_node).collect(),
            items: items.to_vec(),
            demand,
            suffix,
            hosts,
            host_nodes,
            free,
            slack,
            choice: vec![None; items.len()],
            steps: 0,
            limit,
        }
    }

    fn tick(&mut self, n: u64) -> bool {
        self.steps = self.steps.saturating_add(n);
        self.steps <= self.limit
    }

    /// `Some(true)`: placed everything from `i` on; `Some(false)`: impossible; `None`: out
    /// of budget.
    fn dfs(&mut self, i: usize) -> Option<bool> {
        if i == self.items.len() {
            return Some(true);
        }
        let nc = self.nc;
        // Bound: per class, what is left to place must fit in the free capacity of hosts
        // that can still take at least the smallest remaining demand of that class.
        let work = (self.hosts.len() + self.items.len() - i) * nc.max(1);
        if !self.tick(work as u64) {
            return None;
        }
        for c in 0..nc {
            let smallest = (i..self.items.len())
                .map(|j| self.demand[j][c])
                .filter(|&d| d > 0)
                .min();
            let Some(smallest) = smallest else { continue };
            let g = self.granule[c].max(1);
            let usable = self
                .slack
                .iter()
                .map(|s| s[c])
                .filter(|&s| s >= smallest)
                .fold(0u64, |a, b| a.saturating_add(b / g * g));
            if self.suffix[i][c] > usable {
                return Some(false);
            }
        }
        let d = self.demand[i].clone();
        let mut seen_hosts: HashSet<Vec<u64>> = HashSet::new();
        for hl in 0..self.hosts.len() {
            if !self.tick(1 + self.host_nodes[hl].len() as u64) {
                return None;
            }
            if (0..nc).any(|c| self.slack[hl][c] < d[c]) {
                continue;
            }
            // Hosts in the same state are interchangeable: try one of them.
            let mut sig = self.slack[hl].clone();
            let mut ns: Vec<&Vec<u64>> = self.free[hl].iter().collect();
            ns.sort();
            for f in ns {
                sig.extend_from_slice(f);
            }
            if !seen_hosts.insert(sig) {
                continue;
            }
            if self.single[i] {
                let mut seen_nodes: Vec<Vec<u64>> = Vec::new();
                for nl in 0..self.host_nodes[hl].len() {
                    if (0..nc).any(|c| self.free[hl][nl][c] < d[c]) {
                        continue;
                    }
                    if seen_nodes.contains(&self.free[hl][nl]) {
                        continue;
                    }
                    seen_nodes.push(self.free[hl][nl].clone());
                    for c in 0..nc {
                        self.free[hl][nl][c] -= d[c];
                        self.slack[hl][c] -= d[c];
                    }
                    self.choice[i] = Some(Target::Node(self.host_nodes[hl][nl]));
                    let r = self.dfs(i + 1);
                    for c in 0..nc {
                        self.free[hl][nl][c] += d[c];
                        self.slack[hl][c] += d[c];
                    }
                    match r {
                        Some(false) => {}
                        other => return other,
                    }
                }
            } else {
                for c in 0..nc {
                    self.slack[hl][c] -= d[c];
                }
                self.choice[i] = Some(Target::Host(self.hosts[hl]));
                let r = self.dfs(i + 1);
                for c in 0..nc {
                    self.slack[hl][c] += d[c];
                }
                match r {
                    Some(false) => {}
                    other => return other,
                }
            }
        }
        self.choice[i] = None;
        Some(false)
    }

    fn assignment(&self) -> Vec<(usize, Target)> {
        self.items
            .iter()
            .zip(&self.choice)
            .filter_map(|(&v, t)| t.map(|t| (v, t)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Fleet;

    /// Two hosts of one node each, 2M class only, limits in pages.
    fn fleet(limits: &[u64], vms: &[(usize, u64)]) -> Fleet {
        let mut f = Fleet {
            classes: vec![2 << 20],
            ..Fleet::default()
        };
        for (h, &l) in limits.iter().enumerate() {
            f.hosts.push(crate::plan::Host {
                name: format!("h{h}"),
                first_node: h,
                node_count: 1,
            });
            f.nodes.push(crate::plan::Node {
                host: h,
                id: crate::units::NodeId(0),
                limit: vec![l * (2 << 20)],
                reserved: vec![0],
            });
        }
        for (i, &(h, p)) in vms.iter().enumerate() {
            f.admit(&format!("vm{i}"), &[p * (2 << 20)], Target::Node(h))
                .expect("fits");
        }
        f
    }

    #[test]
    fn guaranteed_with_witness() {
        let f = fleet(&[10, 10], &[(0, 3), (1, 4)]);
        let r = check(&f, 1, &Budget::default());
        assert_eq!(r.verdict, Verdict::Guaranteed);
        assert_eq!(r.scenarios.len(), 2);
        for s in &r.scenarios {
            let Outcome::Guaranteed { witness, .. } = &s.outcome else {
                panic!("{s:?}")
            };
            verify_witness(&f, &s.failed, witness).unwrap();
        }
    }

    #[test]
    fn shortfall_is_proven() {
        let f = fleet(&[10, 10], &[(0, 8), (1, 4)]);
        let r = check(&f, 1, &Budget::default());
        assert_eq!(r.verdict, Verdict::Impossible);
        assert!(matches!(
            r.scenarios[0].outcome,
            Outcome::Impossible {
                proof: Proof::ClassShortfall { .. }
            }
        ));
    }

    /// Survivors of 10 and 10 pages; host 0 runs 4,4,3,3,3,3. First-fit and best-fit
    /// decreasing both put the 4s together and strand a 3; 4+3+3 twice fits.
    fn ffd_trap() -> Fleet {
        fleet(
            &[20, 10, 10],
            &[(0, 4), (0, 4), (0, 3), (0, 3), (0, 3), (0, 3)],
        )
    }

    #[test]
    fn exact_search_settles_what_heuristics_miss() {
        let f = ffd_trap();
        let r = check(&f, 1, &Budget::default());
        let s = &r.scenarios[0];
        let Outcome::Guaranteed { method, witness } = &s.outcome else {
            panic!("{s:?}")
        };
        assert_eq!(*method, Method::Exact);
        verify_witness(&f, &s.failed, witness).unwrap();
        assert_eq!(r.verdict, Verdict::Guaranteed);
    }

    #[test]
    fn out_of_budget_is_not_proven() {
        let b = Budget {
            search_steps: 1,
            ..Budget::default()
        };
        let r = check(&ffd_trap(), 1, &b);
        assert!(
            matches!(r.scenarios[0].outcome, Outcome::NotProven { steps } if steps > 1),
            "{:?}",
            r.scenarios[0]
        );
        assert_eq!(r.verdict, Verdict::NotProven);
    }

    #[test]
    fn exhaustive_search_proves_impossible() {
        // Survivors 10 and 10; 7,5,4,4: 20 <= 20, every size bound holds, but 7 leaves a
        // gap of 3 that nothing fills.
        let f = fleet(&[20, 10, 10], &[(0, 7), (0, 5), (0, 4), (0, 4)]);
        let s = &check(&f, 1, &Budget::default()).scenarios[0];
        assert!(
            matches!(
                s.outcome,
                Outcome::Impossible {
                    proof: Proof::Exhausted { .. }
                }
            ),
            "{s:?}"
        );
    }

    #[test]
    fn fragmentation_is_proven() {
        // Survivors 10 and 10; 7,7,6: 20 <= 20 and each fits a node, but only two of them
        // find a node with 6 free.
        let f = fleet(&[20, 10, 10], &[(0, 7), (0, 7), (0, 6)]);
        let s = &check(&f, 1, &Budget::default()).scenarios[0];
        let Outcome::Impossible {
            proof: Proof::Fragmented { vms, slots, .. },
        } = s.outcome
        else {
            panic!("{s:?}")
        };
        assert_eq!((vms, slots), (3, 2));
        assert!(explain(
            &f,
            &Proof::Fragmented {
                page_size_bytes: 2 << 20,
                at_least: 6 << 21,
                vms,
                demand: 20 << 21,
                slots,
                usable: 20 << 21,
                granule: 1 << 21,
            }
        )
        .contains("at most 2 such VM(s)"));
    }

    #[test]
    fn scenario_limit_caps_the_verdict() {
        let f = fleet(&[10, 10, 10], &[]);
        let b = Budget {
            max_scenarios: 2,
            ..Budget::default()
        };
        let r = check(&f, 1, &b);
        assert_eq!((r.scenarios.len(), r.total_scenarios), (2, 3));
        assert_eq!(r.verdict, Verdict::NotProven);
    }

    #[test]
    fn binomials() {
        assert_eq!(binomial(5, 2), 10);
        assert_eq!(binomial(1000, 1), 1000);
        assert_eq!(binomial(3, 5), 0);
        assert_eq!(binomial(10_000, 5000), u64::MAX);
    }
}
