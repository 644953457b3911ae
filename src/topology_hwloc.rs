//! Topology from hwloc (feature `hwloc`): the same [`Topology`] as [`Topology::from_sysfs`],
//! plus what sysfs does not say: memory attributes (bandwidth, latency) where the platform
//! reports them, and the package/core structure for choosing populate CPUs.
//!
//! Needs the system hwloc library (`libhwloc-dev`, hwloc ≥ 2.8; Debian 12 ships 2.9) and a
//! Rust toolchain that builds `hwlocality` (≥ 1.85, newer than numapin's own MSRV of 1.82).
//! The default build has no C dependency.
//!
//! # What comes from where
//! hwloc describes the hardware: nodes, their CPUs (restricted, like hwloc itself, to the
//! CPUs this process is allowed to use), total memory, hugepage pool sizes, distances, and
//! — from the firmware's HMAT table, when it has one — bandwidth and latency. It does not track
//! what is *free* now, so the counters of [`NumaNode`] that change at run time (free memory,
//! reclaimable and deferred memory, free and surplus hugepages) and the THP mode are read
//! from sysfs, exactly as [`Topology::from_sysfs`] reads them.
//!
//! ```no_run
//! use numapin::topology_hwloc::HwlocTopology;
//! use numapin::{NodeId, Reservation};
//!
//! let hw = HwlocTopology::load()?;
//! for m in &hw.memory {
//!     match m.bandwidth_mib_s {
//!         Some(bw) => println!("node {}: {bw} MiB/s from its own CPUs", m.node),
//!         None => println!("node {}: the platform reports no bandwidth", m.node),
//!     }
//! }
//! // One populate worker per physical core of node 0.
//! let r = Reservation::builder(1 << 30)
//!     .node(NodeId(0))
//!     .cpus(hw.one_cpu_per_core(NodeId(0)))
//!     .build()?;
//! # Ok::<(), numapin::Error>(())
//! ```

use std::collections::BTreeMap;

use hwlocality::bitmap::BitmapRef;
use hwlocality::cpu::cpuset::CpuSet;
use hwlocality::memory::attribute::{Initiator, MemoryAttribute};
use hwlocality::object::attributes::ObjectAttributes;
use hwlocality::object::types::ObjectType;
use hwlocality::object::TopologyObject;

use crate::error::{Error, Result};
use crate::topology::format_cpulist;
use crate::topology::{HugepagePool, NumaNode, Topology};
use crate::units::{format_bytes, NodeId};

/// What hwloc knows about a host, on top of the plain [`Topology`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct HwlocTopology {
    /// The topology in numapin's shape (see the module docs for which field comes from where).
    pub topology: Topology,
    /// Memory attributes of every node, in node order.
    pub memory: Vec<NodeMemory>,
    /// Packages (sockets), their cores and the cores' CPUs.
    pub packages: Vec<Package>,
    /// The CPUs hwloc considers usable by this process (its cgroup cpuset); hwloc lists only
    /// these in nodes and cores, sysfs lists every online CPU.
    pub allowed_cpus: Vec<u32>,
    /// The hwloc API version of the library (hwloc 2.9 reports API `"2.8.0"`).
    pub hwloc_api: String,
    /// What hwloc did not report, and other remarks for a reader.
    pub notes: Vec<String>,
}

/// Memory attributes of one node, as hwloc reports them. Bandwidth and latency come from the
/// firmware (ACPI HMAT) and are measured from the node's own CPUs (its locality); they are
/// `None` where the platform does not report them — most VMs, and many servers.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct NodeMemory {
    /// The node.
    pub node: NodeId,
    /// Capacity in bytes (hwloc's `Capacity` attribute: the node's memory).
    pub capacity_bytes: Option<u64>,
    /// Number of CPUs local to the node (hwloc's `Locality` attribute).
    pub locality_cpus: Option<u64>,
    /// Access bandwidth from the node's CPUs, MiB/s.
    pub bandwidth_mib_s: Option<u64>,
    /// Access latency from the node's CPUs, nanoseconds.
    pub latency_ns: Option<u64>,
    /// Read bandwidth, MiB/s.
    pub read_bandwidth_mib_s: Option<u64>,
    /// Write bandwidth, MiB/s.
    pub write_bandwidth_mib_s: Option<u64>,
    /// Read latency, nanoseconds.
    pub read_latency_ns: Option<u64>,
    /// Write latency, nanoseconds.
    pub write_latency_ns: Option<u64>,
}

