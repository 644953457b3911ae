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
//!    [`ScenarioOutcome::Guaranteed`].
//! 2. **Proofs of impossibility** that cost nothing: no survivors; per class, the displaced
//!    VMs need more than all survivors have free ([`Proof::ClassShortfall`]); a VM fits on no
//!    surviving node (single-node VMs) or host ([`Proof::DoesNotFit`]).
//! 3. **Exact search** (branch and bound over VMs largest first, with hosts and nodes in the
//!    same state tried once, and a per-class capacity bound), limited by
//!    [`Budget::search_steps`]. It finds a placement ([`ScenarioOutcome::Guaranteed`]), or exhausts the
//!    space ([`Proof::Exhausted`]: impossible), or runs out of budget
//!    ([`ScenarioOutcome::NotProven`]).
//!
//! The verdict of a report is `Impossible` if any scenario is, else `NotProven` if any is (or
//! some scenarios were not evaluated because there were more than
//! [`Budget::max_scenarios`]), else `Guaranteed`.
//!
//! Files: `report` (the answer's types), `heuristic` (first/best-fit and the shared scratch
//! state), `proof` (cheap impossibility proofs), `search` (branch and bound), `verify`
//! (witness checking), `explain` (proofs in words).

mod explain;
mod heuristic;
mod proof;
mod report;
mod search;
mod verify;

pub use explain::explain;
pub use report::{
    Budget, FailoverReport, Method, Move, Part, Proof, Scenario, ScenarioOutcome, Verdict,
};
pub use verify::verify_witness;

use heuristic::Checker;
pub use heuristic::SPREAD_HOSTS;
use search::Search;

use super::Fleet;
use crate::error::Result;
use crate::snapshot::Snapshot;

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
    let mut scenarios = Vec::new();
    let mut unlisted = 0u64;
    let (k, total, verdict) = for_each_scenario(fleet, k, budget, budget.keep_witnesses, |sc| {
        let listed = (scenarios.len() as u64) < budget.keep_witnesses
            || sc.outcome.verdict() != Verdict::Guaranteed;
        if listed {
            scenarios.push(sc);
        } else {
            unlisted += 1;
        }
    });
    FailoverReport {
        k,
        total_scenarios: total,
        scenarios,
        unlisted_guaranteed: unlisted,
        verdict,
    }
}

/// Checks every scenario of N+k like [`check`] but hands each [`Scenario`] to `visit` instead
/// of keeping it; the first `witnesses` scenarios (in order) carry their witness, later
/// guaranteed ones may come with an empty one (`witness_kept: false`). Returns
/// `(k, total scenarios, verdict)`, `k` capped at the number of hosts.
///
/// For `k >= 2` each scenario is first tried by composition ([`Method::Composed`]): every host
/// gets one placement of its own VMs alone, first-fit over the hosts after it in circular
/// order (so different hosts' placements mostly land on different hosts); a scenario whose
/// failed hosts' placements avoid all of the failed hosts and together fit every node's free
/// capacity is guaranteed by their union, without a search. Scenarios that do not compose are
/// checked in full. On roomy fleets almost all compose, which is what makes N+2 over 1,000
/// hosts (499,500 scenarios) take about as long as a few thousand full checks.
pub fn for_each_scenario<F: FnMut(Scenario)>(
    fleet: &Fleet,
    k: usize,
    budget: &Budget,
    witnesses: u64,
    visit: F,
) -> (usize, u64, Verdict) {
    for_each_scenario_spread(fleet, k, budget, witnesses, 1, visit)
}

