//! The longer messages of [`super::Error`]: each says what happened, the numbers, and the fix.

use std::fmt;
use std::io;

use super::PolicyDenial;
use crate::units::{format_bytes, NodeId, PageSize};

pub(super) fn limit_text(limit: u64) -> String {
    if limit == u64::MAX {
        "unlimited".into()
    } else {
        format_bytes(limit)
    }
}

/// `/sys/devices/system/node/nodeN/hugepages/hugepages-SIZEkB/nr_hugepages`.
pub(super) fn pool_file(node: NodeId, page: PageSize) -> String {
    format!(
        "/sys/devices/system/node/node{node}/hugepages/hugepages-{}kB/nr_hugepages",
        page.bytes().unwrap_or(0) / 1024
    )
}

/// `0, 1, 3`.
pub(super) fn node_list(nodes: &[NodeId]) -> String {
    nodes
        .iter()
        .map(|n| n.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn grow_hint(p: &str, short: u64) -> String {
    format!(
        "`echo $(( $(cat {p}) + {short} )) > {p}` (as root; 1g pages are best reserved at boot with hugepagesz=1G hugepages=N)"
    )
}

pub(super) fn reserved_note(reserved: u64) -> String {
    if reserved > 0 {
        format!(", but {reserved} of the host's free pages are reserved by other mappings (HugePages_Rsvd) and cannot be had")
    } else {
        String::new()
    }
}

pub(super) fn hugepages_short_message(
    node: NodeId,
    page: PageSize,
    wanted: u64,
    free_on_node: u64,
    free_elsewhere: u64,
    reserved: u64,
    short: u64,
) -> String {
    let mut s = format!(
        "node {node} has {free_on_node} free {page} hugepage(s){}, {wanted} needed ({short} short)",
        reserved_note(reserved)
    );
    if free_elsewhere > 0 {
        s += &format!(
            "; {free_elsewhere} are free on other nodes, but memory bound to node {node} cannot use them"
        );
    }
    s += &format!(
        ". Grow the pool: {}, or ask for fewer pages or another node",
        grow_hint(&pool_file(node, page), short)
    );
    s
}

pub(super) fn hugepages_short_on_nodes_message(
    page: PageSize,
    wanted: u64,
    free: &[(NodeId, u64)],
    reserved: u64,
    short: u64,
) -> String {
    let per: Vec<String> = free.iter().map(|(n, f)| format!("node {n}: {f}")).collect();
    let total: u64 = free.iter().map(|(_, f)| f).sum();
    let first = free.first().map_or(NodeId(0), |(n, _)| *n);
    format!(
        "nodes {} have {total} free {page} hugepage(s) together ({}){}, {wanted} needed ({short} short). Memory bound to these nodes may come from any of them: grow one of their pools by {short}, e.g. {}, or ask for fewer pages",
        node_list(&free.iter().map(|(n, _)| *n).collect::<Vec<_>>()),
        per.join(", "),
        reserved_note(reserved),
        grow_hint(&pool_file(first, page), short)
    )
}

pub(super) fn cgroup_limit_message(
    file: &std::path::Path,
    page: PageSize,
    requested: u64,
    limit: u64,
    usage: u64,
) -> String {
    let what = if page.is_hugetlb() {
        format!("{page} hugetlb pages")
    } else {
        format!("memory ({page} pages)")
    };
    format!(
        "the cgroup limit {} allows {} and {} of it is in use, so {} is left; {} of {what} requested. Raise the limit (`echo {} > {}` as root, or the unit's {} with systemd), start the VMM in a cgroup with more room, or reserve less",
        file.display(),
        format_bytes(limit),
        format_bytes(usage),
        format_bytes(limit.saturating_sub(usage)),
        format_bytes(requested),
        usage.saturating_add(requested),
        file.display(),
        if page.is_hugetlb() { "hugetlb limit" } else { "MemoryMax=" },
    )
}

pub(super) fn policy_hint(d: PolicyDenial) -> &'static str {
    match d {
        PolicyDenial::Cpuset => "the process's cpuset does not include these nodes (see Mems_allowed in /proc/self/status); add them to the cgroup's cpuset.mems",
        PolicyDenial::Seccomp => "a seccomp filter is active on this process and most likely forbids the call; allow mbind and set_mempolicy in the VMM's seccomp profile, or reserve before installing the filter",
        PolicyDenial::Other => "the kernel or a security module refused the call; check dmesg and the audit log",
    }
}

pub(super) fn populate_hint(errno: i32, page: PageSize, nodes: &[NodeId]) -> String {
    let what = io::Error::from_raw_os_error(errno);
    let cause = match errno {
        libc::EFAULT | libc::ENOMEM if page.is_hugetlb() => format!(
            "the {page} hugepage pool of node(s) {nodes:?} ran out (another process took pages after the preflight, or a hugetlb cgroup limit was hit); grow the pool or check `hugetlb.{}.max` of the cgroup",
            if page == PageSize::Huge1G { "1GB" } else { "2MB" }
        ),
        libc::ENOMEM => format!(
            "node(s) {nodes:?} ran out of memory, or the cgroup memory limit was hit; free memory there or raise memory.max"
        ),
        libc::EHWPOISON => "a page is hardware-poisoned (memory error); retire the DIMM or reserve elsewhere".into(),
        libc::EINVAL => "the kernel refused MADV_POPULATE_WRITE on this mapping".into(),
        _ => String::new(),
    };
    if cause.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {cause}")
    }
}

impl fmt::Display for PolicyDenial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PolicyDenial::Cpuset => "cpuset",
            PolicyDenial::Seccomp => "seccomp",
            PolicyDenial::Other => "other",
        })
    }
}
