//! The one error type of numapin.
//!
//! Every failure a user can cause is a variant that carries the numbers and whose message says
//! how to fix it. Errnos that numapin understands are decoded into those variants where the
//! call is made (see `sys`); the rest stay raw in [`Error::Sys`] with the name of the call.

use std::io;
use std::path::PathBuf;

use crate::units::{format_bytes, NodeId, PageSize, ParseError};

mod adopt;
mod messages;
#[cfg(feature = "pool")]
mod pool;

pub use adopt::{AdoptProblem, Seals};
#[cfg(feature = "pool")]
pub use pool::{PoolError, RefusalKind};

impl From<crate::sys::Errno> for Error {
    /// A failed system call, named by the call itself.
    fn from(e: crate::sys::Errno) -> Error {
        Error::sys(e.call, e.code)
    }
}
use messages::{
    cgroup_limit_message, hugepages_short_message, hugepages_short_on_nodes_message, limit_text,
    node_list, policy_hint, populate_hint,
};

/// `Result` with numapin's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a memory policy call was refused with `EPERM`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PolicyDenial {
    /// The calling process's cpuset does not allow some of the nodes (`Mems_allowed` in
    /// `/proc/self/status`).
    Cpuset,
    /// A seccomp filter is installed (`Seccomp:` non-zero in `/proc/self/status`) and the
    /// call was refused; a VMM jailer commonly forbids `mbind`/`set_mempolicy`.
    Seccomp,
    /// Neither explains it (e.g. `MPOL_MF_MOVE_ALL` without `CAP_SYS_NICE`, or an LSM).
    Other,
}

