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
    assert_eq!(hw.topology.node_ids(), sys.node_ids(), "same nodes");
    let allowed = allowed_cpus();
    for (h, s) in hw.topology.nodes.iter().zip(&sys.nodes) {
        // hwloc lists the CPUs this process may use; sysfs every online CPU.
        let s_cpus: Vec<u32> = s
            .cpus
            .iter()
            .copied()
            .filter(|c| allowed.contains(c))
            .collect();
        assert_eq!(h.cpus, s_cpus, "node {} cpus", h.id);
        // Both read the node's MemTotal; hwloc rounds nothing, but sysfs is read again here
        // some instants later, and hot-plug or balloons may move it: allow 1%.
        let (a, b) = (h.mem_total_bytes as f64, s.mem_total_bytes as f64);
        assert!(
            (a - b).abs() <= b * 0.01,
            "node {} memory: hwloc {a}, sysfs {b}",
            h.id
        );
        let pools = |n: &numapin::NumaNode| -> Vec<(u64, u64)> {
            n.hugepages
                .iter()
                .map(|p| (p.page_size_bytes, p.total))
                .collect()
        };
        assert_eq!(pools(h), pools(s), "node {} hugepage pools", h.id);
        // Run-time counters are sysfs's own (read a moment apart: allow other processes).
        for (hp, sp) in h.hugepages.iter().zip(&s.hugepages) {
            assert!(hp.free <= hp.total && sp.free <= sp.total);
        }
        let m = hw.memory_of(h.id).unwrap();
        if let Some(cap) = m.capacity_bytes {
            assert_eq!(cap, h.mem_total_bytes, "node {} capacity", h.id);
        }
    }
    assert_eq!(hw.topology.distances, sys.distances, "distances");
    assert_eq!(hw.topology.thp, sys.thp);
    // Bandwidth and latency: present together with a note-free report, or absent with a note.
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
