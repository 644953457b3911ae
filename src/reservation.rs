//! Reservations: guest memory that is mapped, bound to NUMA nodes, populated in parallel,
//! locked and verified before anyone uses it.
//!
//! The steps run in this order, each for a reason (see `docs/design.md`):
//! 1. **preflight**: node exists and has memory, pools/memory/memlock suffice, cpuset allows the
//!    nodes — so most failures are reported before anything is touched;
//! 2. **map**: hugetlb is mapped from a short-lived thread that holds `MPOL_BIND` to the target
//!    nodes, so the kernel's reservation counts the pools of those nodes only;
//! 3. **bind**: `mbind(MPOL_MF_STRICT | MPOL_MF_MOVE)` before any page exists;
//! 4. **advise**: `MADV_DONTDUMP`, `MADV_DONTFORK`, `MADV_UNMERGEABLE`, and `MADV_HUGEPAGE` for THP;
//! 5. **lock**: `mlock2(MLOCK_ONFAULT)` for base pages, so population stays parallel;
//! 6. **populate**: parallel `MADV_POPULATE_WRITE`, workers pinned to the node's CPUs;
//! 7. **verify**: `move_pages(2)` on every page (or an even sample above a limit).
//!
//! Every error after step 2 unmaps the region (RAII), which returns pool pages and unlocks.

use std::collections::BTreeMap;
use std::fmt;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use crate::error::{Error, PolicyDenial, Result};
use crate::populate::{self, Histogram};
use crate::sys::{self, Backing, NodeMask};
use crate::topology::{format_cpulist, ThpMode, Topology};
use crate::units::{format_bytes, NodeId, PageSize};

/// How pages are spread over the nodes given to the builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum MemPolicy {
    /// Every page on one of the nodes, or an error (`MPOL_BIND`). The default.
    #[default]
    Bind,
    /// On the node(s) if they have room, elsewhere otherwise (`MPOL_PREFERRED`, or
    /// `MPOL_PREFERRED_MANY` for several nodes). The report says where pages went.
    Preferred,
    /// Pages spread round-robin over the nodes (`MPOL_INTERLEAVE`).
    Interleave,
}

impl MemPolicy {
    /// The name used on the command line (`bind`, `preferred`, `interleave`).
    pub fn name(self) -> &'static str {
        match self {
            MemPolicy::Bind => "bind",
            MemPolicy::Preferred => "preferred",
            MemPolicy::Interleave => "interleave",
        }
    }
}

impl std::str::FromStr for MemPolicy {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "bind" => Ok(MemPolicy::Bind),
            "preferred" => Ok(MemPolicy::Preferred),
            "interleave" => Ok(MemPolicy::Interleave),
            o => Err(format!(
                "unknown policy {o:?}: expected bind, preferred or interleave"
            )),
        }
    }
}

/// How the region's pages are kept resident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum LockKind {
    /// Locked with `mlock2` (base pages and THP).
    Mlock,
    /// hugetlb pages: never swapped or reclaimed, so no `mlock` is needed (and none is done:
    /// it would only be charged against `RLIMIT_MEMLOCK`).
    Hugetlb,
    /// Not locked (the caller asked for `lock(false)`).
    None,
}

/// Above this many pages, placement is verified on an even sample of this many pages instead
/// of on every page (4 GiB of 4 KiB pages, 2 TiB of 2 MiB pages).
pub const DEFAULT_VERIFY_LIMIT: u64 = 1 << 20;

/// Builds a [`Reservation`]. Get one from [`Reservation::builder`].
#[derive(Debug, Clone)]
#[must_use = "a builder does nothing until build() is called"]
pub struct ReservationBuilder {
    size: u64,
    nodes: Vec<NodeId>,
    policy: MemPolicy,
    page_size: PageSize,
    threads: Option<usize>,
    lock: bool,
    noreserve: bool,
    verify_limit: u64,
    topology: Option<Topology>,
    cpus: Option<Vec<u32>>,
    // Ledger (issue 3): where to charge, and the VM's name there.
    ledger: Option<Arc<crate::ledger::Ledger>>,
    vm: Option<String>,
}

/// What the preflight decided: the concrete page size, nodes, threads and CPUs, and why.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Plan {
    /// Bytes to reserve.
    pub size: u64,
    /// The concrete page size (never `Auto`).
    pub page_size: PageSize,
    /// The page size asked for (may be `Auto`).
    pub requested_page_size: PageSize,
    /// The policy.
    pub policy: MemPolicy,
    /// The nodes of the policy.
    pub nodes: Vec<NodeId>,
    /// Populate threads.
    pub threads: usize,
    /// CPUs the populate threads are pinned to.
    pub cpus: Vec<u32>,
    /// How the pages stay resident.
    pub lock: LockKind,
    /// Whether `MAP_NORESERVE` was asked for.
    pub noreserve: bool,
    /// Verify every page up to this many pages, a sample of this many above.
    pub verify_limit: u64,
    /// Why things were chosen as they were (Auto fallbacks, CPU choice, defaults).
    pub notes: Vec<String>,
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        writeln!(
            f,
            "preflight passed: the host can hold this reservation now"
        )?;
        writeln!(f, "  {:<14} {}", "size", format_bytes(self.size))?;
        writeln!(
            f,
            "  {:<14} {} (asked: {})",
            "page size", self.page_size, self.requested_page_size
        )?;
        writeln!(
            f,
            "  {:<14} {} {}",
            "policy",
            self.policy.name(),
            nodes.join(",")
        )?;
        writeln!(f, "  {:<14} {:?}", "lock", self.lock)?;
        writeln!(
            f,
            "  {:<14} {} on cpus {}",
            "threads",
            self.threads,
            format_cpulist(&self.cpus)
        )?;
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

impl Plan {
    /// Pages of the native page granule (`page_size.bytes()`).
    pub fn pages(&self) -> u64 {
        self.size / self.page_size.bytes().unwrap_or(4096) as u64
    }

    /// What this plan takes from the host ledger, as `(node, page-size class, bytes)` parts
    /// ([`crate::ledger::Ledger::try_charge_parts`]): per node of the plan, its share of the
    /// size in the plan's page-size class (one node: all of it; several: an even split in
    /// whole pages, as interleave places them).
    ///
    /// # Errors
    /// [`Error::InvalidConfig`] if the page size is not concrete (`Auto`).
    pub fn ledger_parts(&self) -> Result<Vec<(NodeId, u64, u64)>> {
        let class = crate::ledger::class_of(self.page_size).ok_or_else(|| {
            Error::InvalidConfig(
                "the plan's page size must be concrete to charge the ledger".into(),
            )
        })?;
        let page = self.page_size.bytes().map_or(4096, |b| b as u64).max(1);
        let nodes = if self.nodes.is_empty() {
            vec![NodeId(0)]
        } else {
            self.nodes.clone()
        };
        let pages = self.size.div_ceil(page);
        let k = nodes.len() as u64;
        Ok(nodes
            .iter()
            .enumerate()
            .map(|(i, &node)| {
                let share = pages / k + u64::from((i as u64) < pages % k);
                (node, class, share * page)
            })
            .filter(|p| p.2 > 0)
            .collect())
    }
}