/// Everything that can go wrong in numapin.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The requested size is zero, or not a multiple of the page size.
    #[error("bad size {}: {reason}", format_bytes(*size))]
    InvalidSize {
        /// The size asked for, in bytes.
        size: u64,
        /// What is wrong with it and what to ask for instead.
        reason: String,
    },

    /// A concrete page size (4k, thp, 2m, 1g) was needed and `auto` was given.
    #[error("{what} needs a concrete page size (4k, thp, 2m or 1g), not auto; resolve it first (ReservationBuilder::preflight returns the page size auto chose)")]
    PageSizeAuto {
        /// What needed it (`a ledger charge`, `a shared reservation's file`, `the baseline`).
        what: &'static str,
    },

    /// No online node has memory, so a reservation without nodes has nowhere to go.
    #[error(
        "no online node has memory (online nodes: {online:?}); check /sys/devices/system/node"
    )]
    NoNodeWithMemory {
        /// The online nodes.
        online: Vec<NodeId>,
    },

    /// None of the populate CPUs given to [`crate::ReservationBuilder::cpus`] may be used.
    #[error("none of the populate cpus {} may be used by this process (allowed: {}); pick some of those", crate::units::format_id_list(asked), crate::units::format_id_list(allowed))]
    PopulateCpusNotAllowed {
        /// The CPUs asked for.
        asked: Vec<u32>,
        /// The CPUs this process may run on.
        allowed: Vec<u32>,
    },

    /// Zero populate threads were asked for.
    #[error(
        "threads must be at least 1 (0 given); leave threads unset for one per CPU of the nodes"
    )]
    ZeroThreads,

    /// A background population was cancelled (its pending reservation was dropped).
    #[error("population cancelled: the pending reservation was dropped before it finished")]
    PopulationCancelled,

    /// A shared THP baseline region was asked for.
    #[error("shared THP is governed by shmem_enabled, not by this baseline; use 4k, 2m or 1g for a shared region, or thp for a private one")]
    SharedThp,

    /// A balloon granule that is zero or not a multiple of the region's page size.
    #[error("balloon granule {granule} is not a multiple of the {} page size of this region; use {}", format_bytes(*page as u64), format_bytes((*granule).max(1).next_multiple_of(*page) as u64))]
    BalloonGranule {
        /// The granule asked for, in bytes.
        granule: usize,
        /// The region's native page size in bytes.
        page: usize,
    },

    /// The balloon's settings were changed while it holds memory.
    #[error("the balloon holds {} of this region; deflate it before changing the granule", format_bytes(*inflated))]
    BalloonBusy {
        /// Bytes the balloon holds.
        inflated: u64,
    },

    /// A balloon rate of zero bytes per second.
    #[error("a balloon rate of 0 bytes/s never finishes; pass None for no limit")]
    BalloonRateZero,

    /// A node asked for is not online on this host.
    #[error("NUMA node {node} does not exist on this host (online nodes: {online:?}); pick one of those, see `numapin topology`")]
    NodeAbsent {
        /// The node asked for.
        node: NodeId,
        /// The nodes this host has online.
        online: Vec<NodeId>,
    },

    /// A node asked for has no memory (a CPU-only node).
    #[error("NUMA node {node} has no memory (it only has CPUs); bind to a node with memory: {with_memory:?}")]
    NodeWithoutMemory {
        /// The memory-less node.
        node: NodeId,
        /// The nodes that have memory.
        with_memory: Vec<NodeId>,
    },

    /// The node(s) do not have enough free base-page memory for a `Base4K`/`Transparent`
    /// region bound to them.
    #[error("node {node} has {} free or reclaimable, {} requested for {page_size} pages; free memory on that node, choose another node, or use the interleave/preferred policy", format_bytes(*available), format_bytes(*requested))]
    NodeMemoryShort {
        /// The node.
        node: NodeId,
        /// The page size asked for.
        page_size: PageSize,
        /// Bytes requested on that node.
        requested: u64,
        /// Bytes free or reclaimable on that node.
        available: u64,
    },

    /// A hugetlb pool on the node is too small, or too many of the host's free pages are
    /// reserved by other mappings.
    #[error("{}", hugepages_short_message(*node, *page_size, *wanted, *free_on_node, *free_elsewhere, *reserved, *short))]
    HugepagesShort {
        /// The node whose pool is short.
        node: NodeId,
        /// The hugetlb page size.
        page_size: PageSize,
        /// Pages needed on that node.
        wanted: u64,
        /// Free pages on that node.
        free_on_node: u64,
        /// Free pages of that size on all other nodes together.
        free_elsewhere: u64,
        /// Free pages of the host that other mappings have reserved but not faulted in yet
        /// (`HugePages_Rsvd`, kept per host only): free, but not to be had.
        reserved: u64,
        /// Pages to add to the node's pool for the request to fit.
        short: u64,
    },

    /// The pools of the nodes a region is bound to hold too few free hugepages together.
    #[error("{}", hugepages_short_on_nodes_message(*page_size, *wanted, free, *reserved, *short))]
    HugepagesShortOnNodes {
        /// The hugetlb page size.
        page_size: PageSize,
        /// Pages needed from the nodes together.
        wanted: u64,
        /// Free pages per bound node.
        free: Vec<(NodeId, u64)>,
        /// Free pages of the host reserved by other mappings (`HugePages_Rsvd`).
        reserved: u64,
        /// Pages to add to any one of the nodes' pools for the request to fit.
        short: u64,
    },

    /// A cgroup limit of the calling process leaves less room than the reservation needs
    /// (without this check the kernel's OOM killer, or a SIGBUS, would answer at fault time).
    #[error("{}", cgroup_limit_message(file, *page_size, *requested, *limit, *usage))]
    CgroupLimit {
        /// The file that sets the limit (`.../memory.max`, `.../hugetlb.2MB.max`).
        file: PathBuf,
        /// The page size asked for: hugetlb sizes hit the hugetlb limit, the others the
        /// memory limit.
        page_size: PageSize,
        /// Bytes requested.
        requested: u64,
        /// The limit in bytes.
        limit: u64,
        /// Bytes the cgroup uses now (reclaimable page cache not counted).
        usage: u64,
    },

    /// The calling process's cpuset does not allow some of the nodes.
    #[error("nodes {} are outside this process's cpuset (memory nodes allowed: {}{}); add them to the cgroup's cpuset.mems{} or bind to allowed nodes", node_list(nodes), node_list(allowed), file.as_ref().map_or(String::new(), |f| format!(", from {}", f.display())), file.as_ref().map_or(String::new(), |f| format!(" (the file beside {})", f.display())))]
    NodesNotAllowed {
        /// The nodes asked for.
        nodes: Vec<NodeId>,
        /// The memory nodes the cpuset allows (`Mems_allowed_list`).
        allowed: Vec<NodeId>,
        /// The cgroup file listing them (`cpuset.mems.effective`), if found.
        file: Option<PathBuf>,
    },

    /// Interleaved hugetlb pages came out unevenly over the nodes: a node's pool ran out while
    /// the region was populated and the kernel took pages from another node instead.
    #[error("interleave over nodes {} came out uneven: {page_size} pages per node {}, but each node should hold {share} (one more or less); node(s) {} ran out during population (another process took pages after the preflight). Grow their pools, or reserve one bound region per node", node_list(nodes), placement.iter().map(|(n, c)| format!("{n}: {c}")).collect::<Vec<_>>().join(", "), node_list(short_nodes))]
    InterleaveUneven {
        /// The page size.
        page_size: PageSize,
        /// The nodes of the policy.
        nodes: Vec<NodeId>,
        /// Pages found per node.
        placement: Vec<(NodeId, u64)>,
        /// Pages each node should hold (the region's pages divided by the nodes, rounded down).
        share: u64,
        /// The nodes that hold fewer than `share` pages.
        short_nodes: Vec<NodeId>,
    },

    /// `RLIMIT_MEMLOCK` does not allow locking the region and the process lacks `CAP_IPC_LOCK`.
    #[error("cannot lock {}: RLIMIT_MEMLOCK is {} and {} is already locked by this process. Raise the limit with `ulimit -l unlimited` (or `ulimit -l {}` KiB) in the shell that starts the VMM, `LimitMEMLOCK=infinity` in its systemd unit, or grant the process CAP_IPC_LOCK; or reserve hugetlb pages (2m/1g), which need no lock", format_bytes(*requested), limit_text(*limit), format_bytes(*locked_already), requested.saturating_add(*locked_already).div_ceil(1024))]
    MemlockLimit {
        /// Bytes this reservation would lock.
        requested: u64,
        /// The soft `RLIMIT_MEMLOCK` in bytes (`u64::MAX` = unlimited).
        limit: u64,
        /// Bytes this process has locked already (`VmLck`).
        locked_already: u64,
    },

    /// The kernel refused a memory-policy call with `EPERM`.
    #[error("{call} was refused (EPERM) for nodes {nodes:?}: {}", policy_hint(*denial))]
    PolicyDenied {
        /// The system call (`mbind`, `set_mempolicy`).
        call: &'static str,
        /// The nodes of the policy.
        nodes: Vec<NodeId>,
        /// What most likely refused it.
        denial: PolicyDenial,
    },

    /// Transparent huge pages were asked for but the kernel has them disabled.
    #[error("transparent huge pages are {mode} on this host; enable them with `echo madvise > /sys/kernel/mm/transparent_hugepage/enabled`, or use page size 4k, 2m or 1g")]
    ThpUnavailable {
        /// `never` or `unsupported`.
        mode: &'static str,
    },

    /// Faulting in pages failed; without `MADV_POPULATE_WRITE` this would have been a SIGBUS or
    /// an OOM kill in the guest.
    #[error("populating {} of {page_size} pages at offset {offset:#x} failed: {}", format_bytes(*len), populate_hint(*errno, *page_size, nodes))]
    Populate {
        /// Offset of the failed chunk from the start of the region.
        offset: u64,
        /// Length of the failed chunk.
        len: u64,
        /// The errno `madvise(MADV_POPULATE_WRITE)` returned.
        errno: i32,
        /// The page size being populated.
        page_size: PageSize,
        /// The nodes the region is bound to.
        nodes: Vec<NodeId>,
    },

    /// Pages landed on a node outside the ones the region is bound to.
    #[error("placement check failed: {misplaced} page(s) outside nodes {expected:?} (placement by node: {placement:?}); the policy was not honoured, check cpuset.mems and that nothing else moved the pages")]
    Misplaced {
        /// The nodes the region was bound to.
        expected: Vec<NodeId>,
        /// Pages found elsewhere (or not resident).
        misplaced: u64,
        /// Bytes found per node.
        placement: Vec<(NodeId, u64)>,
    },

    /// The kernel lacks an interface numapin needs.
    #[error("{what} is not supported by this kernel ({kernel}); {fix}")]
    Unsupported {
        /// The missing interface.
        what: &'static str,
        /// The running kernel's release.
        kernel: String,
        /// What to do instead.
        fix: &'static str,
    },

    /// A sysfs/procfs file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: io::Error,
    },

    /// A kernel file did not have the expected shape.
    #[error("cannot parse {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        source: ParseError,
    },

    /// A system call failed with an errno numapin does not decode further.
    #[error("{call} failed: {source}")]
    Sys {
        /// The call (`mmap`, `mbind`, `move_pages`, ...).
        call: &'static str,
        /// The OS error.
        source: io::Error,
    },

    /// A planner input (a `numapin status --json` snapshot) is malformed or inconsistent.
    #[error("{file}: invalid snapshot at {field}: {what}; give the planner each host's `numapin status --json` output unedited")]
    InvalidSnapshot {
        /// The file (or label) the snapshot came from.
        file: String,
        /// The JSON path of the offending field (`nodes[0].classes[1].reserved_bytes`).
        field: String,
        /// What is wrong, with the numbers.
        what: String,
    },

    /// A planner option names a page-size class that no host of the fleet offers.
    #[error("{option}: no host offers {} pages; the fleet's classes are those in its snapshots (see `numapin status` on a host)", crate::units::class_name(*page_size_bytes))]
    ClassNotOffered {
        /// The option (`--headroom`, `--place`).
        option: &'static str,
        /// The class asked for.
        page_size_bytes: u64,
    },

    /// Two planner inputs describe the same host (the same file or snapshot given twice, or
    /// two snapshots with one `host_id`): planning them as two hosts would count its capacity
    /// twice.
    #[error("{second}: host {host:?} (id {host_id:?}) was already given by {first}; give each host's snapshot once")]
    DuplicateHost {
        /// The host's name.
        host: String,
        /// Its identity (empty when the snapshots carry none and are identical).
        host_id: String,
        /// The label (file) of the first snapshot of it.
        first: String,
        /// The label of the repeat.
        second: String,
    },

    /// A planner input is larger than a snapshot can reasonably be (a device, or a wrong file).
    #[error("{file}: {size_hint} larger than the {limit} bytes a snapshot may have; give the planner `numapin status --json` output")]
    SnapshotTooLarge {
        /// The file.
        file: String,
        /// What was seen ("more than N bytes").
        size_hint: String,
        /// The limit in bytes.
        limit: u64,
    },

    /// A Prometheus server's answer cannot be turned into snapshots.
    #[error("Prometheus answer: {what}; check the URL (the server's base, e.g. http://prometheus:9090) and that it scrapes `numapin exporter` or a textfile from `numapin status --prometheus`")]
    PrometheusAnswer {
        /// What is wrong, with the offending series.
        what: String,
    },

    /// A shared reservation with transparent huge pages was asked for, but the kernel does
    /// not give shmem files huge pages (`shmem_enabled`).
    #[error("transparent huge pages for shared memory (shmem) are {mode} on this host (/sys/kernel/mm/transparent_hugepage/shmem_enabled); a shared reservation is a shmem file, so enable them with `echo advise > /sys/kernel/mm/transparent_hugepage/shmem_enabled`, or use page size 4k, 2m or 1g")]
    ShmemThpUnavailable {
        /// The mode found (`never`, `deny`, or `unsupported`).
        mode: String,
    },

    /// A descriptor handed to `Reservation::adopt` is not a sealed, populated memory file
    /// of the expected size and page size.
    #[error("descriptor {fd} cannot be adopted as guest memory: {problem}")]
    NotAdoptable {
        /// The descriptor number (in the adopting process).
        fd: i32,
        /// What is wrong with it.
        problem: AdoptProblem,
    },

    // --- VMM integration (features `vm-memory` and `hwloc`) ---
    /// A guest memory layout was refused (feature `vm-memory`): a region overlaps another, is
    /// not aligned to its page size, or ends past the guest address space. The reservations
    /// given to the layout were released.
    #[error("guest memory region {index} at {guest_addr:#x} ({}): {problem}", format_bytes(*len))]
    GuestLayout {
        /// Position of the region in the order it was added to the layout.
        index: usize,
        /// The guest physical address asked for.
        guest_addr: u64,
        /// Length of the region in bytes.
        len: u64,
        /// What is wrong and what to use instead.
        problem: String,
    },

    /// Background population of a guest region failed; this is the error again for a later
    /// waiter (the first one got the original error).
    #[error("population of the guest region at {guest_addr:#x} failed: {source}; the memory stays mapped (the guest may still hold it) until every region of it is dropped: stop the VM, drop its guest memory, fix the cause and reserve again")]
    GuestPopulation {
        /// Guest physical address of the region.
        guest_addr: u64,
        /// The original error.
        source: std::sync::Arc<Error>,
    },

    /// A guest memory layout without regions (feature `vm-memory`).
    #[error("a guest memory layout needs at least one region; add one with Layout::region")]
    EmptyLayout,

    /// vm-memory refused a layout or mapping numapin built (feature `vm-memory`).
    #[error("vm-memory refused {what}: {reason}")]
    VmMemory {
        /// What was refused (`the layout`, `the mapping`).
        what: &'static str,
        /// vm-memory's answer.
        reason: String,
    },

    /// hwloc could not build or answer about the topology (feature `hwloc`).
    #[error("hwloc: {what}: {reason}; check that libhwloc (>= 2.8) is installed and can read /sys, or use the sysfs topology (Topology::from_sysfs)")]
    Hwloc {
        /// What was asked of hwloc.
        what: &'static str,
        /// hwloc's answer.
        reason: String,
    },

    // --- baseline ---
    /// A balloon range does not fit the region or its granule.
    #[error("balloon range {offset:#x}+{len:#x} is invalid for a region of {} with a {} granule: {reason}; pass an offset and length that are multiples of {granule} bytes and end at or before byte {region_len}", format_bytes(*region_len), format_bytes(*granule as u64))]
    BalloonRange {
        /// Offset asked for, from the start of the region.
        offset: usize,
        /// Length asked for.
        len: usize,
        /// The balloon's granule in bytes.
        granule: usize,
        /// The region's length in bytes.
        region_len: u64,
        /// What is wrong (misaligned, past the end, empty).
        reason: &'static str,
    },

    // ---- Ledger ----
    /// The host ledger refused a charge: it would take the (node, page-size class) over its
    /// admission limit.
    #[error("{}", admission_message(self))]
    AdmissionRefused {
        /// The node.
        node: NodeId,
        /// The page-size class (4096 for base pages and THP).
        page_size_bytes: u64,
        /// Bytes requested.
        requested: u64,
        /// Bytes still admissible (`limit - reserved`).
        available: u64,
        /// The admission limit: capacity minus host reserve minus headroom.
        limit: u64,
        /// Bytes reserved by live VMs when the request was judged.
        reserved: u64,
        /// The class's capacity (pool or node memory).
        capacity: u64,
        /// Bytes kept for the host itself.
        host_reserve: u64,
        /// Bytes kept free as headroom.
        headroom: u64,
    },

    /// The ledger file (or image) is not a valid ledger: corrupted, truncated, of another
    /// version, or made by something else.
    #[error("ledger {} is invalid: {what}. Stop the VMMs using it and remove the file (`rm {}`); the next `numapin status` or reservation recreates it", path.display(), path.display())]
    LedgerInvalid {
        /// The file (`<in-memory>` for an in-memory ledger or image).
        path: PathBuf,
        /// What is wrong with it.
        what: String,
    },

    /// A ledger was asked for with no classes, too many classes or too many VM records.
    #[error("a ledger needs 1..={max_classes} classes and 1..={max_slots} VM records; got {classes} and {slots}. Give fewer (NUMAPIN_LEDGER_SLOTS for records)")]
    LedgerShape {
        /// Classes asked for.
        classes: usize,
        /// VM records asked for.
        slots: u32,
        /// The most classes a ledger holds.
        max_classes: u64,
        /// The most VM records a ledger holds.
        max_slots: u64,
    },

    /// A ledger class was given a page size that is none of 4 KiB, 2 MiB or 1 GiB.
    #[error("ledger class page size {page_size_bytes} is not 4096, 2097152 or 1073741824; use one of those")]
    LedgerClassPageSize {
        /// The page size given, in bytes.
        page_size_bytes: u64,
    },

    /// The same (node, page size) class was given twice to a new ledger.
    #[error("ledger class (node {node}, {page_size_bytes}-byte pages) is given twice; give each class once")]
    LedgerClassTwice {
        /// The node.
        node: NodeId,
        /// The page size, in bytes.
        page_size_bytes: u64,
    },

    /// Every VM record of the ledger is taken by a live process.
    #[error("ledger {} is full: all {slots} VM records are held by live processes; end VMs, or recreate the ledger with more records (`NUMAPIN_LEDGER_SLOTS`) once no VM uses it", path.display())]
    LedgerFull {
        /// The file.
        path: PathBuf,
        /// The number of VM records.
        slots: u32,
    },

    /// The ledger has no class for this (node, page size): the node did not exist or had no
    /// such pool when the ledger was created.
    #[error("the ledger has no class for node {node} with {page_size_bytes}-byte pages (it has: {known:?}); use one of those, or recreate the ledger after adding the pool")]
    LedgerNoClass {
        /// The node.
        node: NodeId,
        /// The page-size class.
        page_size_bytes: u64,
        /// The (node, page size) classes the ledger has.
        known: Vec<(NodeId, u64)>,
    },

    /// Asking a warm-pool service (`numapin serve`) for memory failed (feature `pool`).
    #[cfg(feature = "pool")]
    #[error(transparent)]
    Pool(#[from] PoolError),

    /// A ledger record handed over by another process (a warm pool's service) could not be
    /// taken over: the descriptor or the slot is not what the sender said.
    #[error("cannot take over ledger record {slot}: {reason}; ask the sender again (its record is reaped when the descriptor closes)")]
    HandoverRefused {
        /// The slot named by the sender.
        slot: u32,
        /// What did not match.
        reason: String,
    },

    /// The ledger file, or its directory, is not one this process may trust: another user
    /// could rewrite it (lie about every VM's charge) or truncate it (every VMM mapping it then
    /// dies of SIGBUS). See "Trust" in docs/ledger.md.
    #[error("{}", untrusted_message(self))]
    LedgerUntrusted {
        /// The file or directory that fails the check.
        path: PathBuf,
        /// Its owner's uid.
        owner_uid: u32,
        /// Its group's gid.
        gid: u32,
        /// Its permission bits (`st_mode & 0o7777`).
        mode: u32,
        /// This process's effective uid.
        caller_uid: u32,
        /// The group allowed to write the ledger (`NUMAPIN_LEDGER_GID`), if configured.
        group: Option<u32>,
        /// Which rule it breaks.
        problem: TrustProblem,
    },

    /// The ledger path names something that is not a regular file (a device, a directory, a
    /// FIFO, a socket): nothing was read from or written to it.
    #[error("ledger {}: it is a {kind}, not a regular file; point NUMAPIN_LEDGER (or --ledger) at a regular file's path (unset, the host's default ledger is used)", path.display())]
    LedgerNotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },

    /// An environment variable that configures numapin holds a value it cannot use (nothing
    /// falls back silently to a default).
    #[error("{var}={value:?} is not valid: {expected}; fix or unset it")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it must be.
        expected: &'static str,
    },

    /// A VM name the ledger cannot record as given.
    #[error("VM name {name:?} is not valid: {reason}")]
    InvalidVmName {
        /// The name (as Rust escapes it: control characters are shown, not sent).
        name: String,
        /// Why.
        reason: &'static str,
    },

    /// Creating, opening or mapping the ledger file failed.
    #[error("ledger {}: {op} failed: {source}; check the directory exists and is writable, or point NUMAPIN_LEDGER at another path", path.display())]
    LedgerIo {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Which trust rule a ledger file or directory breaks ([`Error::LedgerUntrusted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrustProblem {
    /// The file belongs to a user who is neither the caller nor root.
    ForeignOwner,
    /// Users other than the owner (and the configured group) may write the file.
    WritableByOthers,
    /// The file's group may write it, but that group is not the configured one.
    WritableByUnconfiguredGroup,
    /// The directory belongs to a user who is neither the caller nor root.
    ForeignDirectory,
    /// Others may replace files in the directory (writable, not sticky).
    ReplaceableDirectory,
}

fn untrusted_message(e: &Error) -> String {
    let Error::LedgerUntrusted {
        path,
        owner_uid,
        gid,
        mode,
        caller_uid,
        group,
        problem,
    } = e
    else {
        return String::new();
    };
    let p = path.display();
    let what = match problem {
        TrustProblem::ForeignOwner => format!(
            "belongs to uid {owner_uid}, neither you (uid {caller_uid}) nor root: whoever owns it can rewrite or truncate it under every VMM"
        ),
        TrustProblem::WritableByOthers => format!(
            "has mode {mode:04o}: users other than its owner and group may write it"
        ),
        TrustProblem::WritableByUnconfiguredGroup => match group {
            Some(g) => format!(
                "has mode {mode:04o} and group {gid}: that group may write it, but the configured group (NUMAPIN_LEDGER_GID) is {g}"
            ),
            None => format!(
                "has mode {mode:04o}: group {gid} may write it, and no group is configured (NUMAPIN_LEDGER_GID)"
            ),
        },
        TrustProblem::ForeignDirectory => format!(
            "(its directory) belongs to uid {owner_uid}, neither you (uid {caller_uid}) nor root: its owner can replace the ledger"
        ),
        TrustProblem::ReplaceableDirectory => format!(
            "(its directory) has mode {mode:04o}: others may replace the ledger in it (writable without the sticky bit)"
        ),
    };
    let fix = match problem {
        TrustProblem::ForeignOwner | TrustProblem::WritableByOthers => format!(
            "Refused. If no VMM uses it, remove it (`rm {p}`) and let numapin recreate it (mode 0600, or 0660 with NUMAPIN_LEDGER_GID); if it is the right ledger, `chown {caller_uid} {p}; chmod 0600 {p}` (or 0660 and a configured group)"
        ),
        TrustProblem::WritableByUnconfiguredGroup => format!(
            "Refused. Set NUMAPIN_LEDGER_GID={gid} if that group is meant to share the ledger, or `chmod g-w {p}`"
        ),
        TrustProblem::ForeignDirectory | TrustProblem::ReplaceableDirectory => {
            "Refused. Keep the ledger in a directory only you or root may write (the default is /run/numapin/, mode 0755), or one with the sticky bit (e.g. /dev/shm)".to_string()
        }
    };
    format!("ledger {p} {what}. {fix}")
}

fn admission_message(e: &Error) -> String {
    let Error::AdmissionRefused {
        node,
        page_size_bytes,
        requested,
        available,
        limit,
        reserved,
        capacity,
        host_reserve,
        headroom,
    } = e
    else {
        return String::new();
    };
    let f = |b: &u64| format_bytes(*b);
    let mut s = format!(
        "admission refused on node {node}, {} page class: {} requested, {} available ({} reserved of a {} limit = capacity {} - host reserve {} - headroom {})",
        f(page_size_bytes), f(requested), f(available), f(reserved), f(limit), f(capacity), f(host_reserve), f(headroom)
    );
    if requested > capacity {
        s += &format!(
            "; the request exceeds the class's whole capacity by {}",
            f(&(requested - capacity))
        );
    } else if requested > limit {
        s += &format!(
            "; the request exceeds the admission limit itself by {} (it would eat into the host reserve/headroom)",
            f(&(requested - limit))
        );
    } else {
        s += &format!(
            "; over the admission limit by {}",
            f(&requested.saturating_sub(*available))
        );
    }
    s += ". Stop or shrink a VM (`numapin status` shows who holds what), grow the pool, or reserve on another node";
    s
}

impl Error {
    /// A file whose contents have the wrong shape, described in words (a
    /// [`ParseError::Malformed`] of the file's contents).
    pub(crate) fn parse(path: PathBuf, reason: String) -> Error {
        Error::parsed(path, ParseError::from(reason))
    }

    /// A file a parser refused.
    pub(crate) fn parsed(path: PathBuf, source: ParseError) -> Error {
        Error::Parse { path, source }
    }

    /// `call` failed with `errno` (a raw errno, or a [`crate::sys::Errno`], whose own call
    /// name the caller's more specific one replaces).
    pub(crate) fn sys(call: &'static str, errno: impl Into<i32>) -> Error {
        Error::Sys {
            call,
            source: io::Error::from_raw_os_error(errno.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hugepage_message_says_how_to_fix() {
        let e = Error::HugepagesShort {
            node: NodeId(1),
            page_size: PageSize::Huge2M,
            wanted: 2048,
            free_on_node: 758,
            free_elsewhere: 1290,
            reserved: 0,
            short: 1290,
        };
        let m = e.to_string();
        assert!(m.contains("758"), "{m}");
        assert!(m.contains("2048"), "{m}");
        assert!(m.contains("1290"), "{m}");
        assert!(
            m.contains("/sys/devices/system/node/node1/hugepages/hugepages-2048kB/nr_hugepages"),
            "{m}"
        );
    }

    #[test]
    fn memlock_message_names_remedies() {
        let m = Error::MemlockLimit {
            requested: 64 << 20,
            limit: 8 << 20,
            locked_already: 0,
        }
        .to_string();
        for needle in [
            "ulimit -l",
            "LimitMEMLOCK",
            "CAP_IPC_LOCK",
            "8 MiB",
            "64 MiB",
        ] {
            assert!(m.contains(needle), "{needle} missing in {m}");
        }
    }
}
