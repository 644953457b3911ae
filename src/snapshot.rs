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
    /// The host's name (`/proc/sys/kernel/hostname` when taken by `numapin status`, or
    /// `$NUMAPIN_HOSTNAME`); a label, not an identity.
    #[cfg_attr(feature = "serde", serde(default))]
    pub host: String,
    /// What identifies the host (see [`HostIdentity`]): its `/etc/machine-id`, or
    /// `$NUMAPIN_HOST_ID`. Empty in snapshots from before it existed.
    #[cfg_attr(
        feature = "serde",
        serde(default, skip_serializing_if = "String::is_empty")
    )]
    pub host_id: String,
    /// Per node, per page-size class.
    pub nodes: Vec<NodeSnapshot>,
    /// Per VM.
    pub vms: Vec<VmSnapshot>,
}

/// Who a snapshot is from.
///
/// A host is identified by the pair (`host_id`, `host`): `host_id` is the systemd machine id
/// (`/etc/machine-id`, 32 hex digits, set once at install and stable across reboots and
/// renames), `host` the hostname. The pair rather than the machine id alone, because images
/// cloned without clearing `/etc/machine-id` give several hosts one id; the pair rather than
/// the hostname alone, because hostnames are reused. Never the process id: a host runs many
/// VMMs. `$NUMAPIN_HOST_ID` and `$NUMAPIN_HOSTNAME` override both (tests that stand for
/// several hosts on one machine, containers without a machine id).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HostIdentity {
    /// The hostname.
    pub host: String,
    /// The machine id (empty when none can be read).
    pub host_id: String,
}

impl HostIdentity {
    /// This host's identity: `$NUMAPIN_HOSTNAME` or `/proc/sys/kernel/hostname`, and
    /// `$NUMAPIN_HOST_ID` or `/etc/machine-id` (empty when unreadable).
    pub fn this_host() -> HostIdentity {
        let pick = |var: &str, file: &str| {
            std::env::var(var)
                .ok()
                .filter(|v| !v.is_empty())
                .or_else(|| std::fs::read_to_string(file).ok())
                .map(|s| s.trim().to_string())
                .unwrap_or_default()
        };
        HostIdentity {
            host: pick("NUMAPIN_HOSTNAME", "/proc/sys/kernel/hostname"),
            host_id: pick("NUMAPIN_HOST_ID", "/etc/machine-id"),
        }
    }
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

/// The name of the ledger records holding warm memory (`numapin serve`): memory kept zeroed and
/// ready to hand out, which the planner counts as free (it is there for whoever needs it,
/// failover included), not as a VM.
pub const WARM_VM_NAME: &str = "numapin-serve:warm";

/// The name of the ledger records holding memory `numapin serve` is zeroing before it can hand
/// it out: a refill the kernel is populating, or memory taken back from a VM (warm within
/// moments: the planner counts it as free too).
pub const ZEROING_VM_NAME: &str = "numapin-serve:zeroing";

/// Whether a ledger record holds `numapin serve`'s own memory (warm, or being zeroed) rather
/// than a VM's.
pub fn is_pool_memory(vm_name: &str) -> bool {
    vm_name == WARM_VM_NAME || vm_name == ZEROING_VM_NAME
}

/// The margin of the right-size rule over the guest's peak: 25% (250,000 parts per million).
///
/// One rule serves `numapin status` (its hint and the `numapin_vm_right_size_bytes` metric) and
/// `numapin plan --rightsize`. A quarter rather than less: the peak is the most the guest was
/// *seen* to use over the VM's life so far, an underestimate of what it may need, and a VM
/// sized too small pays with guest OOM kills or swapping while one sized too large only holds
/// pages the planner already sees.
pub const RIGHT_SIZE_MARGIN_PPM: u64 = 250_000;

/// The right-size rule: `peak_bytes` plus `margin_ppm` millionths of it, rounded up to whole
/// pages of `page_size_bytes` (the VM's largest page-size class: a VM backed by 1 GiB pages
/// can only be resized in whole 1 GiB pages). Saturates at `u64::MAX`. The caller decides what
/// to do when the answer is not below the allocation.
pub fn right_size_bytes(peak_bytes: u64, page_size_bytes: u64, margin_ppm: u64) -> u64 {
    let with = u128::from(peak_bytes) * u128::from(1_000_000u64.saturating_add(margin_ppm));
    let with = u64::try_from(with.div_ceil(1_000_000)).unwrap_or(u64::MAX);
    let page = page_size_bytes.max(1);
    with.div_ceil(page).saturating_mul(page)
}

impl Snapshot {
    /// Puts the snapshot in canonical order: nodes by id, classes by page size, VMs by
    /// (name, pid), each VM's reservations by (node, page size). Two snapshots of the same
    /// state compare equal after this, whatever order they were produced in (the ledger's slot
    /// order, a Prometheus answer).
    pub fn canonicalize(&mut self) {
        self.nodes.sort_by_key(|n| n.id);
        for n in &mut self.nodes {
            n.classes.sort_by_key(|c| c.page_size_bytes);
        }
        self.vms
            .sort_by(|a, b| (&a.name, a.pid).cmp(&(&b.name, b.pid)));
        for v in &mut self.vms {
            v.reservations.sort_by_key(|r| (r.node, r.page_size_bytes));
        }
    }
}

impl VmSnapshot {
    /// The peak the guest reported (the larger of `guest_used_peak_bytes` and
    /// `guest_used_bytes`: a guest that reported once has a peak of at least that); 0 if unknown.
    pub fn guest_peak_bytes(&self) -> u64 {
        self.guest_used_peak_bytes.max(self.guest_used_bytes)
    }

