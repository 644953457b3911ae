//! Cheap proofs that no placement exists.

use super::explain::gcd;
use super::heuristic::Checker;
use super::{Proof, ScenarioOutcome};
use crate::plan::sat_sum;

impl Checker<'_> {
    /// Cheap proofs that no placement exists.
    pub(super) fn prove_impossible(
        &self,
        failed: &[usize],
        items: &[usize],
    ) -> Option<ScenarioOutcome> {
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
                return Some(ScenarioOutcome::Impossible {
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
                return Some(ScenarioOutcome::Impossible {
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
                    return Some(ScenarioOutcome::Impossible {
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
}