/// Where the pages of a reservation are and how long each step took.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Report {
    /// Bytes reserved.
    pub size_bytes: u64,
    /// Page size granule used, in bytes (4096 for `Transparent`; see `thp_bytes`).
    pub page_size_bytes: u64,
    /// Page size used.
    pub page_size: PageSize,
    /// Page size asked for.
    pub requested_page_size: PageSize,
    /// Memory policy.
    pub policy: MemPolicy,
    /// Nodes of the policy.
    pub nodes: Vec<NodeId>,
    /// Bytes verified on each node (node id → bytes). With sampling, the sample scaled up.
    pub placement: BTreeMap<NodeId, u64>,
    /// Pages whose node was asked of the kernel.
    pub verified_pages: u64,
    /// Pages in the region.
    pub total_pages: u64,
    /// Whether every page was checked (`false`: an even sample of `verified_pages`).
    pub verified_all: bool,
    /// Whether the pages are resident for good (mlocked, or hugetlb).
    pub locked: bool,
    /// How they are kept resident.
    pub lock: LockKind,
    /// For `Transparent`: bytes the kernel backs with huge pages (`AnonHugePages`).
    pub thp_bytes: Option<u64>,
    /// Populate threads.
    pub threads: usize,
    /// CPUs the workers were pinned to.
    pub pinned_cpus: Vec<u32>,
    /// CPUs the workers were seen running on.
    pub worker_cpus: Vec<u32>,
    /// Seconds spent in preflight (topology, checks).
    pub preflight_seconds: f64,
    /// Seconds spent mapping and binding.
    pub map_seconds: f64,
    /// Seconds spent populating.
    pub populate_seconds: f64,
    /// Seconds spent verifying placement.
    pub verify_seconds: f64,
    /// Notes: fallbacks, choices, anything a reader should know.
    pub notes: Vec<String>,
}

impl Report {
    /// Populate throughput in GiB/s.
    pub fn populate_gib_per_s(&self) -> f64 {
        if self.populate_seconds > 0.0 {
            self.size_bytes as f64 / (1u64 << 30) as f64 / self.populate_seconds
        } else {
            f64::INFINITY
        }
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let row = |f: &mut fmt::Formatter<'_>, k: &str, v: String| writeln!(f, "  {k:<14} {v}");
        writeln!(f, "reservation")?;
        row(f, "size", format_bytes(self.size_bytes))?;
        let ps = if self.requested_page_size == self.page_size {
            self.page_size.to_string()
        } else {
            format!("{} (asked: {})", self.page_size, self.requested_page_size)
        };
        row(f, "page size", ps)?;
        if let Some(t) = self.thp_bytes {
            row(
                f,
                "huge-backed",
                format!("{} of {}", format_bytes(t), format_bytes(self.size_bytes)),
            )?;
        }
        let nodes: Vec<String> = self.nodes.iter().map(|n| n.to_string()).collect();
        row(
            f,
            "policy",
            format!("{} {}", self.policy.name(), nodes.join(",")),
        )?;
        let lock = match self.lock {
            LockKind::Mlock => "yes (mlock)",
            LockKind::Hugetlb => "yes (hugetlb pages are unevictable)",
            LockKind::None => "no",
        };
        row(f, "locked", lock.into())?;
        row(
            f,
            "threads",
            format!(
                "{} pinned to cpus {} (ran on {})",
                self.threads,
                format_cpulist(&self.pinned_cpus),
                format_cpulist(&self.worker_cpus)
            ),
        )?;
        row(
            f,
            "time",
            format!(
                "preflight {:.3}s, map+bind {:.3}s, populate {:.3}s ({:.2} GiB/s), verify {:.3}s",
                self.preflight_seconds,
                self.map_seconds,
                self.populate_seconds,
                self.populate_gib_per_s(),
                self.verify_seconds
            ),
        )?;
        let how = if self.verified_all {
            format!("every page ({})", self.verified_pages)
        } else {
            format!(
                "{} of {} pages, evenly sampled",
                self.verified_pages, self.total_pages
            )
        };
        row(f, "verified", how)?;
        writeln!(f, "  placement")?;
        for (node, bytes) in &self.placement {
            let pct = 100.0 * *bytes as f64 / self.size_bytes.max(1) as f64;
            writeln!(
                f,
                "    node {node:<4} {:>12}  {pct:5.1}%",
                format_bytes(*bytes)
            )?;
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// Guest memory: mapped, bound, populated, locked and verified. Unmapped on drop.
///
/// Invariant: `ptr..ptr+len` is a private anonymous mapping created by this crate, owned by
/// this value alone, and readable and writable for as long as the value lives.
#[derive(Debug)]
pub struct Reservation {
    map: Mapping,
    report: Report,
    /// The ledger charge, released after the mapping (field order: `map` drops first).
    charge: Option<crate::ledger::VmRecord>,
}

impl Reservation {
    /// The ledger charge this reservation holds (see [`ReservationBuilder::ledger`]); use it
    /// to report the guest's usage ([`crate::ledger::VmRecord::set_guest_used`]).
    pub fn charge(&self) -> Option<&crate::ledger::VmRecord> {
        self.charge.as_ref()
    }

    /// Starts a reservation of `size` bytes.
    pub fn builder(size: u64) -> ReservationBuilder {
        ReservationBuilder {
            size,
            nodes: Vec::new(),
            policy: MemPolicy::Bind,
            page_size: PageSize::Auto,
            threads: None,
            lock: true,
            noreserve: false,
            verify_limit: DEFAULT_VERIFY_LIMIT,
            topology: None,
            cpus: None,
            ledger: None,
            vm: None,
        }
    }

    /// The first byte of the region.
    pub fn as_ptr(&self) -> *mut u8 {
        self.map.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len
    }

    /// Always false: a reservation is never empty.
    pub fn is_empty(&self) -> bool {
        self.map.len == 0
    }

    /// The region as bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: per type invariant the range is mapped readable for the life of `self`, and
        // the only mutable access goes through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.map.ptr.as_ptr(), self.map.len) }
    }

    /// The region as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: per type invariant the range is mapped read-write for the life of `self`, and
        // `&mut self` guarantees this is the only reference.
        unsafe { std::slice::from_raw_parts_mut(self.map.ptr.as_ptr(), self.map.len) }
    }

    /// What was reserved, where, and how long it took.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The page size in use.
    pub fn page_size(&self) -> PageSize {
        self.report.page_size
    }
}

/// An owned anonymous mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; moving the owner to another thread
// moves nothing the kernel ties to a thread.
unsafe impl Send for Mapping {}
// SAFETY: `&Mapping` only hands out `&[u8]` or the raw address; Rust's borrow rules on
// `Reservation` keep writes exclusive.
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: per the type invariant of `Reservation`/`Mapping` we own the range and no
        // borrow of it can outlive `self`.
        if let Err(errno) = unsafe { sys::munmap(self.ptr, self.len) } {
            // munmap of a whole mapping we created can only fail on a kernel or numapin bug.
            // We do not panic (a panic in drop during unwinding aborts the VMM) and we do not
            // pretend: the memory stays mapped, so any raw pointer a VMM still holds stays
            // valid, and a ledger charge (held by the caller) keeps counting it.
            eprintln!(
                "numapin: munmap({:p}, {}) failed: {}; the region stays mapped (leaked)",
                self.ptr,
                self.len,
                std::io::Error::from_raw_os_error(errno)
            );
        }
    }
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
    /// (default [`DEFAULT_VERIFY_LIMIT`]).
    pub fn verify_limit(mut self, pages: u64) -> Self {
        self.verify_limit = pages.max(1);
        self
    }

    /// Uses this topology instead of reading sysfs.
    pub fn topology(mut self, topology: Topology) -> Self {
        self.topology = Some(topology);
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
    fn charge(&self, plan: &Plan) -> Result<Option<crate::ledger::VmRecord>> {
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

    /// Decides page size, nodes and threads, and checks that the host can satisfy the request,
    /// without mapping anything.
    ///
    /// # Errors
    /// [`Error::InvalidSize`], [`Error::InvalidConfig`], [`Error::NodeAbsent`],
    /// [`Error::NodeWithoutMemory`], [`Error::HugepagesShort`], [`Error::NodeMemoryShort`],
    /// [`Error::MemlockLimit`], [`Error::ThpUnavailable`], [`Error::PolicyDenied`] (cpuset),
    /// [`Error::Unsupported`], or a sysfs error.
    pub fn preflight(&self) -> Result<Plan> {
        let topo = match &self.topology {
            Some(t) => t.clone(),
            None => Topology::from_sysfs()?,
        };
        preflight(self, &topo)
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
        let mut r = build(plan, preflight_seconds)?;
        if let Some(c) = &charge {
            c.set_populated(r.map.len as u64);
        }
        r.charge = charge;
        Ok(r)
    }
}

fn preflight(b: &ReservationBuilder, topo: &Topology) -> Result<Plan> {
    let mut notes = Vec::new();
    if b.size == 0 {
        return Err(Error::InvalidSize {
            size: 0,
            reason: "a reservation needs at least one page".into(),
        });
    }
    if usize::try_from(b.size).is_err() || b.size > isize::MAX as u64 {
        return Err(Error::InvalidSize {
            size: b.size,
            reason: "larger than this platform's address space".into(),
        });
    }
    check_kernel()?;

    // Nodes.
    let with_memory: Vec<NodeId> = topo
        .nodes
        .iter()
        .filter(|n| n.has_memory())
        .map(|n| n.id)
        .collect();
    let mut nodes = b.nodes.clone();
    nodes.sort_unstable();
    nodes.dedup();
    if nodes.is_empty() {
        let local = sys::current_cpu().and_then(|c| topo.node_of_cpu(c));
        let (chosen, why) = default_node(topo, local)
            .ok_or_else(|| Error::InvalidConfig("no online node has memory".into()))?;
        notes.push(format!("no node given: chose node {chosen} ({why})"));
        nodes.push(chosen);
    }
    for &n in &nodes {
        let node = topo.node(n).ok_or_else(|| Error::NodeAbsent {
            node: n,
            online: topo.node_ids(),
        })?;
        if !node.has_memory() {
            return Err(Error::NodeWithoutMemory {
                node: n,
                with_memory: with_memory.clone(),
            });
        }
    }
    check_cpuset(&nodes)?;

    // Page size.
    let page_size = match b.page_size {
        PageSize::Auto => {
            let mut chosen = None;
            for cand in PageSize::CONCRETE_LARGEST_FIRST {
                match check_capacity(b, topo, &nodes, cand) {
                    Ok(()) => {
                        chosen = Some(cand);
                        break;
                    }
                    Err(e) => notes.push(format!("auto: not {cand}: {}", short_reason(&e))),
                }
            }
            // Base4K always fits the size check; if even it fails capacity, report that error.
            match chosen {
                Some(p) => p,
                None => {
                    check_capacity(b, topo, &nodes, PageSize::Base4K)?;
                    PageSize::Base4K
                }
            }
        }
        p => {
            check_capacity(b, topo, &nodes, p)?;
            p
        }
    };

    // Locking.
    let lock = if page_size.is_hugetlb() {
        LockKind::Hugetlb
    } else if b.lock {
        check_memlock(b.size)?;
        LockKind::Mlock
    } else {
        LockKind::None
    };

    // Threads and CPUs.
    let allowed = sys::affinity().map_err(|e| Error::sys("sched_getaffinity", e))?;
    let mut node_cpus: Vec<u32> = nodes
        .iter()
        .filter_map(|n| topo.node(*n))
        .flat_map(|n| n.cpus.iter().copied())
        .filter(|c| allowed.binary_search(c).is_ok())
        .collect();
    node_cpus.sort_unstable();
    if let Some(asked) = &b.cpus {
        let usable: Vec<u32> = asked
            .iter()
            .copied()
            .filter(|c| allowed.binary_search(c).is_ok())
            .collect();
        if usable.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "none of the populate cpus {} may be used by this process (allowed: {}); pick some of those",
                format_cpulist(asked),
                format_cpulist(&allowed)
            )));
        }
        notes.push(format!(
            "populate cpus chosen by the caller: {}",
            format_cpulist(&usable)
        ));
        node_cpus = usable;
    } else if node_cpus.is_empty() {
        notes.push(format!(
            "node(s) {nodes:?} have no CPU this process may use: populating from all allowed CPUs {}",
            format_cpulist(&allowed)
        ));
        node_cpus = allowed;
    }
    let threads = match b.threads {
        Some(0) => return Err(Error::InvalidConfig("threads must be at least 1".into())),
        Some(t) => t,
        None => node_cpus.len().max(1),
    };

    Ok(Plan {
        size: b.size,
        page_size,
        requested_page_size: b.page_size,
        policy: b.policy,
        nodes,
        threads,
        cpus: node_cpus,
        lock,
        noreserve: b.noreserve,
        verify_limit: b.verify_limit,
        notes,
    })
}

