//! hwloc and sysfs must describe this host alike: the same nodes, CPUs, memory (within what
//! the two count differently), hugepage pools and distances; and the core structure must
//! cover every CPU exactly once.

use numapin::topology_hwloc::HwlocTopology;
use numapin::{PageSize, Reservation, Topology};

fn allowed_cpus() -> Vec<u32> {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let list = s
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .unwrap()
        .trim()
        .to_string();
    numapin::topology::parse_cpulist(&list).unwrap()
}

#[test]
fn hwloc_and_sysfs_agree_on_this_host() {
    let hw = HwlocTopology::load().unwrap();
    let sys = Topology::from_sysfs().unwrap();
    println!("hwloc API {}; notes: {:#?}", hw.hwloc_api, hw.notes);
    println!("memory attributes: {:#?}", hw.memory);
    assert!(hw.hwloc_api.starts_with("2."), "{}", hw.hwloc_api);
    // Memory: both read the node's MemTotal, a moment apart; allow 1% for hot-plug/balloons.
    let d = hw.disagreements(&sys, 0.01);
    assert!(d.is_empty(), "hwloc and sysfs disagree:\n{}", d.join("\n"));
    // hwloc's allowed CPUs are this process's (no cgroup restriction in CI: all of them).
    assert_eq!(hw.allowed_cpus, allowed_cpus());
    assert!(!hw.topology.nodes.iter().all(|n| n.cpus.is_empty()));
    for h in &hw.topology.nodes {
        let s = sys.node(h.id).unwrap();
        // Run-time counters are sysfs's own.
        assert_eq!(h.mem_free_bytes > 0, s.mem_free_bytes > 0);
        for hp in &h.hugepages {
            assert!(hp.free <= hp.total, "node {} {hp:?}", h.id);
        }
        let m = hw.memory_of(h.id).unwrap();
        if let Some(cap) = m.capacity_bytes {
            assert_eq!(cap, h.mem_total_bytes, "node {} capacity", h.id);
        }
    }
    assert_eq!(hw.topology.thp, sys.thp);
    // Bandwidth and latency: reported, or absent with a note saying so.
    let any_perf = hw
        .memory
        .iter()
        .any(|m| m.bandwidth_mib_s.is_some() || m.latency_ns.is_some());
    assert_eq!(
        any_perf,
        !hw.notes.iter().any(|n| n.contains("no memory bandwidth")),
        "{:?}",
        hw.notes
    );
}

/// The comparison itself finds differences (so an empty answer above means something).
#[test]
fn disagreements_are_found() {
    let hw = HwlocTopology::load().unwrap();
    let mut sys = Topology::from_sysfs().unwrap();
    sys.nodes[0].mem_total_bytes = sys.nodes[0].mem_total_bytes / 10 * 9;
    sys.nodes[0].cpus.push(100_000);
    if let Some(p) = sys.nodes[0].hugepages.first_mut() {
        p.total += 1;
    }
    sys.distances[0][0] += 1;
    let d = hw.disagreements(&sys, 0.01);
    let has = |w: &str| d.iter().any(|l| l.contains(w));
    assert!(has("memory") && has("distances"), "{d:?}");
    assert!(
        !has("cpus"),
        "a CPU this process may not use is ignored: {d:?}"
    );
    assert_eq!(
        has("hugepage pools"),
        !sys.nodes[0].hugepages.is_empty(),
        "{d:?}"
    );
    let with_cpus = sys.nodes.iter().position(|n| !n.cpus.is_empty()).unwrap();
    sys.nodes[with_cpus].cpus.remove(0);
    assert!(
        hw.disagreements(&sys, 0.01)
            .iter()
            .any(|l| l.contains("cpus")),
        "a missing CPU is found"
    );
    sys.nodes.push(sys.nodes[0].clone());
    sys.nodes[1].id = numapin::NodeId(99);
    assert!(hw.disagreements(&sys, 0.01)[0].starts_with("nodes:"));
}

#[test]
fn cores_cover_every_allowed_cpu_once() {
    let hw = HwlocTopology::load().unwrap();
    println!("{:#?}", hw.packages);
    assert!(!hw.packages.is_empty());
    let mut seen: Vec<u32> = hw
        .packages
        .iter()
        .flat_map(|p| &p.cores)
        .flat_map(|c| c.cpus.iter().copied())
        .collect();
    seen.sort_unstable();
    let n = seen.len();
    seen.dedup();
    assert_eq!(n, seen.len(), "a CPU in two cores");
    let mut all: Vec<u32> = hw
        .topology
        .nodes
        .iter()
        .flat_map(|x| x.cpus.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(seen, all);
    for node in hw.node_ids() {
        let one = hw.one_cpu_per_core(node);
        assert_eq!(one.len(), hw.cores_of(node).len());
        let cpus = &hw.topology.node(node).unwrap().cpus;
        assert!(one.iter().all(|c| cpus.contains(c)));
    }
}

#[test]
fn one_populate_worker_per_core() {
    let hw = HwlocTopology::load().unwrap();
    let node = hw
        .topology
        .nodes
        .iter()
        .find(|n| !n.cpus.is_empty())
        .unwrap();
    let cpus = hw.one_cpu_per_core(node.id);
    let r = Reservation::builder(16 << 20)
        .node(node.id)
        .page_size(PageSize::Base4K)
        .lock(false)
        .cpus(cpus.clone())
        .build()
        .unwrap();
    let rep = r.report();
    assert_eq!(rep.threads, cpus.len());
    assert_eq!(rep.pinned_cpus, cpus);
    assert!(
        rep.worker_cpus.iter().all(|c| cpus.contains(c)),
        "workers ran on {:?}, pinned to {cpus:?}",
        rep.worker_cpus
    );
}
