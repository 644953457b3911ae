//! The plan report: everything `numapin plan` answers about a fleet, with hosts, nodes and VMs
//! by name, ready to serialize (feature `serde`) or render.
//!
//! [`plan`] runs the N+k check and, as asked in [`PlanOptions`], headroom, right-sizing, the HA
//! comparison, the what-if placement of a new VM under every policy and the failover
//! hold-back. The command-line tool only parses its arguments, calls [`plan`] and renders the
//! [`PlanReport`].

use super::failover::{self, explain, Budget, FailoverReport, Method, Proof, ScenarioOutcome};
use super::{ha, headroom, holdback, policy, rightsize, sat_sum, Fleet, Target, Verdict};
use crate::error::{Error, Result};
use crate::units::NodeId;

/// What [`plan`] computes besides the N+k check.
#[derive(Debug, Clone, PartialEq)]
pub struct PlanOptions {
    /// Hosts failing together (N+k).
    pub k: usize,
    /// Limits of the check.
    pub budget: Budget,
    /// The largest admissible VM of this page-size class (bytes), if asked.
    pub headroom: Option<u64>,
    /// Whether new VMs (headroom, placement) must sit on one node.
    pub single_node: bool,
    /// VMs whose guest peak is at most this share of their allocation, if asked.
    pub rightsize: Option<f64>,
    /// Compare with VMware HA's slot and percentage policies.
    pub ha: bool,
    /// Place a new VM of `(bytes, page_size_bytes)` under every policy, if asked.
    pub place: Option<(u64, u64)>,
    /// Compute the failover hold-back per host, node and class.
    pub holdback: bool,
    /// List each scenario's displaced VMs and placement by name (what JSON and `--witness`
    /// show); without, scenarios carry only counts, which saves most of the naming work on
    /// large fleets.
    pub details: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            k: 1,
            budget: Budget::default(),
            headroom: None,
            single_node: true,
            rightsize: None,
            ha: false,
            place: None,
            holdback: false,
            details: true,
        }
    }
}

/// The answer of [`plan`].
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlanReport {
    /// The fleet's size and its totals per class.
    pub summary: FleetSummary,
    /// The N+k check.
    pub failover: FailoverSummary,
    /// The headroom answer, if asked.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub headroom: Option<HeadroomReport>,
    /// The right-sizing answer, if asked.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub rightsize: Option<RightsizeReport>,
    /// The HA comparison, if asked.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub ha: Option<ha::HaComparison>,
    /// The what-if placement, if asked.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub placement: Option<PlacementReport>,
    /// The failover hold-back, if asked.
    #[cfg_attr(feature = "serde", serde(skip_serializing_if = "Option::is_none"))]
    pub holdback: Option<holdback::Holdback>,
}

/// The fleet's size and per-class totals.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FleetSummary {
    /// Hosts.
    pub hosts: usize,
    /// NUMA nodes, all hosts together.
    pub nodes: usize,
    /// VMs.
    pub vms: usize,
    /// Per class, ascending page size.
    pub classes: Vec<ClassTotals>,
}

/// One class summed over the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ClassTotals {
    /// The class's page size.
    pub page_size_bytes: u64,
    /// Sum of the limits.
    pub limit_bytes: u64,
    /// Sum of what is reserved.
    pub reserved_bytes: u64,
    /// Sum of the free bytes (whole pages per node).
    pub free_bytes: u64,
}

/// The N+k check with names.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct FailoverSummary {
    /// Hosts failing together.
    pub k: usize,
    /// The overall answer.
    pub verdict: Verdict,
    /// Scenarios in total (`C(hosts, k)`).
    pub total_scenarios: u64,
    /// Scenarios evaluated.
    pub evaluated_scenarios: u64,
    /// Guaranteed scenarios evaluated but not listed (beyond the budget's witnesses).
    pub unlisted_guaranteed: u64,
    /// The evaluated scenarios.
    pub scenarios: Vec<NamedScenario>,
}

/// One scenario with names.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NamedScenario {
    /// The failed hosts.
    pub failed: Vec<String>,
    /// The VMs to re-place (empty without [`PlanOptions::details`]).
    pub displaced: Vec<String>,
    /// How many VMs there are to re-place.
    pub displaced_vms: usize,
    /// What they need, all classes together.
    pub demand_bytes: u64,
    /// Whether a guaranteed outcome kept its witness.
    pub witness_kept: bool,
    /// The answer.
    #[cfg_attr(feature = "serde", serde(flatten))]
    pub outcome: NamedOutcome,
}

/// A scenario's answer with names (JSON: a `verdict` key and the variant's fields).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(tag = "verdict", rename_all = "snake_case"))]
pub enum NamedOutcome {
    /// Every displaced VM has a place.
    Guaranteed {
        /// How the placement was found.
        method: Method,
        /// Where each displaced VM goes (empty when witnesses were not kept).
        moves: Vec<NamedMove>,
    },
    /// No placement exists.
    Impossible {
        /// Why.
        proof: Proof,
        /// The proof in one sentence.
        explanation: String,
    },
    /// Neither found within the budget.
    NotProven {
        /// Work units the exact search spent.
        search_steps: u64,
    },
}

