//! Preflight: decides page size, nodes, threads and CPUs, and checks that the host can hold
//! the reservation, before anything is mapped.

use super::facts::{HostFacts, MemlockFacts};
use super::{LockKind, MemPolicy, ReservationBuilder, ReservationPlan};
use crate::error::{Error, Result};
use crate::topology::{format_cpulist, ThpMode, Topology};
use crate::units::{format_bytes, NodeId, PageSize};

/// Decides the plan from the request and the host's facts; reads nothing else.
pub(super) fn preflight(b: &ReservationBuilder, facts: &HostFacts) -> Result<ReservationPlan> {
    let topo = &facts.topology;
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
    check_kernel(&facts.kernel_release)?;

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
        let local = facts.current_cpu.and_then(|c| topo.node_of_cpu(c));
        let (chosen, why) = default_node(topo, local).ok_or_else(|| Error::NoNodeWithMemory {
            online: topo.node_ids(),
        })?;
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
    check_cpuset(facts, &nodes)?;

    // Page size.
    let page_size = match b.page_size {
        PageSize::Auto => {
            let mut chosen = None;
            for cand in PageSize::CONCRETE_LARGEST_FIRST {
                match check_capacity(b, facts, &nodes, cand) {
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
                    check_capacity(b, facts, &nodes, PageSize::Base4K)?;
                    PageSize::Base4K
                }
            }
        }
        p => {
            check_capacity(b, facts, &nodes, p)?;
            p
        }
    };

    // Locking.
    let lock = if page_size.is_hugetlb() {
        LockKind::Hugetlb
    } else if b.lock {
        check_memlock(&facts.memlock, b.size)?;
        LockKind::Mlock
    } else {
        LockKind::None
    };

    // Threads and CPUs.
    let allowed = facts.affinity.clone();
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
            return Err(Error::PopulateCpusNotAllowed {
                asked: asked.clone(),
                allowed,
            });
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
        Some(0) => return Err(Error::ZeroThreads),
        Some(t) => t,
        None => node_cpus.len().max(1),
    };

    Ok(ReservationPlan {
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
        shared: b.shared,
        vm: b.vm.clone(),
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
            short,
            ..
        } => {
            format!("node {node} has {free_on_node} free, {wanted} needed ({short} short)")
        }
        Error::HugepagesShortOnNodes {
            wanted,
            free,
            short,
            ..
        } => format!(
            "nodes {:?} have {} free together, {wanted} needed ({short} short)",
            free.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
            free.iter().map(|(_, f)| f).sum::<u64>()
        ),
        Error::InvalidSize { reason, .. } => reason.clone(),
        other => other.to_string(),
    }
}

/// Checks that the size fits the page size and that the nodes can hold it: per node, host-wide
/// (free pages less those other mappings reserved, as the kernel counts at `mmap`) and within
/// the process's cgroup limits.
pub(super) fn check_capacity(
    b: &ReservationBuilder,
    facts: &HostFacts,
    nodes: &[NodeId],
    page: PageSize,
) -> Result<()> {
    let topo = &facts.topology;
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
        PageSize::Transparent if b.shared => {
            // A shared reservation is a shmem file: its THP follows shmem_enabled, not enabled.
            if let Some(mode) = crate::shared::shmem_thp_unavailable() {
                return Err(Error::ShmemThpUnavailable { mode });
            }
            check_node_memory(b, topo, nodes, page)
        }
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
            check_node_memory(b, topo, nodes, page)?;
            check_cgroup(facts, page, b.size)
        }
        PageSize::Base4K => {
            check_node_memory(b, topo, nodes, page)?;
            check_cgroup(facts, page, b.size)
        }
        PageSize::Huge2M | PageSize::Huge1G => {
            check_pools(b, facts, nodes, page)?;
            check_cgroup(facts, page, b.size)
        }
        PageSize::Auto => unreachable!("auto is resolved before"),
    }
}