/// The node a reservation without nodes goes to: the calling CPU's node if it has memory,
/// else the node with memory nearest to it (the kernel's distance; lowest id on a tie) — on a
/// CPU-only node, the first node with memory may be the farthest one — else the first node
/// with memory. Returns the node and why it was chosen.
fn default_node(topo: &Topology, local: Option<NodeId>) -> Option<(NodeId, String)> {
    let with_memory = || topo.nodes.iter().filter(|n| n.has_memory()).map(|n| n.id);
    let Some(local) = local else {
        return with_memory().next().map(|n| {
            (
                n,
                "first node with memory; the calling CPU's node is unknown".into(),
            )
        });
    };
    if topo.node(local).is_some_and(|n| n.has_memory()) {
        return Some((local, "local to the calling CPU".into()));
    }
    with_memory()
        .min_by_key(|&n| (topo.distance(local, n).unwrap_or(u32::MAX), n))
        .map(|n| {
            let d = topo
                .distance(local, n)
                .map_or("unknown".to_string(), |d| d.to_string());
            (
                n,
                format!("nearest node with memory to the calling CPU's memory-less node {local}, distance {d}"),
            )
        })
}

fn short_reason(e: &Error) -> String {
    match e {
        Error::HugepagesShort {
            node,
            wanted,
            free_on_node,
            ..
        } => {
            format!("node {node} has {free_on_node} free, {wanted} needed")
        }
        Error::InvalidSize { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Checks that the size fits the page size and that the nodes can hold it.
fn check_capacity(
    b: &ReservationBuilder,
    topo: &Topology,
    nodes: &[NodeId],
    page: PageSize,
) -> Result<()> {
    let gran = page.bytes().expect("concrete page size") as u64;
    if b.size % gran != 0 {
        let down = b.size / gran * gran;
        let up = down + gran;
        return Err(Error::InvalidSize {
            size: b.size,
            reason: if down == 0 {
                format!(
                    "smaller than one {} page ({page}); use {}",
                    format_bytes(gran),
                    format_bytes(up)
                )
            } else {
                format!(
                    "not a multiple of the {} page size ({page}); use {} or {}",
                    format_bytes(gran),
                    format_bytes(down),
                    format_bytes(up)
                )
            },
        });
    }
    match page {
        PageSize::Transparent => {
            if matches!(topo.thp, ThpMode::Never | ThpMode::Unsupported) {
                return Err(Error::ThpUnavailable {
                    mode: if topo.thp == ThpMode::Never {
                        "never"
                    } else {
                        "unsupported"
                    },
                });
            }
            check_node_memory(b, topo, nodes, page)
        }
        PageSize::Base4K => check_node_memory(b, topo, nodes, page),
        PageSize::Huge2M | PageSize::Huge1G => {
            let pages = b.size / gran;
            let free = |n: NodeId| {
                topo.node(n)
                    .and_then(|x| x.pool(page))
                    .map_or(0, |p| p.free)
            };
            let short = |node: NodeId, wanted: u64, free_on_node: u64| Error::HugepagesShort {
                node,
                page_size: page,
                wanted,
                free_on_node,
                free_elsewhere: topo.free_hugepages_elsewhere(page, &[node]),
            };
            match b.policy {
                MemPolicy::Bind => {
                    let total: u64 = nodes.iter().map(|&n| free(n)).sum();
                    if total < pages {
                        // Ask the first node to make up the whole deficit. "Elsewhere" is
                        // outside the bound nodes: the other bound nodes' pages are counted
                        // in `wanted` already, and the message says the rest cannot be used.
                        let n = nodes[0];
                        let others = total - free(n);
                        return Err(Error::HugepagesShort {
                            node: n,
                            page_size: page,
                            wanted: pages - others,
                            free_on_node: free(n),
                            free_elsewhere: topo.free_hugepages_elsewhere(page, nodes),
                        });
                    }
                }
                MemPolicy::Interleave => {
                    let share = pages.div_ceil(nodes.len() as u64);
                    for &n in nodes {
                        if free(n) < share {
                            return Err(short(n, share, free(n)));
                        }
                    }
                }
                MemPolicy::Preferred => {
                    let total: u64 = topo.nodes.iter().map(|x| free(x.id)).sum();
                    if total < pages {
                        return Err(short(
                            nodes[0],
                            pages - (total - free(nodes[0])),
                            free(nodes[0]),
                        ));
                    }
                }
            }
            Ok(())
        }
        PageSize::Auto => unreachable!("auto is resolved before"),
    }
}

fn check_node_memory(
    b: &ReservationBuilder,
    topo: &Topology,
    nodes: &[NodeId],
    page: PageSize,
) -> Result<()> {
    let avail = |n: NodeId| topo.node(n).map_or(0, |x| x.mem_available_bytes());
    match b.policy {
        MemPolicy::Preferred => Ok(()),
        MemPolicy::Bind => {
            let total: u64 = nodes.iter().map(|&n| avail(n)).sum();
            if total < b.size {
                return Err(Error::NodeMemoryShort {
                    node: nodes[0],
                    page_size: page,
                    requested: b.size,
                    available: total,
                });
            }
            Ok(())
        }
        MemPolicy::Interleave => {
            let share = b.size.div_ceil(nodes.len() as u64);
            for &n in nodes {
                if avail(n) < share {
                    return Err(Error::NodeMemoryShort {
                        node: n,
                        page_size: page,
                        requested: share,
                        available: avail(n),
                    });
                }
            }
            Ok(())
        }
    }
}

fn check_memlock(size: u64) -> Result<()> {
    if sys::has_cap_ipc_lock() {
        return Ok(());
    }
    let limit = sys::memlock_limit();
    let locked = sys::locked_bytes();
    if limit != u64::MAX && locked.saturating_add(size) > limit {
        return Err(Error::MemlockLimit {
            requested: size,
            limit,
            locked_already: locked,
        });
    }
    Ok(())
}

fn check_cpuset(nodes: &[NodeId]) -> Result<()> {
    let Some(allowed) = sys::proc_status_field("Mems_allowed_list") else {
        return Ok(());
    };
    let Ok(allowed) = crate::topology::parse_cpulist(&allowed) else {
        return Ok(());
    };
    if nodes.iter().all(|n| allowed.binary_search(&n.0).is_ok()) {
        Ok(())
    } else {
        Err(Error::PolicyDenied {
            call: "cpuset",
            nodes: nodes.to_vec(),
            denial: PolicyDenial::Cpuset,
        })
    }
}

fn check_kernel() -> Result<()> {
    let rel = sys::kernel_release();
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (major, minor) < (5, 14) {
        return Err(Error::Unsupported {
            what: "MADV_POPULATE_WRITE (Linux 5.14)",
            kernel: rel,
            fix: "run a kernel >= 5.14; numapin will not populate by touching pages because a short pool would kill the process with SIGBUS",
        });
    }
    Ok(())
}

/// Why a policy call was refused: seccomp, cpuset, or something else.
fn classify_denial(nodes: &[NodeId]) -> PolicyDenial {
    if sys::proc_status_field("Seccomp").is_some_and(|v| v != "0") {
        return PolicyDenial::Seccomp;
    }
    if check_cpuset(nodes).is_err() {
        return PolicyDenial::Cpuset;
    }
    PolicyDenial::Other
}

fn policy_error(call: &'static str, errno: i32, nodes: &[NodeId]) -> Error {
    match errno {
        libc::EPERM => Error::PolicyDenied {
            call,
            nodes: nodes.to_vec(),
            denial: classify_denial(nodes),
        },
        libc::EINVAL if check_cpuset(nodes).is_err() => Error::PolicyDenied {
            call,
            nodes: nodes.to_vec(),
            denial: PolicyDenial::Cpuset,
        },
        libc::ENOSYS => Error::Unsupported {
            what: "NUMA memory policies (CONFIG_NUMA)",
            kernel: sys::kernel_release(),
            fix: "use a kernel built with CONFIG_NUMA",
        },
        e => Error::sys(call, e),
    }
}

fn mpol_mode(policy: MemPolicy, nodes: &[NodeId]) -> i32 {
    match policy {
        MemPolicy::Bind => libc::MPOL_BIND,
        MemPolicy::Interleave => libc::MPOL_INTERLEAVE,
        MemPolicy::Preferred if nodes.len() == 1 => libc::MPOL_PREFERRED,
        MemPolicy::Preferred => sys::MPOL_PREFERRED_MANY,
    }
}

/// Re-reads the pools to describe a shortage the kernel found after the preflight passed: the
/// same attribution as the preflight (which node must grow, by how much), on fresh numbers.
/// If the fresh pools would pass (they changed again), the first node and its numbers.
fn pool_short_now(plan: &Plan) -> Error {
    let page = plan.page_size;
    let gran = page.bytes().unwrap_or(1) as u64;
    let node = plan.nodes[0];
    match Topology::from_sysfs() {
        Ok(t) => {
            let b = Reservation::builder(plan.size).policy(plan.policy);
            if let Err(e @ Error::HugepagesShort { .. }) = check_capacity(&b, &t, &plan.nodes, page)
            {
                return e;
            }
            Error::HugepagesShort {
                node,
                page_size: page,
                wanted: plan.size / gran,
                free_on_node: t
                    .node(node)
                    .and_then(|n| n.pool(page))
                    .map_or(0, |p| p.free),
                free_elsewhere: t.free_hugepages_elsewhere(page, &[node]),
            }
        }
        Err(e) => e,
    }
}

fn map(plan: &Plan) -> Result<Mapping> {
    let len = plan.size as usize;
    let nodes = &plan.nodes;
    match plan.page_size {
        PageSize::Huge2M | PageSize::Huge1G => {
            let backing = if plan.page_size == PageSize::Huge2M {
                Backing::Huge2M
            } else {
                Backing::Huge1G
            };
            // Map from a short-lived thread holding MPOL_BIND, so the kernel's hugetlb
            // reservation (hugetlb_acct_memory) counts only the free pages of the target
            // nodes, and so the caller's own thread policy is never touched.
            let bind_at_map = plan.policy == MemPolicy::Bind;
            let mask = NodeMask::new(nodes);
            let r = std::thread::scope(|s| {
                s.spawn(|| {
                    if bind_at_map {
                        sys::set_mempolicy(libc::MPOL_BIND, Some(&mask))
                            .map_err(|e| policy_error("set_mempolicy", e, nodes))?;
                    }
                    sys::mmap_anonymous(len, backing, plan.noreserve)
                        .map(|ptr| ptr.as_ptr() as usize)
                        .map_err(|e| match e {
                            libc::ENOMEM => pool_short_now(plan),
                            e => Error::sys("mmap", e),
                        })
                })
                .join()
                .unwrap_or_else(|_| Err(Error::sys("mmap", libc::EIO)))
            })?;
            let ptr = NonNull::new(r as *mut u8).expect("mmap never returns null on success");
            Ok(Mapping { ptr, len })
        }
        PageSize::Transparent => {
            // Align to 2 MiB so that every 2 MiB of the region can be one huge page.
            const HUGE: usize = 2 << 20;
            let over = len + HUGE;
            let raw = sys::mmap_anonymous(over, Backing::Base, plan.noreserve)
                .map_err(|e| Error::sys("mmap", e))?;
            let start = raw.as_ptr() as usize;
            let aligned = start.next_multiple_of(HUGE);
            let head = aligned - start;
            let tail = over - head - len;
            // SAFETY: head and tail lie inside the mapping just created and nothing refers to
            // them; the aligned middle stays mapped.
            unsafe {
                if head > 0 {
                    sys::munmap(raw, head).map_err(|e| Error::sys("munmap", e))?;
                }
                if tail > 0 {
                    let t = NonNull::new((aligned + len) as *mut u8).expect("non-null");
                    sys::munmap(t, tail).map_err(|e| Error::sys("munmap", e))?;
                }
            }
            let ptr = NonNull::new(aligned as *mut u8).expect("non-null");
            Ok(Mapping { ptr, len })
        }
        PageSize::Base4K => {
            let ptr = sys::mmap_anonymous(len, Backing::Base, plan.noreserve)
                .map_err(|e| Error::sys("mmap", e))?;
            Ok(Mapping { ptr, len })
        }
        PageSize::Auto => unreachable!("resolved in preflight"),
    }
}

fn build(plan: Plan, preflight_seconds: f64) -> Result<Reservation> {
    let mut notes = plan.notes.clone();
    let t_map = Instant::now();
    let map = prepare(&plan, &mut notes)?;
    let map_seconds = t_map.elapsed().as_secs_f64();
    let report = populate_and_verify(
        &map,
        &plan,
        &Progress::default(),
        notes,
        [preflight_seconds, map_seconds],
    )?;
    Ok(Reservation {
        map,
        report,
        charge: None,
    })
}

/// Maps, binds, advises and locks: everything before the first fault.
fn prepare(plan: &Plan, notes: &mut Vec<String>) -> Result<Mapping> {
    let map = map(plan)?;
    let len = map.len;

    // Bind before the first fault.
    let mask = NodeMask::new(&plan.nodes);
    let flags = if plan.policy == MemPolicy::Bind {
        sys::MPOL_MF_STRICT | sys::MPOL_MF_MOVE
    } else {
        0
    };
    sys::mbind(
        map.ptr,
        len,
        mpol_mode(plan.policy, &plan.nodes),
        &mask,
        flags,
    )
    .map_err(|e| {
        if e == libc::EINVAL && plan.policy == MemPolicy::Preferred && plan.nodes.len() > 1 {
            Error::Unsupported {
                what: "MPOL_PREFERRED_MANY (Linux 5.15)",
                kernel: sys::kernel_release(),
                fix: "prefer a single node, or run a kernel >= 5.15",
            }
        } else {
            policy_error("mbind", e, &plan.nodes)
        }
    })?;

    // Advice: keep guest memory out of core dumps and children, away from KSM.
    sys::madvise(map.ptr, len, libc::MADV_DONTDUMP)
        .map_err(|e| Error::sys("madvise(MADV_DONTDUMP)", e))?;
    sys::madvise(map.ptr, len, libc::MADV_DONTFORK)
        .map_err(|e| Error::sys("madvise(MADV_DONTFORK)", e))?;
    match sys::madvise(map.ptr, len, libc::MADV_UNMERGEABLE) {
        Ok(()) => {}
        // A kernel without CONFIG_KSM refuses the advice; then nothing can merge anyway.
        Err(libc::EINVAL) => notes.push("kernel has no KSM: MADV_UNMERGEABLE skipped".into()),
        Err(e) => return Err(Error::sys("madvise(MADV_UNMERGEABLE)", e)),
    }
    if plan.page_size == PageSize::Transparent {
        sys::madvise(map.ptr, len, libc::MADV_HUGEPAGE)
            .map_err(|e| Error::sys("madvise(MADV_HUGEPAGE)", e))?;
    }
    if plan.page_size == PageSize::Base4K {
        // 4k means 4 KiB pages: with THP `always` the kernel would otherwise back the region
        // with huge pages the caller did not ask for (and the report would be wrong).
        match sys::madvise(map.ptr, len, libc::MADV_NOHUGEPAGE) {
            // A kernel without THP refuses the advice; then no huge page can appear anyway.
            Ok(()) | Err(libc::EINVAL) => {}
            Err(e) => return Err(Error::sys("madvise(MADV_NOHUGEPAGE)", e)),
        }
    }

    if plan.lock == LockKind::Mlock {
        sys::mlock2(map.ptr, len, true).map_err(|e| match e {
            libc::ENOMEM | libc::EAGAIN | libc::EPERM => Error::MemlockLimit {
                requested: plan.size,
                limit: sys::memlock_limit(),
                locked_already: sys::locked_bytes(),
            },
            e => Error::sys("mlock2", e),
        })?;
    }
    Ok(map)
}

/// Progress of a population, shared between the workers and whoever watches.
#[derive(Debug, Default)]
struct Progress {
    /// Bytes populated so far.
    done: AtomicU64,
    /// Set to stop the workers early (the pending reservation was dropped).
    cancel: AtomicBool,
}

/// Populates, verifies and writes the report. `seconds` = [preflight, map].
fn populate_and_verify(
    map: &Mapping,
    plan: &Plan,
    progress: &Progress,
    mut notes: Vec<String>,
    seconds: [f64; 2],
) -> Result<Report> {
    let len = map.len;
    let native = plan.page_size.native_bytes().expect("concrete");
    let gran = plan.page_size.bytes().expect("concrete");
    let work = populate::Plan {
        base: map.ptr,
        len,
        chunk: populate::chunk_size(len, plan.threads, native, native.max(2 << 20)),
        threads: plan.threads,
        cpus: plan.cpus.clone(),
    };
    let t_pop = Instant::now();
    let (outcome, r) = populate::run(&work, |addr, _, l| {
        // Relaxed: a cancel request only needs to be seen eventually; `done` is a statistic.
        if progress.cancel.load(Ordering::Relaxed) {
            return Err(libc::ECANCELED);
        }
        populate::populate_write(addr, l)?;
        progress.done.fetch_add(l as u64, Ordering::Relaxed);
        Ok(())
    });
    let populate_seconds = t_pop.elapsed().as_secs_f64();
    if let Some(e) = outcome.pin_failed {
        notes.push(format!(
            "could not pin workers to cpus {}: {}",
            format_cpulist(&plan.cpus),
            std::io::Error::from_raw_os_error(e)
        ));
    }
    r.map_err(|c| match c.errno {
        libc::ECANCELED => Error::InvalidConfig("population cancelled".into()),
        libc::EINVAL if plan.page_size.is_hugetlb() => {
            Error::sys("madvise(MADV_POPULATE_WRITE)", c.errno)
        }
        errno => Error::Populate {
            offset: c.offset as u64,
            len: c.len as u64,
            errno,
            page_size: plan.page_size,
            nodes: plan.nodes.clone(),
        },
    })?;

    // Verify.
    let t_ver = Instant::now();
    let total_pages = (len / gran) as u64;
    let stride_pages = total_pages.div_ceil(plan.verify_limit).max(1) as usize;
    let stride = stride_pages * gran;
    let hist = std::sync::Mutex::new(Histogram::default());
    let vplan = populate::Plan {
        chunk: work.chunk.div_ceil(stride) * stride,
        ..work.clone()
    };
    let (_, r) = populate::run(&vplan, |addr, _, l| {
        let mut h = Histogram::default();
        populate::query_nodes(addr, l, stride, &mut h)?;
        hist.lock().unwrap_or_else(|p| p.into_inner()).merge(&h);
        Ok(())
    });
    r.map_err(|c| Error::sys("move_pages", c.errno))?;
    let hist = hist.into_inner().unwrap_or_else(|p| p.into_inner());
    let verify_seconds = t_ver.elapsed().as_secs_f64();
    // Bytes per node: exact when every page was checked, the sample's share of the size
    // otherwise.
    let share = |c: u64| -> u64 {
        if stride_pages == 1 {
            c * gran as u64
        } else {
            (u128::from(plan.size) * u128::from(c) / u128::from(hist.queried.max(1))) as u64
        }
    };
    let placement: BTreeMap<NodeId, u64> = hist
        .per_node
        .iter()
        .map(|(n, c)| (NodeId(*n), share(*c)))
        .collect();
    let elsewhere = hist
        .per_node
        .iter()
        .filter(|(n, _)| !plan.nodes.contains(&NodeId(**n)))
        .map(|(_, c)| c)
        .sum::<u64>();
    // Pages not resident are always an error; pages off the policy's nodes are one unless the
    // policy only prefers those nodes.
    let misplaced = hist.missing
        + if plan.policy == MemPolicy::Preferred {
            0
        } else {
            elsewhere
        };
    if misplaced > 0 {
        return Err(Error::Misplaced {
            expected: plan.nodes.clone(),
            misplaced,
            placement: placement.into_iter().collect(),
        });
    }
    if elsewhere > 0 {
        notes.push(format!(
            "{} fell back to other nodes (preferred node(s) {:?} were full)",
            format_bytes(share(elsewhere)),
            plan.nodes
        ));
    }

    let thp_bytes = if plan.page_size == PageSize::Transparent {
        let t = crate::smaps::anon_huge_bytes(map.ptr.as_ptr() as usize).unwrap_or(0);
        if t < plan.size {
            notes.push(format!(
                "THP: only {} of {} is backed by huge pages (the kernel could not find enough free 2 MiB blocks on the node)",
                format_bytes(t),
                format_bytes(plan.size)
            ));
        }
        Some(t)
    } else {
        None
    };

    Ok(Report {
        size_bytes: plan.size,
        page_size_bytes: gran as u64,
        page_size: plan.page_size,
        requested_page_size: plan.requested_page_size,
        policy: plan.policy,
        nodes: plan.nodes.clone(),
        placement,
        verified_pages: hist.queried,
        total_pages,
        verified_all: stride_pages == 1,
        locked: plan.lock != LockKind::None,
        lock: plan.lock,
        thp_bytes,
        threads: work.threads.min(len.div_ceil(work.chunk)),
        pinned_cpus: plan.cpus.clone(),
        worker_cpus: outcome.worker_cpus,
        preflight_seconds: seconds[0],
        map_seconds: seconds[1],
        populate_seconds,
        verify_seconds,
        notes,
    })
}

/// What the kernel promises about a fault on a page of a [`PendingReservation`] that the
/// background workers have not populated yet (the guest may touch any page at any time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum FaultGuarantee {
    /// hugetlb mapped without `MAP_NORESERVE`: `mmap` reserved one pool page for every page of
    /// the region (`HugePages_Rsvd`), so a fault finds a page and cannot SIGBUS. The
    /// reservation is counted per host; the pages come from the bound nodes, so on a
    /// multi-node host it holds per node only if every other user of those pools reserves
    /// through the same accounting (the numapin ledger).
    HugetlbReserved,
    /// hugetlb with `MAP_NORESERVE`: nothing was set aside; if the pool runs dry before a page
    /// is populated, the guest's fault on it raises SIGBUS. Use only with your own admission.
    None,
    /// Base pages or THP: faults allocate on demand from the node's free memory (locked as they
    /// fault with `MLOCK_ONFAULT`). They cannot SIGBUS; under memory exhaustion the kernel
    /// reclaims, or its OOM killer picks a victim.
    OnDemand,
}

/// Progress of a background population.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PopulateProgress {
    /// Bytes populated so far.
    pub done_bytes: u64,
    /// Bytes in the region.
    pub total_bytes: u64,
    /// Seconds since population started.
    pub elapsed_seconds: f64,
}

impl PopulateProgress {
    /// Populate rate so far in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        if self.elapsed_seconds > 0.0 {
            self.done_bytes as f64 / self.elapsed_seconds
        } else {
            0.0
        }
    }

    /// Fraction done, 0.0 to 1.0.
    pub fn fraction(&self) -> f64 {
        self.done_bytes as f64 / self.total_bytes.max(1) as f64
    }
}