impl NamedOutcome {
    /// Its verdict.
    pub fn verdict(&self) -> Verdict {
        match self {
            NamedOutcome::Guaranteed { .. } => Verdict::Guaranteed,
            NamedOutcome::Impossible { .. } => Verdict::Impossible,
            NamedOutcome::NotProven { .. } => Verdict::NotProven,
        }
    }
}

/// Where one displaced VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NamedMove {
    /// The VM.
    pub vm: String,
    /// Its pieces.
    pub parts: Vec<NamedPart>,
}

/// One piece of a re-placed VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NamedPart {
    /// The host.
    pub host: String,
    /// The node on it.
    pub node: NodeId,
    /// The class.
    pub page_size_bytes: u64,
    /// Bytes.
    pub bytes: u64,
}

/// The headroom answer with names.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HeadroomReport {
    /// The class's page size.
    pub page_size_bytes: u64,
    /// Whether the VM must sit on one node.
    pub single_node: bool,
    /// Hosts failing together.
    pub k: usize,
    /// The largest size found admissible (0 when none is).
    pub admissible_bytes: u64,
    /// Where it goes (`host/nodeN` or `host`).
    pub target: Option<String>,
    /// No VM larger than this fits anywhere now.
    pub upper_bound_bytes: u64,
    /// N+k checks run.
    pub checks: u64,
}

/// The right-sizing answer with names.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct RightsizeReport {
    /// A VM is a candidate when its peak is at most this share of its allocation.
    pub ratio: f64,
    /// The rule's margin over the peak, in parts per million.
    pub margin_ppm: u64,
    /// Bytes all candidates together would free.
    pub freed_bytes: u64,
    /// VMs without a known peak.
    pub unknown_peak: usize,
    /// The candidates, most bytes freed first.
    pub candidates: Vec<NamedCandidate>,
}

/// One right-sizing candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NamedCandidate {
    /// The VM.
    pub vm: String,
    /// Its host.
    pub host: String,
    /// What it has reserved.
    pub allocated_bytes: u64,
    /// The guest's peak.
    pub peak_bytes: u64,
    /// The suggested allocation.
    pub suggested_bytes: u64,
    /// `allocated - suggested`.
    pub freed_bytes: u64,
}

/// The what-if placement of a new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PlacementReport {
    /// Its size.
    pub bytes: u64,
    /// Its class.
    pub page_size_bytes: u64,
    /// Whether it must sit on one node.
    pub single_node: bool,
    /// What each policy does with it.
    pub policies: Vec<PolicyPlacement>,
}

/// Where one policy puts the new VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct PolicyPlacement {
    /// The policy.
    pub policy: policy::Policy,
    /// Where it goes (`None`: it fits nowhere).
    pub target: Option<String>,
    /// The N+k verdict with the VM admitted there.
    pub verdict_after: Option<Verdict>,
}

/// `host/nodeN`.
pub fn node_name(f: &Fleet, n: usize) -> String {
    let node = &f.nodes[n];
    format!("{}/node{}", f.hosts[node.host].name, node.id)
}

/// `host/nodeN` for a node target, `host` for a host target.
pub fn target_name(f: &Fleet, t: Target) -> String {
    match t {
        Target::Node(n) => node_name(f, n),
        Target::Host(h) => f.hosts[h].name.clone(),
    }
}

fn named_outcome(f: &Fleet, o: &ScenarioOutcome, details: bool) -> NamedOutcome {
    match o {
        ScenarioOutcome::Guaranteed { method, witness } => NamedOutcome::Guaranteed {
            method: *method,
            moves: witness[..if details { witness.len() } else { 0 }]
                .iter()
                .map(|m| NamedMove {
                    vm: f.vms[m.vm].name.clone(),
                    parts: m
                        .parts
                        .iter()
                        .map(|p| NamedPart {
                            host: f.hosts[f.nodes[p.node].host].name.clone(),
                            node: f.nodes[p.node].id,
                            page_size_bytes: f.classes[p.class],
                            bytes: p.bytes,
                        })
                        .collect(),
                })
                .collect(),
        },
        ScenarioOutcome::Impossible { proof } => NamedOutcome::Impossible {
            proof: proof.clone(),
            explanation: explain(f, proof),
        },
        ScenarioOutcome::NotProven { steps } => NamedOutcome::NotProven {
            search_steps: *steps,
        },
    }
}

