//! Exact search: branch and bound over the displaced VMs of one scenario.

use std::collections::HashSet;

use super::explain::gcd;
use super::heuristic::Checker;
use crate::plan::Target;

/// Branch and bound over the displaced VMs of one scenario, on the survivors only.
pub(super) struct Search {
    pub(super) nc: usize,
    /// The VMs to place, largest first.
    pub(super) items: Vec<usize>,
    pub(super) demand: Vec<Vec<u64>>,
    pub(super) single: Vec<bool>,
    /// Per class, demand of items `i..` (suffix sums).
    pub(super) suffix: Vec<Vec<u64>>,
    /// Survivor hosts (fleet indices) and their nodes (fleet indices).
    pub(super) hosts: Vec<usize>,
    pub(super) host_nodes: Vec<Vec<usize>>,
    /// Local state: per survivor node (flattened over `host_nodes`) and class.
    pub(super) free: Vec<Vec<Vec<u64>>>,
    pub(super) slack: Vec<Vec<u64>>,
    pub(super) choice: Vec<Option<Target>>,
    /// Per class, the greatest common divisor of all items' demands: whatever a host takes of
    /// the class is a multiple of it.
    pub(super) granule: Vec<u64>,
    pub(super) steps: u64,
    pub(super) limit: u64,
}

impl Search {
    pub(super) fn new(ck: &Checker<'_>, items: &[usize], limit: u64) -> Self {
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

    pub(super) fn tick(&mut self, n: u64) -> bool {
        self.steps = self.steps.saturating_add(n);
        self.steps <= self.limit
    }

    /// `Some(true)`: placed everything from `i` on; `Some(false)`: impossible; `None`: out
    /// of budget.
    pub(super) fn dfs(&mut self, i: usize) -> Option<bool> {
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

    pub(super) fn assignment(&self) -> Vec<(usize, Target)> {
        self.items
            .iter()
            .zip(&self.choice)
            .filter_map(|(&v, t)| t.map(|t| (v, t)))
            .collect()
    }
}
