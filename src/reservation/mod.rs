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

mod adopt;
mod background;
mod builder;
mod facts;
mod many;
#[allow(unsafe_code)] // the owned mapping: munmap on drop, Send/Sync
mod map;
mod populate;
mod preflight;

use std::collections::BTreeMap;
use std::fmt;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use crate::topology::format_cpulist;
use crate::units::{format_bytes, NodeId, PageSize};

pub use adopt::AdoptBuilder;
#[cfg(feature = "vm-memory")]
pub(crate) use background::HeldMapping;
pub use background::{FaultGuarantee, PendingReservation, PopulateProgress};
pub use builder::ReservationBuilder;
pub use facts::{HostFacts, MemlockFacts};
use map::Mapping;

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
    type Err = crate::units::ParseError;
    fn from_str(s: &str) -> std::result::Result<Self, Self::Err> {
        match s {
            "bind" => Ok(MemPolicy::Bind),
            "preferred" => Ok(MemPolicy::Preferred),
            "interleave" => Ok(MemPolicy::Interleave),
            o => Err(crate::units::ParseError::Unknown {
                what: "policy",
                input: o.to_string(),
                expected: "bind, preferred or interleave",
            }),
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

/// What the preflight decided: the concrete page size, nodes, threads and CPUs, and why.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ReservationPlan {
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
    /// Whether the memory is a sealed memory file others can map (see
    /// [`ReservationBuilder::shared`]).
    pub shared: bool,
    /// The VM's name ([`ReservationBuilder::vm`]): its ledger record's, and its memory file's
    /// (`/memfd:numapin:NAME` in `/proc/PID/maps` and `numa_maps`) for a shared reservation.
    pub vm: Option<String>,
    /// Why things were chosen as they were (Auto fallbacks, CPU choice, defaults).
    pub notes: Vec<String>,
}

impl fmt::Display for ReservationPlan {
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
        if self.shared {
            writeln!(f, "  {:<14} sealed memfd (map it by fd)", "shared")?;
        }
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

impl ReservationPlan {
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
    /// [`crate::Error::PageSizeAuto`] if the page size is not concrete (`Auto`).
    pub fn ledger_parts(&self) -> crate::Result<Vec<(NodeId, u64, u64)>> {
        let class = crate::ledger::class_of(self.page_size).ok_or(crate::Error::PageSizeAuto {
            what: "a ledger charge",
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
    /// Whether the memory is a sealed memory file others can map ([`Reservation::as_fd`]).
    pub shared: bool,
    /// For `Transparent`: bytes the kernel backs with huge pages (`AnonHugePages`, or
    /// `ShmemPmdMapped` for a shared reservation).
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
        if self.shared {
            row(
                f,
                "shared",
                "sealed memfd (F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL)".into(),
            )?;
        }
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
/// Invariant: `ptr..ptr+len` is a mapping created by this crate — private anonymous memory, or
/// the whole of a sealed memory file mapped shared (a shared reservation, built with
/// [`ReservationBuilder::shared`] or adopted with [`Reservation::adopt`]) — owned by this
/// value alone, and readable and writable for as long as the value lives. Other processes may
/// map a shared reservation's file too and write it concurrently: like any shared guest RAM,
/// its bytes can change under a `&[u8]` of it then.
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
            facts: None,
            cpus: None,
            ledger: None,
            vm: None,
            shared: false,
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
        self.map.as_slice()
    }

    /// The region as mutable bytes.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.map.as_mut_slice()
    }

    /// What was reserved, where, and how long it took.
    pub fn report(&self) -> &Report {
        &self.report
    }

    /// The page size in use.
    pub fn page_size(&self) -> PageSize {
        self.report.page_size
    }

    /// The descriptor of a shared reservation's sealed memory file (`None` for a private
    /// one). Another process maps it with `MAP_SHARED` (QEMU `memory-backend-file`,
    /// `share=on`; Cloud Hypervisor `shared=on`; a vhost-user back-end) or adopts it with
    /// [`Reservation::adopt`]; send it with [`crate::shared::send_fd`]. It is close-on-exec.
    pub fn as_fd(&self) -> Option<BorrowedFd<'_>> {
        self.map.file.as_ref().map(|f| f.as_fd())
    }

    /// Gives up this process's mapping of a shared reservation and returns its file and its
    /// ledger charge. The pages live on in the file for as long as a descriptor or a mapping
    /// of it does; keep the charge alive for that long too (or hand it to the process that
    /// will hold the memory), since dropping it refunds the ledger while the memory is still
    /// held.
    ///
    /// # Errors
    /// A private reservation is given back unchanged: it has no file.
    #[allow(clippy::result_large_err)] // the error is the reservation itself, given back
    pub fn into_fd(self) -> std::result::Result<(OwnedFd, Option<crate::ledger::VmRecord>), Self> {
        if self.map.file.is_none() {
            return Err(self);
        }
        let Reservation {
            mut map, charge, ..
        } = self;
        let file = map.file.take().expect("checked above");
        // Unmap (the charge is not refunded: it travels with the file).
        drop(map);
        Ok((file, charge))
    }
}