/// The N+k report with names; `details`: see [`PlanOptions::details`].
pub fn name_failover(f: &Fleet, r: &FailoverReport, details: bool) -> FailoverSummary {
    FailoverSummary {
        k: r.k,
        verdict: r.verdict,
        total_scenarios: r.total_scenarios,
        evaluated_scenarios: r.scenarios.len() as u64 + r.unlisted_guaranteed,
        unlisted_guaranteed: r.unlisted_guaranteed,
        scenarios: r
            .scenarios
            .iter()
            .map(|s| NamedScenario {
                failed: s.failed.iter().map(|&h| f.hosts[h].name.clone()).collect(),
                displaced: if details {
                    s.displaced.iter().map(|&v| f.vms[v].name.clone()).collect()
                } else {
                    Vec::new()
                },
                displaced_vms: s.displaced.len(),
                demand_bytes: s.demand_bytes,
                witness_kept: s.witness_kept,
                outcome: named_outcome(f, &s.outcome, details),
            })
            .collect(),
    }
}

/// The fleet's size and per-class totals.
pub fn summary(f: &Fleet) -> FleetSummary {
    FleetSummary {
        hosts: f.hosts.len(),
        nodes: f.nodes.len(),
        vms: f.vms.len(),
        classes: f
            .classes
            .iter()
            .enumerate()
            .map(|(c, &p)| ClassTotals {
                page_size_bytes: p,
                limit_bytes: sat_sum(f.nodes.iter().map(|n| n.limit[c])),
                reserved_bytes: sat_sum(f.nodes.iter().map(|n| n.reserved[c])),
                free_bytes: sat_sum((0..f.nodes.len()).map(|n| f.free(n, c))),
            })
            .collect(),
    }
}

fn offered(f: &Fleet, option: &'static str, page_size_bytes: u64) -> Result<usize> {
    f.class_index(page_size_bytes)
        .ok_or(Error::ClassNotOffered {
            option,
            page_size_bytes,
        })
}

/// Plans on `fleet`: the N+k check and whatever `opts` asks for.
///
/// # Errors
/// [`Error::ClassNotOffered`] when `--headroom` or `--place` names a page-size class no host of
/// the fleet offers.
pub fn plan(fleet: &Fleet, opts: &PlanOptions) -> Result<PlanReport> {
    // Check the options before the (possibly long) N+k check.
    if let Some(class) = opts.headroom {
        offered(fleet, "--headroom", class)?;
    }
    if let Some((_, class)) = opts.place {
        offered(fleet, "--place", class)?;
    }
    let report = failover::check(fleet, opts.k, &opts.budget);
    let headroom = opts.headroom.map(|class| {
        let h = headroom::headroom(fleet, class, opts.single_node, opts.k, 8, &opts.budget);
        HeadroomReport {
            page_size_bytes: h.page_size_bytes,
            single_node: h.single_node,
            k: h.k,
            admissible_bytes: h.admissible_bytes,
            target: h.target.map(|t| target_name(fleet, t)),
            upper_bound_bytes: h.upper_bound_bytes,
            checks: h.checks,
        }
    });
    let rightsize = opts.rightsize.map(|ratio| {
        let rule = rightsize::Rule {
            ratio,
            ..rightsize::Rule::default()
        };
        let r = rightsize::rightsize(fleet, &rule);
        RightsizeReport {
            ratio,
            margin_ppm: rule.margin_ppm,
            freed_bytes: r.freed_bytes,
            unknown_peak: r.unknown_peak,
            candidates: r
                .candidates
                .iter()
                .map(|c| NamedCandidate {
                    vm: fleet.vms[c.vm].name.clone(),
                    host: fleet.hosts[fleet.vms[c.vm].host].name.clone(),
                    allocated_bytes: c.allocated_bytes,
                    peak_bytes: c.peak_bytes,
                    suggested_bytes: c.suggested_bytes,
                    freed_bytes: c.freed_bytes,
                })
                .collect(),
        }
    });
    let ha = opts.ha.then(|| ha::compare(fleet, opts.k, &opts.budget));
    let placement = match opts.place {
        None => None,
        Some((bytes, class)) => {
            let ci = offered(fleet, "--place", class)?;
            let mut demand = vec![0u64; fleet.classes.len()];
            demand[ci] = bytes;
            let policies = policy::Policy::ALL
                .iter()
                .map(|&pol| {
                    let t = policy::choose(fleet, &demand, opts.single_node, pol);
                    PolicyPlacement {
                        policy: pol,
                        target: t.map(|t| target_name(fleet, t)),
                        verdict_after: t.map(|t| {
                            policy::verdict_after(fleet, &report, &demand, t, &opts.budget)
                        }),
                    }
                })
                .collect();
            Some(PlacementReport {
                bytes,
                page_size_bytes: class,
                single_node: opts.single_node,
                policies,
            })
        }
    };
    let holdback = opts
        .holdback
        .then(|| holdback::holdback(fleet, opts.k, &opts.budget));
    Ok(PlanReport {
        summary: summary(fleet),
        failover: name_failover(fleet, &report, opts.details),
        headroom,
        rightsize,
        ha,
        placement,
        holdback,
    })
}