struct Shared {
    map: Mapping,
    progress: Progress,
}

/// A reservation that is mapped, bound and locked (and for hugetlb, set aside by the kernel)
/// while worker threads still populate it — so a VM can start before every page is faulted
/// in. [`PendingReservation::wait`] turns it into a verified [`Reservation`]. Dropping it
/// stops the workers, waits for them, and unmaps.
///
/// The memory at [`PendingReservation::as_ptr`] may be used at once; what the kernel promises
/// for a page touched before the workers reach it is [`PendingReservation::fault_guarantee`].
pub struct PendingReservation {
    /// Present until `wait` or `drop` takes it.
    inner: Option<Pending>,
    started: Instant,
    guarantee: FaultGuarantee,
    page_size: PageSize,
    /// The ledger charge, moved into the reservation by `wait` (refunded if it fails).
    charge: Option<crate::ledger::VmRecord>,
}

/// A mapping whose population failed, with its ledger charge: kept by the vm-memory owner for
/// as long as guest regions point into it (unmapped first, then refunded, when dropped).
pub(crate) type HeldMapping = (Mapping, Option<crate::ledger::VmRecord>);

struct Pending {
    shared: Arc<Shared>,
    worker: JoinHandle<Result<Report>>,
}

impl fmt::Debug for PendingReservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingReservation")
            .field("map", &self.shared().map)
            .field("progress", &self.progress())
            .finish()
    }
}

