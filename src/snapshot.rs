//! The host snapshot: what `numapin status --json` prints and what the planner reads.
//!
//! One snapshot describes one host's ledger at one moment: per node and page-size class the
//! capacity, the limit admission enforces and what is reserved; per VM its charges and what the
//! guest reports it uses. The ledger produces it; the planner consumes snapshots of many hosts.
//! Field names are the JSON keys (stable; extend, never rename).

use crate::units::NodeId;

/// One host's ledger at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Snapshot {
    /// The host's name (`/proc/sys/kernel/hostname` when taken by `numapin status`).
    #[cfg_attr(feature = "serde", serde(default))]
    pub host: String,
    /// Per node, per page-size class.
    pub nodes: Vec<NodeSnapshot>,
    /// Per VM.
    pub vms: Vec<VmSnapshot>,
}

/// One NUMA node of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NodeSnapshot {
    /// The node.
    pub id: NodeId,
    /// One entry per page-size class the node offers.
    pub classes: Vec<ClassSnapshot>,
}

/// One (node, page-size class) of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct ClassSnapshot {
    /// Page size of the class: 4096 for base pages and THP (one class: both come from the
    /// node's buddy allocator), 2097152 or 1073741824 for the hugetlb pools.
    pub page_size_bytes: u64,
    /// What the kernel has: the node's pool for hugetlb classes, its memory for base pages.
    pub capacity_bytes: u64,
    /// What admission allows to be reserved: capacity minus the host reserve minus headroom.
    pub limit_bytes: u64,
    /// Reserved by live VMs.
    pub reserved_bytes: u64,
    /// `limit_bytes - reserved_bytes` (never negative).
    pub available_bytes: u64,
}

/// One VM of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmSnapshot {
    /// The VM's name.
    pub name: String,
    /// The owning process.
    pub pid: u32,
    /// Charges per (node, class).
    pub reservations: Vec<VmReservation>,
    /// What the guest reports it uses (balloon statistics or a guest agent); 0 if unknown.
    #[cfg_attr(feature = "serde", serde(default))]
    pub guest_used_bytes: u64,
    /// The peak of `guest_used_bytes` since the VM started; 0 if unknown.
    #[cfg_attr(feature = "serde", serde(default))]
    pub guest_used_peak_bytes: u64,
    /// Whether the VM must sit on a single NUMA node (its memory is bound to one node).
    /// Defaults to true when every reservation is on one node.
    #[cfg_attr(feature = "serde", serde(default))]
    pub single_node: Option<bool>,
    /// Bytes of the VM's memory populated (faulted in), when the ledger knows it.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "Option::is_none")
    )]
    pub populated_bytes: Option<u64>,
}

/// One charge of a VM.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct VmReservation {
    /// The node charged.
    pub node: NodeId,
    /// The page-size class charged (see [`ClassSnapshot::page_size_bytes`]).
    pub page_size_bytes: u64,
    /// Bytes charged.
    pub bytes: u64,
}

impl VmSnapshot {
    /// Bytes this VM has reserved over all nodes and classes (saturating: a snapshot read from
    /// another host may carry any numbers).
    pub fn reserved_bytes(&self) -> u64 {
        self.reservations
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.bytes))
    }
}