/// A processor package (socket).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Package {
    /// The OS index of the package (`physical_package_id`), if known.
    pub os_index: Option<u32>,
    /// Its cores, by logical order.
    pub cores: Vec<Core>,
}

/// A physical core.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Core {
    /// The OS index of the core (`core_id`, unique within its package only), if known.
    pub os_index: Option<u32>,
    /// Its CPUs (hardware threads), ascending.
    pub cpus: Vec<u32>,
    /// The nodes whose memory is local to it.
    pub nodes: Vec<NodeId>,
}

impl HwlocTopology {
    /// Discovers the host with hwloc and reads the run-time counters from sysfs.
    ///
    /// # Errors
    /// [`Error::Hwloc`] when hwloc cannot build a topology; the sysfs errors of
    /// [`Topology::from_sysfs`].
    pub fn load() -> Result<HwlocTopology> {
        let hw = hwlocality::Topology::new().map_err(|e| Error::Hwloc {
            what: "topology discovery",
            reason: e.to_string(),
        })?;
        let sysfs = Topology::from_sysfs()?;
        from_hwloc(&hw, &sysfs)
    }

    /// Every node id, ascending.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.topology.node_ids()
    }

    /// Cores whose CPUs all belong to `node`.
    pub fn cores_of(&self, node: NodeId) -> Vec<&Core> {
        let Some(n) = self.topology.node(node) else {
            return Vec::new();
        };
        self.packages
            .iter()
            .flat_map(|p| &p.cores)
            .filter(|c| !c.cpus.is_empty() && c.cpus.iter().all(|x| n.cpus.contains(x)))
            .collect()
    }

    /// The first CPU of every core of `node`: pass it to
    /// [`ReservationBuilder::cpus`](crate::ReservationBuilder::cpus) for one populate worker
    /// per physical core (hardware threads of one core share its memory pipeline, so a second
    /// worker per core adds little). Empty for a CPU-less node.
    pub fn one_cpu_per_core(&self, node: NodeId) -> Vec<u32> {
        let mut cpus: Vec<u32> = self
            .cores_of(node)
            .iter()
            .filter_map(|c| c.cpus.first().copied())
            .collect();
        cpus.sort_unstable();
        cpus
    }

    /// Where this description and `sysfs` (normally [`Topology::from_sysfs`]) disagree about
    /// the hardware: node ids, each node's CPUs (sysfs's restricted to
    /// [`HwlocTopology::allowed_cpus`]), total memory by more than `mem_tolerance` (a fraction:
    /// memory hot-plug or a balloon can move it between the two readings), hugepage pool sizes,
    /// distances. Empty when they agree; one sentence per difference otherwise.
    pub fn disagreements(&self, sysfs: &Topology, mem_tolerance: f64) -> Vec<String> {
        let mut out = Vec::new();
        let (h_ids, s_ids) = (self.topology.node_ids(), sysfs.node_ids());
        if h_ids != s_ids {
            out.push(format!("nodes: hwloc {h_ids:?}, sysfs {s_ids:?}"));
            return out;
        }
        for (h, s) in self.topology.nodes.iter().zip(&sysfs.nodes) {
            let s_cpus: Vec<u32> = s
                .cpus
                .iter()
                .copied()
                .filter(|c| self.allowed_cpus.binary_search(c).is_ok())
                .collect();
            if h.cpus != s_cpus {
                out.push(format!(
                    "node {} cpus: hwloc {}, sysfs {} (allowed: {})",
                    h.id,
                    format_cpulist(&h.cpus),
                    format_cpulist(&s_cpus),
                    format_cpulist(&self.allowed_cpus)
                ));
            }
            let (a, b) = (h.mem_total_bytes as f64, s.mem_total_bytes as f64);
            if (a - b).abs() > b * mem_tolerance {
                out.push(format!(
                    "node {} memory: hwloc {}, sysfs {} (more than {:.1}% apart)",
                    h.id,
                    format_bytes(h.mem_total_bytes),
                    format_bytes(s.mem_total_bytes),
                    100.0 * mem_tolerance
                ));
            }
            let pools = |n: &NumaNode| -> Vec<(u64, u64)> {
                n.hugepages
                    .iter()
                    .map(|p| (p.page_size_bytes, p.total))
                    .collect()
            };
            if pools(h) != pools(s) {
                out.push(format!(
                    "node {} hugepage pools (page bytes, pages): hwloc {:?}, sysfs {:?}",
                    h.id,
                    pools(h),
                    pools(s)
                ));
            }
        }
        if self.topology.distances != sysfs.distances {
            out.push(format!(
                "distances: hwloc {:?}, sysfs {:?}",
                self.topology.distances, sysfs.distances
            ));
        }
        out
    }

    /// The memory attributes of `node`.
    pub fn memory_of(&self, node: NodeId) -> Option<&NodeMemory> {
        self.memory.iter().find(|m| m.node == node)
    }
}