/// [`for_each_scenario`] with the single-host placements of composition dealt round-robin
/// over `spread` hosts (see [`SPREAD_HOSTS`]): fewer scenarios compose, but each placement
/// takes less of any one node, which is what the hold-back needs.
pub fn for_each_scenario_spread<F: FnMut(Scenario)>(
    fleet: &Fleet,
    k: usize,
    budget: &Budget,
    witnesses: u64,
    spread: usize,
    mut visit: F,
) -> (usize, u64, Verdict) {
    let n = fleet.hosts.len();
    let k = k.min(n);
    let total = binomial(n, k);
    let mut ck = Checker::new(fleet);
    let mut comp = (k >= 2).then(|| Composer::new(&mut ck, spread));
    let mut idx: Vec<usize> = (0..k).collect();
    let mut evaluated = 0u64;
    let mut verdict = Verdict::Guaranteed;
    loop {
        if evaluated >= budget.max_scenarios {
            break;
        }
        let want = evaluated < witnesses;
        let sc = match comp.as_mut().and_then(|c| c.compose(&ck, &idx, want)) {
            Some(sc) => sc,
            None => {
                let mut sc = ck.scenario(&idx, budget);
                if !want {
                    if let ScenarioOutcome::Guaranteed { witness, .. } = &mut sc.outcome {
                        *witness = Vec::new();
                        sc.witness_kept = false;
                    }
                }
                sc
            }
        };
        verdict = verdict.max(sc.outcome.verdict());
        visit(sc);
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
    if evaluated < total && verdict == Verdict::Guaranteed {
        verdict = Verdict::NotProven;
    }
    (k, total, verdict)
}

/// How many composed witnesses one check re-verifies with [`verify_witness`]'s checker.
const COMPOSED_VERIFIED: u64 = 10_000;

/// Each host's placement of its own VMs alone, and what it uses, for composing scenarios.
struct Composer {
    /// Per host: its placement (`None`: it found none).
    moves: Vec<Option<Vec<Move>>>,
    /// Per host: (node, class, bytes) its placement uses, summed per (node, class).
    usage: Vec<Vec<(usize, usize, u64)>>,
    /// Per host: its VMs' total demand.
    demand: Vec<u64>,
    /// Scratch: bytes used per node and class, and which entries are non-zero.
    used: Vec<u64>,
    touched: Vec<usize>,
    failed: Vec<bool>,
    /// Composed witnesses still to re-verify independently (the composition check is itself
    /// a capacity proof; the first ones are verified as for every heuristic witness, the rest
    /// are not, so that the hold-back's 499,500 witnesses at N+2 do not cost a verification
    /// each).
    verify_left: u64,
}

impl Composer {
    fn new(ck: &mut Checker<'_>, spread: usize) -> Composer {
        let fleet = ck.fleet;
        let nc = ck.nc;
        let nh = fleet.hosts.len();
        let mut moves = Vec::with_capacity(nh);
        let mut usage = Vec::with_capacity(nh);
        let mut demand = Vec::with_capacity(nh);
        for h in 0..nh {
            let m = ck.spread_witness(h, spread);
            let mut u: Vec<(usize, usize, u64)> = Vec::new();
            for p in m.iter().flatten().flat_map(|mv| &mv.parts) {
                match u.iter_mut().find(|x| x.0 == p.node && x.1 == p.class) {
                    Some(x) => x.2 = x.2.saturating_add(p.bytes),
                    None => u.push((p.node, p.class, p.bytes)),
                }
            }
            usage.push(u);
            moves.push(m);
            demand.push(
                ck.vms_of_host[h]
                    .iter()
                    .fold(0u64, |a, &v| a.saturating_add(fleet.vms[v].total())),
            );
        }
        Composer {
            moves,
            usage,
            demand,
            used: vec![0; fleet.nodes.len() * nc],
            touched: Vec::new(),
            failed: vec![false; nh],
            verify_left: COMPOSED_VERIFIED,
        }
    }

    /// The scenario `failed` by composition, or `None` when the placements do not compose.
    fn compose(&mut self, ck: &Checker<'_>, failed: &[usize], witness: bool) -> Option<Scenario> {
        let fleet = ck.fleet;
        let nc = ck.nc;
        // Every host failed: nothing to compose (a VM that needs no bytes still needs a host).
        if failed.len() >= self.moves.len()
            || failed
                .iter()
                .any(|&h| h >= self.moves.len() || self.moves[h].is_none())
        {
            return None;
        }
        for &h in failed {
            self.failed[h] = true;
        }
        let mut ok = true;
        'hosts: for &h in failed {
            for &(n, c, b) in &self.usage[h] {
                if self.failed[fleet.nodes[n].host] {
                    ok = false;
                    break 'hosts;
                }
                let i = n * nc + c;
                if self.used[i] == 0 {
                    self.touched.push(i);
                }
                self.used[i] = self.used[i].saturating_add(b);
                if self.used[i] > ck.free0[i] {
                    ok = false;
                    break 'hosts;
                }
            }
        }
        for &i in &self.touched {
            self.used[i] = 0;
        }
        self.touched.clear();
        for &h in failed {
            self.failed[h] = false;
        }
        if !ok {
            return None;
        }
        let mut displaced: Vec<usize> = failed
            .iter()
            .flat_map(|&h| ck.vms_of_host[h].iter().copied())
            .collect();
        displaced.sort_unstable();
        let moves = if witness {
            let mut all: Vec<Move> = failed
                .iter()
                .flat_map(|&h| self.moves[h].iter().flatten().cloned())
                .collect();
            all.sort_by_key(|m| m.vm);
            // Belt and braces, as for heuristic witnesses, for the first ones.
            if self.verify_left > 0 {
                self.verify_left -= 1;
                if verify::verify_moves(fleet, failed, &displaced, &all).is_err() {
                    return None;
                }
            }
            all
        } else {
            Vec::new()
        };
        Some(Scenario {
            failed: failed.to_vec(),
            demand_bytes: failed
                .iter()
                .fold(0u64, |a, &h| a.saturating_add(self.demand[h])),
            displaced,
            outcome: ScenarioOutcome::Guaranteed {
                method: Method::Composed,
                witness: moves,
            },
            witness_kept: witness,
        })
    }
}

