//! [`HostFacts`]: everything the preflight reads about the host and the calling process,
//! gathered in one place so that the preflight itself is a pure function of it.

use std::path::Path;

use crate::cgroup::CgroupFacts;
use crate::error::{Error, Result};
use crate::sys;
use crate::topology::{read_host_pools, HostPool, Topology};
use crate::units::PageSize;

/// What the calling process may lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MemlockFacts {
    /// Whether the process has `CAP_IPC_LOCK` (then no limit applies).
    pub cap_ipc_lock: bool,
    /// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` = unlimited).
    pub limit: u64,
    /// Bytes the process has locked already (`VmLck`).
    pub locked: u64,
}

/// The host and the calling process as the preflight sees them: topology (nodes, CPUs, node
/// memory, per-node pools), the host-wide pools with their reserved pages, the CPUs the
/// process may run on and the one it runs on, its memlock limit, the memory nodes its cpuset
/// allows, its cgroup limits and the kernel release.
///
/// [`HostFacts::gather`] reads them; [`crate::ReservationBuilder::preflight_on`] decides on
/// them without reading anything, so a decision can be replayed or asked "what if".
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HostFacts {
    /// Nodes, CPUs, node memory and per-node hugetlb pools.
    pub topology: Topology,
    /// Host-wide hugetlb pools (with `HugePages_Rsvd`, which the kernel keeps per host only).
    pub host_pools: Vec<HostPool>,
    /// CPUs this process may run on (`sched_getaffinity`), ascending.
    pub affinity: Vec<u32>,
    /// The CPU the calling thread runs on, if the kernel says.
    pub current_cpu: Option<u32>,
    /// What the process may lock.
    pub memlock: MemlockFacts,
    /// Memory nodes the process's cpuset allows (`Mems_allowed_list`); `None` if unknown.
    pub mems_allowed: Option<Vec<u32>>,
    /// Cgroup limits (memory, hugetlb, cpuset file).
    pub cgroup: CgroupFacts,
    /// The running kernel's release (`uname -r`).
    pub kernel_release: String,
}

impl HostFacts {
    /// Reads the facts of this host and process; `topology` replaces the sysfs topology if
    /// given.
    ///
    /// # Errors
    /// A sysfs error reading the topology or the host-wide pools, or [`Error::Sys`] if the
    /// CPU affinity cannot be read.
    pub fn gather(topology: Option<Topology>) -> Result<HostFacts> {
        let topology = match topology {
            Some(t) => t,
            None => Topology::from_sysfs()?,
        };
        let affinity = sys::affinity().map_err(|e| Error::sys("sched_getaffinity", e))?;
        Ok(HostFacts {
            topology,
            host_pools: read_host_pools(Path::new("/sys"))?,
            affinity,
            current_cpu: sys::current_cpu(),
            memlock: MemlockFacts {
                cap_ipc_lock: sys::has_cap_ipc_lock(),
                limit: sys::memlock_limit(),
                locked: sys::locked_bytes(),
            },
            mems_allowed: sys::proc_status_field("Mems_allowed_list")
                .and_then(|s| crate::topology::parse_cpulist(&s).ok()),
            cgroup: CgroupFacts::of_self(),
            kernel_release: sys::kernel_release(),
        })
    }

    /// The host-wide pool of a hugetlb page size, if the kernel has one.
    pub fn host_pool(&self, page: PageSize) -> Option<&HostPool> {
        let bytes = page.bytes()? as u64;
        self.host_pools.iter().find(|p| p.page_size_bytes == bytes)
    }
}