fn ids<B>(set: Option<BitmapRef<'_, B>>) -> Vec<u32>
where
    B: hwlocality::bitmap::SpecializedBitmap + AsRef<hwlocality::bitmap::Bitmap>,
{
    let Some(set) = set else {
        return Vec::new();
    };
    let owned: &B = &set;
    let bitmap: &hwlocality::bitmap::Bitmap = owned.as_ref();
    bitmap
        .iter_set()
        .map(|i| u32::try_from(usize::from(i)).unwrap_or(u32::MAX))
        .collect()
}

fn os_index(o: &TopologyObject) -> Option<u32> {
    o.os_index().and_then(|i| u32::try_from(i).ok())
}

/// The value of one memory attribute for `node`, from the node's own CPUs where the attribute
/// needs an initiator. `None` when hwloc has no value.
fn attr(a: &MemoryAttribute<'_>, node: &TopologyObject, needs_initiator: bool) -> Option<u64> {
    let initiator = if needs_initiator {
        let cpus: CpuSet = node.cpuset()?.clone_target();
        if cpus.is_empty() {
            return None;
        }
        Some(Initiator::CpuSet(cpus.into()))
    } else {
        None
    };
    a.value(initiator, node).ok().flatten()
}

/// Builds the [`HwlocTopology`] from a loaded hwloc topology and the sysfs counters.
fn from_hwloc(hw: &hwlocality::Topology, sysfs: &Topology) -> Result<HwlocTopology> {
    let mut notes = Vec::new();
    let numa: Vec<&TopologyObject> = hw.objects_with_type(ObjectType::NUMANode).collect();
    let mut nodes = Vec::with_capacity(numa.len());
    let mut memory = Vec::with_capacity(numa.len());
    for o in &numa {
        let id = NodeId(os_index(o).ok_or_else(|| Error::Hwloc {
            what: "NUMA node without an OS index",
            reason: format!("object {o}"),
        })?);
        let live = sysfs.node(id);
        let mut cpus = ids(o.cpuset());
        // hwloc gives a CPU-less node the CPUs of its locality (e.g. its package); numapin's
        // `cpus` are the CPUs *of* the node, as sysfs lists them.
        if let Some(s) = live {
            if s.cpus.is_empty() && !cpus.is_empty() {
                cpus.clear();
            }
        }
        let (local_memory, page_types) = match o.attributes() {
            Some(ObjectAttributes::NUMANode(a)) => (
                a.local_memory().map_or(0, |m| m.get()),
                a.page_types()
                    .iter()
                    .map(|p| (p.size().get(), p.count()))
                    .collect::<Vec<_>>(),
            ),
            _ => (0, Vec::new()),
        };
        let mut hugepages: Vec<HugepagePool> = page_types
            .iter()
            .filter(|(size, _)| *size > 4096)
            .map(|&(size, total)| {
                let now = live.and_then(|s| s.hugepages.iter().find(|p| p.page_size_bytes == size));
                HugepagePool {
                    page_size_bytes: size,
                    total,
                    free: now.map_or(0, |p| p.free),
                    surplus: now.map_or(0, |p| p.surplus),
                }
            })
            .collect();
        hugepages.sort_by_key(|p| p.page_size_bytes);
        nodes.push(NumaNode {
            id,
            cpus,
            mem_total_bytes: local_memory,
            mem_free_bytes: live.map_or(0, |s| s.mem_free_bytes),
            mem_reclaimable_bytes: live.map_or(0, |s| s.mem_reclaimable_bytes),
            mem_deferred_bytes: live.map_or(0, |s| s.mem_deferred_bytes),
            hugepages,
        });
        if live.is_none() {
            notes.push(format!(
                "node {id} is in hwloc's topology but not online in sysfs: run-time counters are zero"
            ));
        }

        memory.push(NodeMemory {
            node: id,
            capacity_bytes: attr(&MemoryAttribute::capacity(hw), o, false),
            locality_cpus: attr(&MemoryAttribute::locality(hw), o, false),
            bandwidth_mib_s: attr(&MemoryAttribute::bandwidth(hw), o, true),
            latency_ns: attr(&MemoryAttribute::latency(hw), o, true),
            read_bandwidth_mib_s: attr(&MemoryAttribute::read_bandwidth(hw), o, true),
            write_bandwidth_mib_s: attr(&MemoryAttribute::write_bandwidth(hw), o, true),
            read_latency_ns: attr(&MemoryAttribute::read_latency(hw), o, true),
            write_latency_ns: attr(&MemoryAttribute::write_latency(hw), o, true),
        });
    }
    nodes.sort_by_key(|n| n.id);
    memory.sort_by_key(|m| m.node);
    if memory
        .iter()
        .all(|m| m.bandwidth_mib_s.is_none() && m.latency_ns.is_none())
    {
        notes.push(
            "the platform reports no memory bandwidth or latency (no ACPI HMAT table): those attributes are absent"
                .into(),
        );
    }

    // Distances: hwloc's NUMA latency matrix (the kernel's SLIT distances), if any.
    let order: BTreeMap<NodeId, usize> = nodes.iter().enumerate().map(|(i, n)| (n.id, i)).collect();
    let mut distances = sysfs.distances.clone();
    let from_hwloc = hw
        .distances_with_type(None, ObjectType::NUMANode)
        .ok()
        .and_then(|d| d.into_iter().next());
    match from_hwloc {
        Some(d) => {
            let objs: Vec<Option<NodeId>> = d
                .objects()
                .map(|o| o.and_then(os_index).map(NodeId))
                .collect();
            let n = objs.len();
            let mut m = vec![vec![0u32; nodes.len()]; nodes.len()];
            for (i, a) in objs.iter().enumerate() {
                for (j, b) in objs.iter().enumerate() {
                    if let (Some(a), Some(b)) = (a, b) {
                        if let (Some(&x), Some(&y)) = (order.get(a), order.get(b)) {
                            m[x][y] = u32::try_from(d.distances()[i * n + j]).unwrap_or(u32::MAX);
                        }
                    }
                }
            }
            distances = m;
        }
        None if nodes.len() > 1 => {
            notes.push("hwloc reports no NUMA distances: the kernel's are used".into());
        }
        None => {
            // One node: hwloc has no matrix to report; the kernel's is [[10]].
        }
    }

    // Packages and cores.
    let mut packages = Vec::new();
    let node_of_cpu = |cpu: u32| nodes.iter().find(|n| n.cpus.contains(&cpu)).map(|n| n.id);
    for p in hw.objects_with_type(ObjectType::Package) {
        let pcpus = ids(p.cpuset());
        let mut cores = Vec::new();
        for c in hw.objects_with_type(ObjectType::Core) {
            let ccpus = ids(c.cpuset());
            if ccpus.is_empty() || !ccpus.iter().all(|x| pcpus.contains(x)) {
                continue;
            }
            let mut cnodes: Vec<NodeId> = ccpus.iter().filter_map(|&x| node_of_cpu(x)).collect();
            cnodes.sort_unstable();
            cnodes.dedup();
            cores.push(Core {
                os_index: os_index(c),
                cpus: ccpus,
                nodes: cnodes,
            });
        }
        packages.push(Package {
            os_index: os_index(p),
            cores,
        });
    }
    if packages.is_empty() {
        notes.push("hwloc reports no package: core structure unknown".into());
    }

    let mut allowed_cpus = ids(Some(hw.allowed_cpuset()));
    allowed_cpus.sort_unstable();
    let v = hwlocality::hwloc_api_version();
    Ok(HwlocTopology {
        topology: Topology {
            nodes,
            distances,
            thp: sysfs.thp,
        },
        memory,
        packages,
        allowed_cpus,
        hwloc_api: format!("{}.{}.{}", v >> 16, (v >> 8) & 0xff, v & 0xff),
        notes,
    })
}
