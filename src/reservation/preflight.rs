//! Preflight: decides page size, nodes, threads and CPUs, and checks that the host can hold
//! the reservation, before anything is mapped.

use super::{LockKind, MemPolicy, Plan, ReservationBuilder};
use crate::error::{Error, PolicyDenial, Result};
use crate::sys;
use crate::topology::{format_cpulist, ThpMode, Topology};
use crate::units::{format_bytes, NodeId, PageSize};

pub(super) fn preflight(b: &ReservationBuilder, topo: &Topology) -> Result<Plan> {
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
        shared: b.shared,
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
pub(super) fn check_capacity(
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

pub(super) fn check_cpuset(nodes: &[NodeId]) -> Result<()> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reservation::Reservation;

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