    /// The largest page size this VM holds memory in (4096 when it holds none).
    pub fn largest_page_bytes(&self) -> u64 {
        self.reservations
            .iter()
            .filter(|r| r.bytes > 0)
            .map(|r| r.page_size_bytes)
            .max()
            .unwrap_or(4096)
    }

    /// What this VM should be sized to by the right-size rule ([`right_size_bytes`] with
    /// [`RIGHT_SIZE_MARGIN_PPM`] and the VM's largest page); `None` when its guest never
    /// reported.
    pub fn right_size_hint(&self) -> Option<u64> {
        let peak = self.guest_peak_bytes();
        (peak > 0).then(|| right_size_bytes(peak, self.largest_page_bytes(), RIGHT_SIZE_MARGIN_PPM))
    }

    /// Bytes this VM has reserved over all nodes and classes (saturating: a snapshot read from
    /// another host may carry any numbers).
    pub fn reserved_bytes(&self) -> u64 {
        self.reservations
            .iter()
            .fold(0u64, |acc, r| acc.saturating_add(r.bytes))
    }
}

/// The most bytes [`read_file`] accepts: a snapshot is about 200 bytes per VM and class, so
/// 64 MiB is far beyond any host, and a device or a wrong file fails fast instead of filling
/// memory.
#[cfg(feature = "serde")]
pub const MAX_SNAPSHOT_BYTES: u64 = 64 << 20;

/// Parses one snapshot from JSON; errors name `label`.
///
/// # Errors
/// [`Error::InvalidSnapshot`](crate::Error::InvalidSnapshot) with the line and column.
#[cfg(feature = "serde")]
pub fn from_json(label: &str, bytes: &[u8]) -> crate::Result<Snapshot> {
    serde_json::from_slice(bytes).map_err(|e| crate::Error::InvalidSnapshot {
        file: label.to_string(),
        field: format!("line {} column {}", e.line(), e.column()),
        what: e.to_string(),
    })
}

/// Reads and parses one snapshot file, reading at most [`MAX_SNAPSHOT_BYTES`] (a FIFO or a
/// device such as `/dev/zero` fails with [`Error::SnapshotTooLarge`](crate::Error)).
///
/// # Errors
/// [`Error::InvalidSnapshot`](crate::Error::InvalidSnapshot) when the file cannot be read or
/// parsed; [`Error::SnapshotTooLarge`](crate::Error::SnapshotTooLarge).
#[cfg(feature = "serde")]
pub fn read_file(path: &std::path::Path) -> crate::Result<Snapshot> {
    use std::io::Read;
    let label = path.display().to_string();
    let unreadable = |e: std::io::Error| crate::Error::InvalidSnapshot {
        file: label.clone(),
        field: "(file)".into(),
        what: format!("cannot read it: {e}"),
    };
    let f = std::fs::File::open(path).map_err(unreadable)?;
    let mut buf = Vec::new();
    f.take(MAX_SNAPSHOT_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(unreadable)?;
    if buf.len() as u64 > MAX_SNAPSHOT_BYTES {
        return Err(crate::Error::SnapshotTooLarge {
            file: label,
            size_hint: format!("more than {MAX_SNAPSHOT_BYTES} bytes:"),
            limit: MAX_SNAPSHOT_BYTES,
        });
    }
    from_json(&label, &buf)
}

/// Reads and parses snapshot files on all CPUs, returning them in the order given with their
/// paths as labels. The first error in that order wins.
///
/// # Errors
/// As [`read_file`].
#[cfg(feature = "serde")]
pub fn read_files(paths: &[std::path::PathBuf]) -> crate::Result<Vec<(String, Snapshot)>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(paths.len().div_ceil(16).max(1));
    let chunk = paths.len().div_ceil(threads).max(1);
    let parts: Vec<crate::Result<Vec<(String, Snapshot)>>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths
            .chunks(chunk)
            .map(|ps| {
                s.spawn(move || {
                    ps.iter()
                        .map(|p| Ok((p.display().to_string(), read_file(p)?)))
                        .collect::<crate::Result<Vec<_>>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut out = Vec::with_capacity(paths.len());
    for p in parts {
        out.extend(p?);
    }
    Ok(out)
}