impl PendingReservation {
    fn shared(&self) -> &Shared {
        &self
            .inner
            .as_ref()
            .expect("present until wait or drop")
            .shared
    }

    /// The first byte of the region (valid now, for the life of this value and of the
    /// [`Reservation`] it becomes).
    pub fn as_ptr(&self) -> *mut u8 {
        self.shared().map.ptr.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.shared().map.len
    }

    /// Always false: a reservation is never empty.
    pub fn is_empty(&self) -> bool {
        self.shared().map.len == 0
    }

    /// Bytes populated so far, and the rate.
    pub fn progress(&self) -> PopulateProgress {
        let s = self.shared();
        PopulateProgress {
            // Relaxed: a statistic; wait() joins the workers for the final word.
            done_bytes: s.progress.done.load(Ordering::Relaxed),
            total_bytes: s.map.len as u64,
            elapsed_seconds: self.started.elapsed().as_secs_f64(),
        }
    }

    /// Whether the workers have finished (successfully or not).
    pub fn is_finished(&self) -> bool {
        self.inner.as_ref().is_none_or(|p| p.worker.is_finished())
    }

    /// What the kernel promises for a fault on a page not populated yet.
    pub fn fault_guarantee(&self) -> FaultGuarantee {
        self.guarantee
    }

    /// The page size in use (never `Auto`).
    pub fn page_size(&self) -> PageSize {
        self.page_size
    }

