//! The answer of an N+k check: verdicts, placements, proofs, scenarios.

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
            max_scenarios: 1_000_000,
            keep_witnesses: 10_000,
        }
    }
}

/// The answer for a scenario or a whole report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
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
    /// Node index in [`Fleet::nodes`](crate::plan::Fleet::nodes).
    pub node: usize,
    /// Class index in [`Fleet::classes`](crate::plan::Fleet::classes).
    pub class: usize,
    /// Bytes placed there.
    pub bytes: u64,
}

/// Where one displaced VM goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Move {
    /// VM index in [`Fleet::vms`](crate::plan::Fleet::vms).
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
    /// The union of the failed hosts' single-host placements (each host's VMs placed alone,
    /// first-fit over the hosts after it), which touch none of the failed hosts and together
    /// fit every node: no search needed.
    Composed,
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
        /// VM index in [`Fleet::vms`](crate::plan::Fleet::vms).
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
pub enum ScenarioOutcome {
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

impl ScenarioOutcome {
    /// The verdict of this outcome.
    pub fn verdict(&self) -> Verdict {
        match self {
            ScenarioOutcome::Guaranteed { .. } => Verdict::Guaranteed,
            ScenarioOutcome::Impossible { .. } => Verdict::Impossible,
            ScenarioOutcome::NotProven { .. } => Verdict::NotProven,
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
    pub outcome: ScenarioOutcome,
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
    /// The scenarios evaluated (all of them unless more than [`Budget::max_scenarios`]),
    /// except guaranteed ones beyond the first [`Budget::keep_witnesses`], which are only
    /// counted in `unlisted_guaranteed` (N+2 over 1,000 hosts has 499,500 scenarios).
    pub scenarios: Vec<Scenario>,
    /// Guaranteed scenarios evaluated but not listed in `scenarios`.
    pub unlisted_guaranteed: u64,
    /// The overall answer.
    pub verdict: Verdict,
}
