//! Guest-side scenarios of the VMM features, run only when the `numa_vm` test binary is built
//! with them (`cargo test --features vm-memory,hwloc --test numa_vm`, `.ci/steps/47-vmm-numa.sh`):
//! - `vmm.two_region`: a two-region guest, one region per node, laid out as vm-memory guest
//!   memory while both regions are still being populated; both populate at the same time,
//!   bytes written through `Bytes` land on the right node (the kernel's `numa_maps` says so);
//! - `hwloc.agree`: hwloc and sysfs describe the guest's topology alike.
#![allow(dead_code, unused_imports, unused_macros)]

use crate::harness::Spec;

type Check = Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

/// The kernel's page count per node (bytes) and page size of the mapping starting at `addr`,
/// from `/proc/self/numa_maps`, with the line itself.
fn numa_maps(addr: usize) -> Result<(std::collections::BTreeMap<u32, u64>, u64, String), String> {
    let text = std::fs::read_to_string("/proc/self/numa_maps").map_err(|e| e.to_string())?;
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(format!("{addr:x}").as_str()))
        .ok_or_else(|| format!("no numa_maps line at {addr:#x}"))?;
    let tok = |k: &str| line.split_whitespace().find_map(|t| t.strip_prefix(k));
    let kps: u64 = tok("kernelpagesize_kB=")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
        * 1024;
    let nodes = line
        .split_whitespace()
        .filter_map(|t| t.strip_prefix('N')?.split_once('='))
        .filter_map(|(n, c)| Some((n.parse().ok()?, c.parse::<u64>().ok()? * kps)))
        .collect();
    Ok((nodes, kps, line.to_string()))
}

/// The scenarios of this file that this build can run on `spec`.
pub fn names(spec: &Spec) -> Vec<String> {
    let mut s = Vec::new();
    if cfg!(feature = "vm-memory") && two_nodes(spec).is_some() {
        s.push("vmm.two_region".to_string());
    }
    if cfg!(feature = "hwloc") {
        s.push("hwloc.agree".to_string());
    }
    s
}

/// Runs one scenario of this file; `None` if `name` is not one of them.
pub fn run(spec: &Spec, name: &str) -> Option<Check> {
    match name {
        "vmm.two_region" => Some(two_region(spec)),
        "hwloc.agree" => Some(hwloc_agree(spec)),
        _ => None,
    }
}

const MIB: u64 = 1 << 20;
/// Per region: 64 pages of 2 MiB, so that population outlasts laying out the other region.
const REGION: u64 = 128 * MIB;

/// Two nodes with memory, CPUs and room for a region in their 2 MiB pool.
fn two_nodes(spec: &Spec) -> Option<[u32; 2]> {
    let v: Vec<u32> = spec
        .mem_nodes()
        .into_iter()
        .filter(|n| !n.cpus.is_empty() && n.pool_2m * 2 * MIB >= REGION)
        .map(|n| n.id)
        .take(2)
        .collect();
    (v.len() == 2).then(|| [v[0], v[1]])
}

#[cfg(not(feature = "vm-memory"))]
fn two_region(_: &Spec) -> Check {
    Err("built without feature vm-memory".into())
}

