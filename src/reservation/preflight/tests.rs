//! Unit tests of the preflight's decisions, on hand-made [`HostFacts`].

use super::*;
use crate::cgroup::{CgroupFacts, CgroupLimit};
use crate::reservation::map::pool_short_at;
use crate::reservation::Reservation;
use crate::topology::HostPool;

const M2: u64 = 2 << 20;

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

/// Facts of a host with this topology: host-wide pools are the node pools summed, nothing
/// reserved, no limits; CPUs 0-3 allowed, running on CPU 0.
fn facts_of(topology: Topology) -> HostFacts {
    let mut host_pools: Vec<HostPool> = Vec::new();
    for p in topology.nodes.iter().flat_map(|n| &n.hugepages) {
        match host_pools
            .iter_mut()
            .find(|h| h.page_size_bytes == p.page_size_bytes)
        {
            Some(h) => {
                h.total += p.total;
                h.free += p.free;
            }
            None => host_pools.push(HostPool {
                page_size_bytes: p.page_size_bytes,
                total: p.total,
                free: p.free,
                reserved: 0,
                surplus: 0,
            }),
        }
    }
    HostFacts {
        topology,
        host_pools,
        affinity: vec![0, 1, 2, 3],
        current_cpu: Some(0),
        memlock: MemlockFacts {
            cap_ipc_lock: false,
            limit: u64::MAX,
            locked: 0,
        },
        mems_allowed: None,
        cgroup: CgroupFacts::default(),
        kernel_release: "6.8.0".into(),
    }
}

fn fixture_facts() -> HostFacts {
    facts_of(fixture())
}

fn capacity_on(
    f: &HostFacts,
    policy: MemPolicy,
    nodes: &[u32],
    size: u64,
    page: PageSize,
) -> Result<()> {
    let b = Reservation::builder(size).policy(policy);
    let nodes: Vec<NodeId> = nodes.iter().map(|&n| NodeId(n)).collect();
    check_capacity(&b, f, &nodes, page)
}

fn capacity(policy: MemPolicy, nodes: &[u32], size: u64, page: PageSize) -> Result<()> {
    capacity_on(&fixture_facts(), policy, nodes, size, page)
}