    /// Waits for population and verification to finish.
    ///
    /// # Errors
    /// [`Error::Populate`] or [`Error::Misplaced`] from the workers, exactly as
    /// [`ReservationBuilder::build`] would return them; the region is unmapped then.
    pub fn wait(self) -> Result<Reservation> {
        // On error the mapping is dropped here, which unmaps it, then refunds the charge.
        self.finish().map_err(|failed| failed.0)
    }

    /// Waits for the workers and hands back the mapping whatever the outcome: on error the
    /// caller decides when to unmap (the vm-memory owner keeps it mapped for as long as guest
    /// regions point into it).
    pub(crate) fn finish(mut self) -> std::result::Result<Reservation, Box<(Error, HeldMapping)>> {
        let Pending { shared, worker } = self.inner.take().expect("present until wait or drop");
        let outcome = worker
            .join()
            .unwrap_or_else(|_| Err(Error::sys("populate worker", libc::EIO)));
        // The worker dropped its handle on `shared` when its closure returned (or unwound),
        // before join() did, so ours is the last one.
        let shared = Arc::into_inner(shared).expect("the worker released the mapping");
        let charge = self.charge.take();
        match outcome {
            Ok(report) => {
                if let Some(c) = &charge {
                    c.set_populated(shared.map.len as u64);
                }
                Ok(Reservation {
                    map: shared.map,
                    report,
                    charge,
                })
            }
            // The charge stays with the mapping: the pages are held until it is unmapped
            // (tuple fields drop in order: unmapped first, then refunded).
            Err(e) => Err(Box::new((e, (shared.map, charge)))),
        }
    }
}

