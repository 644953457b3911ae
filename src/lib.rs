#![doc = include_str!("../README.md")]
//!
//! # Modules
//! - [`topology`]: NUMA nodes, CPUs, memory and hugepage pools, read from sysfs.
//! - [`reservation`]: the builder and the RAII region (map → bind → populate → lock → verify).
//! - [`shared`]: shared reservations: sealed memfds, adopting one, passing descriptors.
//! - [`plan`]: N+k failover, headroom, right-sizing and placement policies over snapshots.
//! - [`ledger`]: host-wide accounting and lock-free admission control, shared by every VMM.
//! - [`fleet`]: a host's capacity and failover hold-back for Prometheus, Kubernetes
//!   NodeResourceTopology and OpenStack Placement; snapshots rebuilt from Prometheus.
//! - [`snapshot`]: one host's ledger at one moment, as `numapin status --json` prints it.
//! - [`baseline`]: the ballooning baseline (lazy region + balloon) the benchmarks compare with.
//! - [`measure`]: the measurement kernels `numapin bench` and the criterion benches share.
//! - [`bench`](mod@bench): the protocols of `numapin bench` (numapin against the baseline, side by side).
//! - [`smaps`]: the kernel's view of a mapping, for audits and tests.
//! - [`cgroup`]: the calling process's cgroup limits (memory, hugetlb, cpuset).
//! - [`process`]: the calling process and thread: CPU affinity, memlock, kernel release.
//! - [`units`]: node ids, page sizes, byte sizes.
//! - `topology_hwloc` (feature `hwloc`): the topology from hwloc, with memory attributes and
//!   the package/core structure.
//! - `vmm` (feature `vm-memory`): reservations as rust-vmm `GuestMemoryMmap` regions.
//!
//! # Lint policy
//! `unsafe` is denied at the crate root and allowed only in the modules that need it (`sys`,
//! `populate`, `reservation::map`, `baseline`, `vmm`) and on the ledger's pre-checked word
//! pointer (`Word64`); every block has a `// SAFETY:` comment. `sys`, the raw system calls, is
//! private to the crate: [`process`] and [`HostFacts`] are its safe public face.
//! `missing_docs` warns (CI turns warnings into errors).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

#[allow(unsafe_code)]
pub mod baseline;
pub mod bench;
pub mod cgroup;
mod error;
pub mod fleet;
pub mod ledger;
pub mod measure;
pub mod plan;
#[cfg(feature = "pool")]
pub mod pool;
#[allow(unsafe_code)]
mod populate;
pub mod process;
pub mod reservation;
pub mod shared;
pub mod smaps;
pub mod snapshot;
pub(crate) mod sync;
#[allow(unsafe_code)]
pub(crate) mod sys;
pub mod topology;
#[cfg(feature = "hwloc")]
pub mod topology_hwloc;
pub mod units;
#[cfg(feature = "vm-memory")]
#[allow(unsafe_code)] // one block: vm-memory's `with_raw_mmap_pointer` over the reservation
pub mod vmm;

pub use error::{Error, PolicyDenial, Result, TrustProblem};
pub use ledger::{ClassSpec, Ledger, LedgerConfig, VmRecord};
pub use reservation::{
    AdoptBuilder, FaultGuarantee, HostFacts, LockKind, MemPolicy, PendingReservation,
    PopulateProgress, Report, Reservation, ReservationBuilder, ReservationPlan,
};
pub use topology::{HugepagePool, NumaNode, ThpMode, Topology};
pub use units::{format_bytes, parse_size, NodeId, PageSize, ParseError};
