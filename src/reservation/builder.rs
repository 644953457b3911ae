//! [`ReservationBuilder`]: what the caller asks for, and the entry points that run the steps.

use std::sync::Arc;
use std::time::Instant;

use super::{
    background, populate, preflight, HostFacts, MemPolicy, PendingReservation, Reservation,
    ReservationPlan,
};
#[cfg(doc)]
use crate::error::Error;
use crate::error::Result;
use crate::topology::Topology;
use crate::units::{NodeId, PageSize};

/// Builds a [`Reservation`]. Get one from [`Reservation::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ReservationBuilder {
    pub(super) size: u64,
    pub(super) nodes: Vec<NodeId>,
    pub(super) policy: MemPolicy,
    pub(super) page_size: PageSize,
    pub(super) threads: Option<usize>,
    pub(super) lock: bool,
    pub(super) noreserve: bool,
    pub(super) verify_limit: u64,
    pub(super) topology: Option<Topology>,
    pub(super) facts: Option<Box<HostFacts>>,
    pub(super) cpus: Option<Vec<u32>>,
    // The ledger: where to charge, and the VM's name there.
    pub(super) ledger: Option<Arc<crate::ledger::Ledger>>,
    pub(super) vm: Option<String>,
    pub(super) shared: bool,
}

impl ReservationBuilder {
    /// Binds to one node (replaces any nodes set before).
    pub fn node(mut self, node: NodeId) -> Self {
        self.nodes = vec![node];
        self
    }

    /// Sets the nodes of the policy (for `Interleave` or a multi-node `Bind`/`Preferred`).
    pub fn nodes(mut self, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        self.nodes = nodes.into_iter().collect();
        self
    }

    /// Sets the memory policy (default [`MemPolicy::Bind`]).
    pub fn policy(mut self, policy: MemPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets the page size (default [`PageSize::Auto`]).
    pub fn page_size(mut self, page_size: PageSize) -> Self {
        self.page_size = page_size;
        self
    }

    /// Sets the number of populate threads (default: every CPU this process may use on the
    /// target nodes; all allowed CPUs for CPU-less nodes).
    pub fn threads(mut self, threads: usize) -> Self {
        self.threads = Some(threads);
        self
    }

    /// Pins the populate workers to these CPUs instead of the target nodes' CPUs; without
    /// [`ReservationBuilder::threads`], one worker per CPU. E.g. one CPU per physical core
    /// (`HwlocTopology::one_cpu_per_core`, feature `hwloc`).
    pub fn cpus(mut self, cpus: impl IntoIterator<Item = u32>) -> Self {
        let mut cpus: Vec<u32> = cpus.into_iter().collect();
        cpus.sort_unstable();
        cpus.dedup();
        self.cpus = Some(cpus);
        self
    }

    /// Whether to keep the pages resident (default `true`). hugetlb pages always are.
    pub fn lock(mut self, lock: bool) -> Self {
        self.lock = lock;
        self
    }

    /// Map with `MAP_NORESERVE` (default `false`). Only for callers that handle a short pool
    /// themselves: population still reports a shortage as an error, but the kernel no longer
    /// sets pages aside at `mmap` time.
    pub fn noreserve(mut self, noreserve: bool) -> Self {
        self.noreserve = noreserve;
        self
    }

    /// Verify every page up to `pages` pages, and an even sample of `pages` pages above
    /// (default [`DEFAULT_VERIFY_LIMIT`](super::DEFAULT_VERIFY_LIMIT)).
    pub fn verify_limit(mut self, pages: u64) -> Self {
        self.verify_limit = pages.max(1);
        self
    }

    /// Uses this topology instead of reading sysfs (the other host facts are still read).
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
        self
    }

    /// Decides on these host facts instead of reading them (see [`HostFacts`]); the kernel
    /// still has the last word when the region is mapped and populated.
    pub fn facts(mut self, facts: HostFacts) -> Self {
        self.facts = Some(Box::new(facts));
        self
    }

    /// Charges the reservation to this ledger before mapping (refused with
    /// [`Error::AdmissionRefused`] if it does not fit), refunds on any failure, and holds the
    /// charge for as long as the [`Reservation`] lives.
    pub fn ledger(mut self, ledger: Arc<crate::ledger::Ledger>) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// The VM's name in the ledger. Without [`ReservationBuilder::ledger`], the host ledger
    /// ([`crate::ledger::default_path`]) is opened (created if needed).
    pub fn vm(mut self, name: impl Into<String>) -> Self {
        self.vm = Some(name.into());
        self
    }