#[test]
fn pool_shortage_is_attributed_to_the_node_that_must_grow() {
    assert!(capacity(MemPolicy::Bind, &[0], 100 * M2, PageSize::Huge2M).is_ok());
    match capacity(MemPolicy::Bind, &[1], 20 * M2, PageSize::Huge2M) {
        Err(Error::HugepagesShort {
            node,
            wanted,
            free_on_node,
            free_elsewhere,
            short,
            ..
        }) => {
            assert_eq!(
                (node, wanted, free_on_node, free_elsewhere, short),
                (NodeId(1), 20, 10, 100, 10)
            );
        }
        other => panic!("{other:?}"),
    }
    // Interleave: each node needs its share, rounded up.
    assert!(capacity(MemPolicy::Interleave, &[0, 1], 20 * M2, PageSize::Huge2M).is_ok());
    match capacity(MemPolicy::Interleave, &[0, 1], 21 * M2, PageSize::Huge2M) {
        Err(Error::HugepagesShort {
            node,
            wanted,
            short,
            ..
        }) => {
            assert_eq!((node, wanted, short), (NodeId(1), 11, 1));
        }
        other => panic!("{other:?}"),
    }
    // Preferred may fall back: the whole host counts.
    assert!(capacity(MemPolicy::Preferred, &[1], 110 * M2, PageSize::Huge2M).is_ok());
    match capacity(MemPolicy::Preferred, &[1], 111 * M2, PageSize::Huge2M) {
        Err(Error::HugepagesShort {
            node,
            wanted,
            short,
            ..
        }) => assert_eq!((node, wanted, short), (NodeId(1), 11, 1)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_multi_node_bind_shortage_is_reported_per_node() {
    // Bound to two nodes, together 110 free: the shortage belongs to both, with each
    // node's count, not the whole deficit asked of the first node.
    assert!(capacity(MemPolicy::Bind, &[0, 1], 110 * M2, PageSize::Huge2M).is_ok());
    let e = capacity(MemPolicy::Bind, &[1, 0], 111 * M2, PageSize::Huge2M).unwrap_err();
    match &e {
        Error::HugepagesShortOnNodes {
            wanted,
            free,
            short,
            reserved,
            ..
        } => {
            assert_eq!(
                (*wanted, free.clone(), *short, *reserved),
                (111, vec![(NodeId(1), 10), (NodeId(0), 100)], 1, 0)
            );
        }
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains("node 1: 10") && m.contains("node 0: 100") && m.contains("(1 short)"),
        "{m}"
    );
}

#[test]
fn pages_reserved_by_other_mappings_are_not_free() {
    // One node, 40 free 2M pages of which 30 are reserved by another process's mapping
    // (HugePages_Rsvd): 64 MiB (32 pages) is 22 short, not "0 short".
    let mut t = fixture();
    t.nodes.truncate(1);
    t.distances = vec![vec![10]];
    t.nodes[0].hugepages[0].free = 40;
    let mut f = facts_of(t);
    f.host_pools[0].reserved = 30;
    let e = capacity_on(&f, MemPolicy::Bind, &[0], 32 * M2, PageSize::Huge2M).unwrap_err();
    match &e {
        Error::HugepagesShort {
            wanted,
            free_on_node,
            reserved,
            short,
            ..
        } => assert_eq!(
            (*wanted, *free_on_node, *reserved, *short),
            (32, 40, 30, 22)
        ),
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(
        m.contains("(22 short)") && m.contains("+ 22 ))") && m.contains("30"),
        "{m}"
    );
    assert!(capacity_on(&f, MemPolicy::Bind, &[0], 10 * M2, PageSize::Huge2M).is_ok());
    // The same host-wide rule under every policy.
    for policy in [MemPolicy::Interleave, MemPolicy::Preferred] {
        assert!(matches!(
            capacity_on(&f, policy, &[0], 11 * M2, PageSize::Huge2M),
            Err(Error::HugepagesShort { short: 1, .. })
        ));
    }
}

#[test]
fn a_kernel_refusal_is_described_with_true_numbers() {
    // Two 800 MiB reservations race for a 600-page pool: the first reserved its 400 pages
    // (free 600, reserved 400), the kernel refused the second. Re-read, the numbers must
    // say 200 short, and never "0 short" however the pool moved after the refusal.
    let mut t = fixture();
    t.nodes.truncate(1);
    t.distances = vec![vec![10]];
    t.nodes[0].hugepages[0].free = 600;
    let mut f = facts_of(t);
    let plan = Reservation::builder(400 * M2)
        .page_size(PageSize::Huge2M)
        .node(NodeId(0))
        .preflight_on(&f)
        .unwrap();
    f.host_pools[0].reserved = 400;
    match pool_short_at(&plan, &f) {
        Error::HugepagesShort { short, wanted, .. } => assert_eq!((short, wanted), (200, 400)),
        other => panic!("{other:?}"),
    }
    f.host_pools[0].reserved = 0;
    assert!(matches!(
        pool_short_at(&plan, &f),
        Error::HugepagesShort { short: 1, .. }
    ));
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
fn cgroup_limits_refuse_with_the_file_to_raise() {
    let mut f = fixture_facts();
    let file = std::path::PathBuf::from("/sys/fs/cgroup/vm/memory.max");
    f.cgroup.memory = Some(CgroupLimit {
        file: file.clone(),
        limit: 256 << 20,
        usage: 32 << 20,
    });
    // 1 GiB of base pages in a cgroup with 224 MiB of room: refused, not OOM-killed later.
    let e = capacity_on(&f, MemPolicy::Bind, &[0], 1 << 30, PageSize::Base4K).unwrap_err();
    match &e {
        Error::CgroupLimit {
            file: got,
            requested,
            limit,
            usage,
            ..
        } => assert_eq!(
            (got, *requested, *limit, *usage),
            (&file, 1 << 30, 256 << 20, 32 << 20)
        ),
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(m.contains("memory.max") && m.contains("224 MiB"), "{m}");
    assert!(capacity_on(&f, MemPolicy::Bind, &[0], 224 << 20, PageSize::Base4K).is_ok());
    // The memory limit does not bound hugetlb pages, unless the mount says it does.
    assert!(capacity_on(&f, MemPolicy::Bind, &[0], 100 * M2, PageSize::Huge2M).is_ok());
    f.cgroup.memory_counts_hugetlb = true;
    f.cgroup.memory.as_mut().unwrap().limit = 128 << 20;
    assert!(matches!(
        capacity_on(&f, MemPolicy::Bind, &[0], 100 * M2, PageSize::Huge2M),
        Err(Error::CgroupLimit { .. })
    ));
    // The hugetlb limit of the page size bounds hugetlb pages.
    f.cgroup.memory_counts_hugetlb = false;
    f.cgroup.hugetlb.push((
        2 << 20,
        CgroupLimit {
            file: "/sys/fs/cgroup/vm/hugetlb.2MB.max".into(),
            limit: 16 * M2,
            usage: 0,
        },
    ));
    let e = capacity_on(&f, MemPolicy::Bind, &[0], 20 * M2, PageSize::Huge2M).unwrap_err();
    assert!(
        matches!(&e, Error::CgroupLimit { file, .. } if file.ends_with("hugetlb.2MB.max")),
        "{e}"
    );
    assert!(capacity_on(&f, MemPolicy::Bind, &[0], 16 * M2, PageSize::Huge2M).is_ok());
}

#[test]
fn cpuset_and_memlock_decisions() {
    let mut f = fixture_facts();
    f.mems_allowed = Some(vec![0]);
    f.cgroup.cpuset_mems_file = Some("/sys/fs/cgroup/vm/cpuset.mems.effective".into());
    let b = Reservation::builder(2 << 20).node(NodeId(1));
    match preflight(&b, &f) {
        Err(Error::NodesNotAllowed {
            nodes,
            allowed,
            file,
        }) => {
            assert_eq!((nodes, allowed), (vec![NodeId(1)], vec![NodeId(0)]));
            assert!(file.unwrap().ends_with("cpuset.mems.effective"));
        }
        other => panic!("{other:?}"),
    }
    let mut f = fixture_facts();
    f.memlock = MemlockFacts {
        cap_ipc_lock: false,
        limit: 8 << 20,
        locked: 1 << 20,
    };
    let b = Reservation::builder(8 << 20)
        .page_size(PageSize::Base4K)
        .node(NodeId(0));
    assert!(matches!(
        preflight(&b, &f),
        Err(Error::MemlockLimit {
            requested: 0x80_0000,
            limit: 0x80_0000,
            locked_already: 0x10_0000
        })
    ));
    // hugetlb pages need no lock; CAP_IPC_LOCK lifts the limit; so does lock(false).
    assert!(preflight(&b.clone().page_size(PageSize::Huge2M), &f).is_ok());
    assert!(preflight(&b.clone().lock(false), &f).is_ok());
    f.memlock.cap_ipc_lock = true;
    assert!(preflight(&b, &f).is_ok());
    // An old kernel is refused before anything else.
    f.kernel_release = "5.10.0".into();
    assert!(matches!(
        preflight(&b, &f),
        Err(Error::Unsupported { kernel, .. }) if kernel == "5.10.0"
    ));
}

#[test]
fn thp_disabled_is_named() {
    let mut t = fixture();
    t.thp = ThpMode::Never;
    let b = Reservation::builder(2 << 20);
    assert!(matches!(
        check_capacity(&b, &facts_of(t), &[NodeId(0)], PageSize::Transparent),
        Err(Error::ThpUnavailable { mode: "never" })
    ));
}

#[test]
fn memoryless_and_absent_nodes_are_refused() {
    let b = Reservation::builder(2 << 20).node(NodeId(3));
    assert!(matches!(
        preflight(&b, &fixture_facts()),
        Err(Error::NodeWithoutMemory {
            node: NodeId(3),
            ..
        })
    ));
    let b = Reservation::builder(2 << 20).node(NodeId(2));
    assert!(matches!(
        preflight(&b, &fixture_facts()),
        Err(Error::NodeAbsent {
            node: NodeId(2),
            ..
        })
    ));
}

#[test]
fn populate_cpus_must_be_usable() {
    let f = fixture_facts();
    let b = Reservation::builder(2 << 20).page_size(PageSize::Base4K);
    let e = preflight(&b.clone().cpus([60_000, 60_001]), &f).unwrap_err();
    assert!(
        matches!(&e, Error::PopulateCpusNotAllowed { asked, allowed } if *asked == [60_000, 60_001] && *allowed == [0, 1, 2, 3])
            && e.to_string().contains("60000-60001"),
        "{e}"
    );
    let plan = preflight(&b.clone().cpus([1, 60_000]), &f).unwrap();
    assert_eq!((plan.cpus.clone(), plan.threads), (vec![1], 1));
    // Without cpus: the node's allowed CPUs; the CPU-less node 1 gets every allowed CPU.
    let plan = preflight(&b.clone().node(NodeId(0)), &f).unwrap();
    assert_eq!((plan.cpus.clone(), plan.threads), (vec![0, 1], 2));
    let plan = preflight(&b.clone().node(NodeId(1)), &f).unwrap();
    assert_eq!(plan.cpus, vec![0, 1, 2, 3]);
    // The live host: the same decision on gathered facts.
    let live = HostFacts::gather(None).unwrap();
    let plan = Reservation::builder(2 << 20)
        .page_size(PageSize::Base4K)
        .cpus([live.affinity[0], 60_000])
        .preflight_on(&live)
        .unwrap();
    assert_eq!(
        (plan.cpus.clone(), plan.threads),
        (vec![live.affinity[0]], 1)
    );
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
    // The preflight asks the facts which CPU it runs on: CPU 2 is on memory-less node 3.
    let mut f = facts_of(t);
    f.current_cpu = Some(2);
    let plan = preflight(&Reservation::builder(2 << 20), &f).unwrap();
    assert_eq!(plan.nodes, vec![NodeId(1)]);
}