/// Re-checks N+k on `fleet` after a change confined to host `changed` that only *adds* load
/// (VMs or reservations added there, new VMs appended at the end of [`Fleet::vms`](crate::plan::Fleet::vms)), reusing
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
        && base.unlisted_guaranteed == 0
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
                ScenarioOutcome::Guaranteed { witness, .. } => {
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
pub fn exact(fleet: &Fleet, failed: &[usize], budget: &Budget) -> ScenarioOutcome {
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
        return ScenarioOutcome::Guaranteed {
            method: Method::Exact,
            witness: Vec::new(),
        };
    }
    if failed.len() >= fleet.hosts.len() {
        return ScenarioOutcome::Impossible {
            proof: Proof::NoSurvivors,
        };
    }
    if items.len() > MAX_EXACT_ITEMS {
        return ScenarioOutcome::NotProven { steps: 0 };
    }
    for &h in &failed {
        ck.failed[h] = true;
    }
    let mut s = Search::new(&ck, &items, budget.search_steps);
    let found = s.dfs(0);
    let steps = s.steps;
    let assign = s.assignment();
    match found {
        Some(true) => ScenarioOutcome::Guaranteed {
            method: Method::Exact,
            witness: ck.witness(&assign),
        },
        Some(false) => ScenarioOutcome::Impossible {
            proof: Proof::Exhausted { steps },
        },
        None => ScenarioOutcome::NotProven { steps },
    }
}

/// Checks one scenario: the hosts in `failed` are gone.
pub fn scenario(fleet: &Fleet, failed: &[usize], budget: &Budget) -> Scenario {
    Checker::new(fleet).scenario(failed, budget)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Fleet, Target};

    /// Two hosts of one node each, 2M class only, limits in pages.
    fn fleet(limits: &[u64], vms: &[(usize, u64)]) -> Fleet {
        let mut f = Fleet {
            classes: vec![2 << 20],
            ..Fleet::default()
        };
        for (h, &l) in limits.iter().enumerate() {
            f.hosts.push(crate::plan::Host {
                name: format!("h{h}"),
                host_id: String::new(),
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
            let ScenarioOutcome::Guaranteed { witness, .. } = &s.outcome else {
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
            ScenarioOutcome::Impossible {
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
        let ScenarioOutcome::Guaranteed { method, witness } = &s.outcome else {
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
            matches!(r.scenarios[0].outcome, ScenarioOutcome::NotProven { steps } if steps > 1),
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
                ScenarioOutcome::Impossible {
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
        let ScenarioOutcome::Impossible {
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