impl Drop for PendingReservation {
    fn drop(&mut self) {
        if let Some(p) = self.inner.take() {
            // Relaxed: the workers poll the flag between chunks; join() synchronises. The
            // mapping is unmapped only after the workers stopped touching it.
            p.shared.progress.cancel.store(true, Ordering::Relaxed);
            let _ = p.worker.join();
        }
    }
}

impl ReservationBuilder {
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
        let mut notes = plan.notes.clone();
        let t_map = Instant::now();
        let map = prepare(&plan, &mut notes)?;
        let map_seconds = t_map.elapsed().as_secs_f64();
        let guarantee = match (plan.page_size.is_hugetlb(), plan.noreserve) {
            (true, false) => FaultGuarantee::HugetlbReserved,
            (true, true) => FaultGuarantee::None,
            (false, _) => FaultGuarantee::OnDemand,
        };
        let shared = Arc::new(Shared {
            map,
            progress: Progress::default(),
        });
        let page_size = plan.page_size;
        let theirs = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("numapin-populate".into())
            .spawn(move || {
                populate_and_verify(
                    &theirs.map,
                    &plan,
                    &theirs.progress,
                    notes,
                    [preflight_seconds, map_seconds],
                )
            })
            .map_err(|e| Error::Sys {
                call: "spawn populate thread",
                source: e,
            })?;
        Ok(PendingReservation {
            inner: Some(Pending { shared, worker }),
            started: Instant::now(),
            guarantee,
            page_size,
            charge,
        })
    }
}

impl Reservation {
    /// Reserves several regions at once — e.g. one per NUMA node of a guest — populating them
    /// concurrently, each with its own node's CPUs. All or nothing: if one fails, the others
    /// are released and the first error (in input order) is returned.
    ///
    /// # Errors
    /// The first error any of the builders returns.
    pub fn build_many(
        builders: impl IntoIterator<Item = ReservationBuilder>,
    ) -> Result<Vec<Reservation>> {
        let pending = builders
            .into_iter()
            .map(ReservationBuilder::build_background)
            .collect::<Result<Vec<_>>>()?;
        let mut out = Vec::with_capacity(pending.len());
        let mut first_err = None;
        for p in pending {
            match p.wait() {
                Ok(r) => out.push(r),
                Err(e) => {
                    first_err.get_or_insert(e);
                }
            }
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_errors_say_what_to_use() {
        let e = Reservation::builder(3 << 20)
            .page_size(PageSize::Huge2M)
            .preflight()
            .unwrap_err();
        let m = e.to_string();
        assert!(matches!(e, Error::InvalidSize { .. }), "{m}");
        assert!(m.contains("2 MiB") && m.contains("4 MiB"), "{m}");
        assert!(matches!(
            Reservation::builder(0).preflight().unwrap_err(),
            Error::InvalidSize { size: 0, .. }
        ));
    }

    #[test]
    fn absent_node_is_named() {
        let e = Reservation::builder(2 << 20)
            .node(NodeId(4000))
            .preflight()
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::NodeAbsent {
                    node: NodeId(4000),
                    ..
                }
            ),
            "{e}"
        );
    }

    /// Three nodes with sparse ids: 0 (CPUs, 100 free 2M pages), 1 (no CPUs, 10 free), 3 (no
    /// memory).
    fn fixture() -> Topology {
        use crate::topology::{HugepagePool, NumaNode};
        let node = |id, cpus: Vec<u32>, mem: u64, free2m| NumaNode {
            id: NodeId(id),
            cpus,
            mem_total_bytes: mem,
            mem_free_bytes: mem / 2,
            mem_reclaimable_bytes: 0,
            mem_deferred_bytes: 0,
            hugepages: vec![HugepagePool {
                page_size_bytes: 2 << 20,
                total: free2m,
                free: free2m,
                surplus: 0,
            }],
        };
        Topology {
            nodes: vec![
                node(0, vec![0, 1], 8 << 30, 100),
                node(1, vec![], 4 << 30, 10),
                node(3, vec![2, 3], 0, 0),
            ],
            distances: vec![vec![10, 20, 30], vec![20, 10, 30], vec![30, 30, 10]],
            thp: ThpMode::Madvise,
        }
    }