/// The hugetlb pools: the nodes' free pages under the policy, and host-wide the free pages no
/// other mapping has reserved (the kernel checks both when the region is mapped).
fn check_pools(
    b: &ReservationBuilder,
    facts: &HostFacts,
    nodes: &[NodeId],
    page: PageSize,
) -> Result<()> {
    let topo = &facts.topology;
    let pages = b.size / page.bytes().expect("concrete page size") as u64;
    let free = |n: NodeId| {
        topo.node(n)
            .and_then(|x| x.pool(page))
            .map_or(0, |p| p.free)
    };
    let all_nodes: u64 = topo.nodes.iter().map(|x| free(x.id)).sum();
    let host = facts.host_pool(page);
    let reserved = host.map_or(0, |h| h.reserved);
    let unreserved = host.map_or(all_nodes, |h| h.unreserved());
    let host_short = pages.saturating_sub(unreserved);
    let one = |node: NodeId, wanted: u64, short: u64| Error::HugepagesShort {
        node,
        page_size: page,
        wanted,
        free_on_node: free(node),
        free_elsewhere: topo.free_hugepages_elsewhere(page, &[node]),
        reserved,
        short,
    };
    match b.policy {
        MemPolicy::Bind if nodes.len() == 1 => {
            let short = pages.saturating_sub(free(nodes[0])).max(host_short);
            if short > 0 {
                return Err(one(nodes[0], pages, short));
            }
        }
        MemPolicy::Bind => {
            // Any of the bound nodes may supply any page: the shortage belongs to them together,
            // and growing any one of them by the deficit fixes it.
            let together: u64 = nodes.iter().map(|&n| free(n)).sum();
            let short = pages.saturating_sub(together).max(host_short);
            if short > 0 {
                return Err(Error::HugepagesShortOnNodes {
                    page_size: page,
                    wanted: pages,
                    free: nodes.iter().map(|&n| (n, free(n))).collect(),
                    reserved,
                    short,
                });
            }
        }
        MemPolicy::Interleave => {
            // Each node must hold its share (rounded up); the first node short is named.
            let share = pages.div_ceil(nodes.len() as u64);
            for &n in nodes {
                let short = share.saturating_sub(free(n)).max(host_short);
                if short > 0 {
                    return Err(one(n, share, short));
                }
            }
        }
        MemPolicy::Preferred => {
            // May fall back to any node: the host's free pages count, the preferred node is
            // asked for what the others cannot give.
            let short = pages.saturating_sub(all_nodes).max(host_short);
            if short > 0 {
                let others = all_nodes - free(nodes[0]);
                return Err(one(nodes[0], pages.saturating_sub(others), short));
            }
        }
    }
    Ok(())
}

/// The cgroup limit that bounds this page size: hugetlb sizes the hugetlb controller (and the
/// memory controller where it counts hugetlb too), the others the memory controller.
fn check_cgroup(facts: &HostFacts, page: PageSize, size: u64) -> Result<()> {
    let cg = &facts.cgroup;
    let mut limits = Vec::new();
    if page.is_hugetlb() {
        limits.extend(cg.hugetlb(page.bytes().unwrap_or(0) as u64));
        if cg.memory_counts_hugetlb {
            limits.extend(cg.memory.as_ref());
        }
    } else {
        limits.extend(cg.memory.as_ref());
    }
    for l in limits {
        if l.room() < size {
            return Err(Error::CgroupLimit {
                file: l.file.clone(),
                page_size: page,
                requested: size,
                limit: l.limit,
                usage: l.usage,
            });
        }
    }
    Ok(())
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

fn check_memlock(m: &MemlockFacts, size: u64) -> Result<()> {
    if m.cap_ipc_lock {
        return Ok(());
    }
    if m.limit != u64::MAX && m.locked.saturating_add(size) > m.limit {
        return Err(Error::MemlockLimit {
            requested: size,
            limit: m.limit,
            locked_already: m.locked,
        });
    }
    Ok(())
}

/// The nodes must be among the memory nodes the cpuset allows.
fn check_cpuset(facts: &HostFacts, nodes: &[NodeId]) -> Result<()> {
    let Some(allowed) = &facts.mems_allowed else {
        return Ok(());
    };
    if nodes.iter().all(|n| allowed.binary_search(&n.0).is_ok()) {
        Ok(())
    } else {
        Err(Error::NodesNotAllowed {
            nodes: nodes.to_vec(),
            allowed: allowed.iter().map(|&n| NodeId(n)).collect(),
            file: facts.cgroup.cpuset_mems_file.clone(),
        })
    }
}

fn check_kernel(rel: &str) -> Result<()> {
    let mut it = rel
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|s| s.parse::<u32>().ok());
    let (major, minor) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
    if (major, minor) < (5, 14) {
        return Err(Error::Unsupported {
            what: "MADV_POPULATE_WRITE (Linux 5.14)",
            kernel: rel.to_string(),
            fix: "run a kernel >= 5.14; numapin will not populate by touching pages because a short pool would kill the process with SIGBUS",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