    /// Charges the plan to the ledger, if one was asked for.
    fn charge(&self, plan: &ReservationPlan) -> Result<Option<crate::ledger::VmRecord>> {
        let ledger = match (&self.ledger, &self.vm) {
            (None, None) => return Ok(None),
            (Some(l), _) => Arc::clone(l),
            (None, Some(_)) => {
                Arc::new(crate::ledger::Ledger::open(crate::ledger::default_path())?)
            }
        };
        let name = self.vm.as_deref().unwrap_or("unnamed");
        ledger
            .try_charge_parts(name, &plan.ledger_parts()?)
            .map(Some)
    }

    /// Backs the reservation with a sealed memory file that other processes can map (default
    /// `false`): a hugetlbfs memfd for 2m/1g, a shmem memfd for 4k and THP (THP needs
    /// `/sys/kernel/mm/transparent_hugepage/shmem_enabled` to allow it). The file is sealed
    /// (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before its first page exists, then
    /// mapped, bound, populated, locked and verified as a private reservation is. Hand it on
    /// with [`Reservation::as_fd`] / [`Reservation::into_fd`]; another process takes it with
    /// [`Reservation::adopt`]. See [`crate::shared`].
    pub fn shared(mut self, shared: bool) -> Self {
        self.shared = shared;
        self
    }

    /// Decides page size, nodes and threads, and checks that the host can satisfy the request,
    /// without mapping anything. Reads the host's facts ([`HostFacts::gather`], with the
    /// topology given to [`ReservationBuilder::topology`] if any) and decides on them.
    ///
    /// # Errors
    /// [`Error::InvalidSize`], [`Error::NoNodeWithMemory`], [`Error::PopulateCpusNotAllowed`],
    /// [`Error::ZeroThreads`], [`Error::NodeAbsent`],
    /// [`Error::NodeWithoutMemory`], [`Error::HugepagesShort`],
    /// [`Error::HugepagesShortOnNodes`], [`Error::NodeMemoryShort`], [`Error::CgroupLimit`],
    /// [`Error::MemlockLimit`], [`Error::ThpUnavailable`], [`Error::NodesNotAllowed`],
    /// [`Error::Unsupported`], or a sysfs error.
    pub fn preflight(&self) -> Result<ReservationPlan> {
        if let Some(f) = &self.facts {
            return preflight::preflight(self, f);
        }
        let facts = HostFacts::gather(self.topology.clone())?;
        preflight::preflight(self, &facts)
    }

    /// The preflight's decision on these facts instead of the host's: reads nothing, so the
    /// same facts give the same plan or error (to replay a decision, or to ask "what if").
    ///
    /// # Errors
    /// As [`ReservationBuilder::preflight`], except sysfs errors.
    pub fn preflight_on(&self, facts: &HostFacts) -> Result<ReservationPlan> {
        preflight::preflight(self, facts)
    }

    /// Reserves the memory: preflight, map, bind, populate, lock, verify.
    ///
    /// # Errors
    /// Every error of [`ReservationBuilder::preflight`], and [`Error::Populate`],
    /// [`Error::Misplaced`], [`Error::PolicyDenied`], [`Error::HugepagesShort`] when the kernel
    /// finds the pool short after all, or [`Error::Sys`]. Nothing stays mapped after an error.
    pub fn build(self) -> Result<Reservation> {
        let t0 = Instant::now();
        let plan = self.preflight()?;
        let charge = self.charge(&plan)?;
        let preflight_seconds = t0.elapsed().as_secs_f64();
        // On error `charge` drops here: the refund.
        let mut r = populate::build(plan, preflight_seconds)?;
        if let Some(c) = &charge {
            c.set_populated(r.map.len as u64);
        }
        r.charge = charge;
        Ok(r)
    }

    /// Like [`ReservationBuilder::build`], but returns as soon as the memory is mapped, bound
    /// and locked; population and verification continue in background threads. Call
    /// [`PendingReservation::wait`] for the verified [`Reservation`].
    ///
    /// # Errors
    /// Every error [`ReservationBuilder::build`] returns before population; population and
    /// verification errors come from [`PendingReservation::wait`].
    pub fn build_background(self) -> Result<PendingReservation> {
        let t0 = Instant::now();
        let plan = self.preflight()?;
        let charge = self.charge(&plan)?;
        let preflight_seconds = t0.elapsed().as_secs_f64();
        background::start(plan, charge, preflight_seconds)
    }
}