    fn capacity(policy: MemPolicy, nodes: &[u32], size: u64, page: PageSize) -> Result<()> {
        let b = Reservation::builder(size).policy(policy);
        let nodes: Vec<NodeId> = nodes.iter().map(|&n| NodeId(n)).collect();
        check_capacity(&b, &fixture(), &nodes, page)
    }

    #[test]
    fn pool_shortage_is_attributed_to_the_node_that_must_grow() {
        const M2: u64 = 2 << 20;
        assert!(capacity(MemPolicy::Bind, &[0], 100 * M2, PageSize::Huge2M).is_ok());
        match capacity(MemPolicy::Bind, &[1], 20 * M2, PageSize::Huge2M) {
            Err(Error::HugepagesShort {
                node,
                wanted,
                free_on_node,
                free_elsewhere,
                ..
            }) => {
                assert_eq!(
                    (node, wanted, free_on_node, free_elsewhere),
                    (NodeId(1), 20, 10, 100)
                );
            }
            other => panic!("{other:?}"),
        }
        // Bind to two nodes: together they hold 110; node 1 must make up the deficit.
        assert!(capacity(MemPolicy::Bind, &[0, 1], 110 * M2, PageSize::Huge2M).is_ok());
        match capacity(MemPolicy::Bind, &[1, 0], 111 * M2, PageSize::Huge2M) {
            Err(Error::HugepagesShort {
                node,
                wanted,
                free_on_node,
                free_elsewhere,
                ..
            }) => {
                // Node 0's 100 free pages are counted in `wanted`, not "elsewhere".
                assert_eq!(
                    (node, wanted, free_on_node, free_elsewhere),
                    (NodeId(1), 11, 10, 0)
                );
            }
            other => panic!("{other:?}"),
        }
        // Interleave: each node needs its share, rounded up.
        assert!(capacity(MemPolicy::Interleave, &[0, 1], 20 * M2, PageSize::Huge2M).is_ok());
        match capacity(MemPolicy::Interleave, &[0, 1], 21 * M2, PageSize::Huge2M) {
            Err(Error::HugepagesShort { node, wanted, .. }) => {
                assert_eq!((node, wanted), (NodeId(1), 11));
            }
            other => panic!("{other:?}"),
        }
        // Preferred may fall back: the whole host counts.
        assert!(capacity(MemPolicy::Preferred, &[1], 110 * M2, PageSize::Huge2M).is_ok());
        assert!(capacity(MemPolicy::Preferred, &[1], 111 * M2, PageSize::Huge2M).is_err());
    }

    #[test]
    fn base_memory_shortage_per_node() {
        // Node 1 has 2 GiB free.
        assert!(capacity(MemPolicy::Bind, &[1], 2 << 30, PageSize::Base4K).is_ok());
        assert!(matches!(
            capacity(MemPolicy::Bind, &[1], (2 << 30) + 4096, PageSize::Base4K),
            Err(Error::NodeMemoryShort {
                node: NodeId(1),
                ..
            })
        ));
        assert!(matches!(
            capacity(MemPolicy::Interleave, &[0, 1], 6 << 30, PageSize::Transparent),
            Err(Error::NodeMemoryShort { node: NodeId(1), requested, .. }) if requested == 3 << 30
        ));
    }

    #[test]
    fn thp_disabled_is_named() {
        let mut t = fixture();
        t.thp = ThpMode::Never;
        let b = Reservation::builder(2 << 20);
        assert!(matches!(
            check_capacity(&b, &t, &[NodeId(0)], PageSize::Transparent),
            Err(Error::ThpUnavailable { mode: "never" })
        ));
    }

    #[test]
    fn memoryless_and_absent_nodes_are_refused() {
        let b = Reservation::builder(2 << 20).node(NodeId(3));
        assert!(matches!(
            preflight(&b, &fixture()),
            Err(Error::NodeWithoutMemory {
                node: NodeId(3),
                ..
            })
        ));
        let b = Reservation::builder(2 << 20).node(NodeId(2));
        assert!(matches!(
            preflight(&b, &fixture()),
            Err(Error::NodeAbsent {
                node: NodeId(2),
                ..
            })
        ));
    }

    #[test]
    fn populate_cpus_must_be_usable() {
        let e = Reservation::builder(2 << 20)
            .page_size(PageSize::Base4K)
            .cpus([60_000, 60_001])
            .preflight()
            .unwrap_err();
        assert!(
            matches!(&e, Error::InvalidConfig(m) if m.contains("60000-60001") && m.contains("allowed")),
            "{e}"
        );
        let allowed = sys::affinity().unwrap();
        let plan = Reservation::builder(2 << 20)
            .page_size(PageSize::Base4K)
            .cpus([allowed[0], 60_000])
            .preflight()
            .unwrap();
        assert_eq!((plan.cpus.clone(), plan.threads), (vec![allowed[0]], 1));
    }

    #[test]
    fn small_base_page_reservation() {
        let mut r = Reservation::builder(8 << 20)
            .page_size(PageSize::Base4K)
            .lock(false)
            .threads(2)
            .build()
            .unwrap();
        assert_eq!(r.len(), 8 << 20);
        assert!(r.as_slice().iter().all(|&b| b == 0));
        r.as_mut_slice()[12345] = 7;
        assert_eq!(r.as_slice()[12345], 7);
        let rep = r.report();
        assert_eq!(rep.placement.values().sum::<u64>(), 8 << 20);
        assert!(rep.verified_all);
        assert_eq!(rep.verified_pages, rep.total_pages);
        // 4k means no THP, whatever the host's THP mode (`nh` = MADV_NOHUGEPAGE).
        let vma = crate::smaps::vma_info(r.as_ptr() as usize)
            .unwrap()
            .expect("the region is mapped");
        assert!(vma.flags.iter().any(|f| f == "nh"), "{:?}", vma.flags);
        assert_eq!(vma.anon_huge, 0);
    }

    #[test]
    fn default_node_is_local_else_nearest_with_memory() {
        let mut t = fixture();
        let pick = |t: &Topology, local| default_node(t, local).map(|(n, _)| n);
        assert_eq!(pick(&t, Some(NodeId(0))), Some(NodeId(0)));
        assert_eq!(pick(&t, Some(NodeId(1))), Some(NodeId(1)));
        assert_eq!(pick(&t, None), Some(NodeId(0)));
        // Node 3 has CPUs but no memory; equally far from 0 and 1: the lower id.
        assert_eq!(pick(&t, Some(NodeId(3))), Some(NodeId(0)));
        // Nearer to node 1: node 1, not the first node with memory.
        t.distances[2] = vec![30, 15, 10];
        let (n, why) = default_node(&t, Some(NodeId(3))).unwrap();
        assert_eq!(n, NodeId(1));
        assert!(
            why.contains("nearest") && why.contains("distance 15"),
            "{why}"
        );
    }
}