#[cfg(feature = "vm-memory")]
fn two_region(spec: &Spec) -> Check {
    use std::time::{Duration, Instant};

    use numapin::vmm::{self, Layout};
    use numapin::{NodeId, PageSize, Reservation};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

    let nodes = two_nodes(spec).ok_or("need two nodes with CPUs and a 2 MiB pool")?;
    let bases = [0u64, 4 << 30];
    // A VMM reads the topology once for all its regions.
    let topo = numapin::Topology::from_sysfs().map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    let mut layout = Layout::new();
    // Population of a region starts when build_background returns (its worker is running).
    let mut first = [0.0f64; 2];
    for (i, (&n, &base)) in nodes.iter().zip(&bases).enumerate() {
        let p = Reservation::builder(REGION)
            .node(NodeId(n))
            .page_size(PageSize::Huge2M)
            .threads(1)
            .topology(topo.clone())
            .build_background()
            .map_err(|e| format!("node {n}: build_background: {e}"))?;
        first[i] = t0.elapsed().as_secs_f64();
        layout = layout.region(GuestAddress(base), p);
    }
    let mem = layout.build().map_err(|e| format!("layout: {e}"))?;
    let ready = t0.elapsed().as_secs_f64();
    // The guest starts at once: its first write to each region, racing the workers.
    for (i, &base) in bases.iter().enumerate() {
        mem.write_obj(0xc0de_0000_u32 | i as u32, GuestAddress(base + REGION - 4))
            .map_err(|e| format!("write: {e}"))?;
    }
    // When was each region's population seen done?
    let mut done = [None::<f64>; 2];
    while done.iter().any(Option::is_none) {
        let now = t0.elapsed().as_secs_f64();
        for (i, r) in mem.iter().enumerate() {
            let p = vmm::owner(r).progress();
            if (p.done_bytes == p.total_bytes || vmm::owner(r).is_finished()) && done[i].is_none() {
                done[i] = Some(now);
            }
        }
        if t0.elapsed() > Duration::from_secs(120) {
            return Err("population did not finish in 120 s".into());
        }
        std::thread::sleep(Duration::from_micros(500));
    }
    let reports = vmm::wait_populated(&mem).map_err(|e| format!("wait: {e}"))?;
    let (f, d) = (first, done.map(|x| x.unwrap()));
    let overlap = d[0].min(d[1]) - f[0].max(f[1]);
    let mut detail = vec![format!("ready for vCPUs after {ready:.3}s")];
    for (i, r) in mem.iter().enumerate() {
        let o = vmm::owner(r);
        let want = NodeId(nodes[i]);
        // The kernel's own count of the region's pages per node.
        let (place, kps, line) = numa_maps(o.as_ptr() as usize)?;
        ensure!(
            place == std::collections::BTreeMap::from([(want.0, REGION)]) && kps == 2 * MIB,
            "region {i}: numa_maps says {line}, want all {REGION} bytes on node {want}"
        );
        ensure!(
            reports[i].placement.get(&want) == Some(&REGION),
            "region {i}: report placement {:?}",
            reports[i].placement
        );
        ensure!(r.is_hugetlbfs() == Some(true), "region {i} not hugetlbfs");
        let v: u32 = mem
            .read_obj(GuestAddress(bases[i] + REGION - 4))
            .map_err(|e| format!("read: {e}"))?;
        ensure!(v == 0xc0de_0000 | i as u32, "region {i}: guest write lost");
        detail.push(format!(
            "region {:#x} node {want}: populating {:.3}..{:.3}s on cpus {:?}",
            r.start_addr().0,
            f[i],
            d[i],
            reports[i].worker_cpus
        ));
    }
    let concurrent = overlap > 0.0;
    ensure!(
        concurrent,
        "the two regions did not populate concurrently: {}",
        detail.join("; ")
    );
    detail.push(format!("both in flight for {overlap:.3}s"));
    Ok(detail.join("; "))
}

#[cfg(not(feature = "hwloc"))]
fn hwloc_agree(_: &Spec) -> Check {
    Err("built without feature hwloc".into())
}

#[cfg(feature = "hwloc")]
fn hwloc_agree(spec: &Spec) -> Check {
    use numapin::topology_hwloc::HwlocTopology;
    use numapin::Topology;

    let hw = HwlocTopology::load().map_err(|e| e.to_string())?;
    let sys = Topology::from_sysfs().map_err(|e| e.to_string())?;
    let d = hw.disagreements(&sys, 0.01);
    ensure!(d.is_empty(), "hwloc and sysfs disagree: {}", d.join("; "));
    let want: Vec<u32> = spec.nodes.iter().map(|n| n.id).collect();
    let got: Vec<u32> = hw.node_ids().iter().map(|n| n.0).collect();
    ensure!(got == want, "hwloc nodes {got:?}, spec {want:?}");
    for n in &spec.nodes {
        let cores = hw.one_cpu_per_core(numapin::NodeId(n.id));
        ensure!(
            cores.len() <= n.cpus.len() && cores.iter().all(|c| n.cpus.contains(c)),
            "node {}: one cpu per core {cores:?}, node cpus {:?}",
            n.id,
            n.cpus
        );
    }
    Ok(format!(
        "hwloc API {}; {} package(s), {} core(s); notes: {}",
        hw.hwloc_api,
        hw.packages.len(),
        hw.packages.iter().map(|p| p.cores.len()).sum::<usize>(),
        hw.notes.join(" / ")
    ))
}
