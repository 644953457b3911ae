//! Guest side of the multi-node NUMA harness: the scenarios, run inside the QEMU guest by
//! `init.sh` (as the ignored `guest` test of the `numa_vm` test binary). Each scenario prints
//! one `NUMAVM-RESULT name=... ok=0|1 detail=...` line; every check compares numapin's own
//! report with what the guest kernel says independently (`/proc/self/numa_maps`, smaps, sysfs)
//! and with the topology the host asked QEMU for ([`Spec`]).

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::process::Command;
use std::time::Instant;

use numapin::{Error, MemPolicy, NodeId, PageSize, Reservation, Topology};

use crate::harness::Spec;

type Check = Result<String, String>;

macro_rules! ensure {
    ($cond:expr, $($fmt:tt)+) => {
        if !$cond {
            return Err(format!($($fmt)+));
        }
    };
}

const MIB: u64 = 1 << 20;

/// Runs every scenario of the spec in `/numavm.spec`, printing one result line each.
pub fn main() {
    let spec = Spec::from_text(&std::fs::read_to_string("/numavm.spec").expect("/numavm.spec"));
    let all = numapin::process::affinity().expect("affinity");
    for name in spec.scenarios() {
        let t = Instant::now();
        let r =
            std::panic::catch_unwind(AssertUnwindSafe(|| run(&spec, &name))).unwrap_or_else(|p| {
                Err(format!(
                    "panicked: {}",
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default()
                ))
            });
        // Scenarios may pin this thread or change pools; put both back for the next one.
        let _ = numapin::process::set_thread_affinity(&all);
        restore_pools(&spec);
        let (ok, detail) = match r {
            Ok(d) => (1, d),
            Err(d) => (0, d),
        };
        let detail = format!("{detail} [{:.2}s]", t.elapsed().as_secs_f64()).replace('\n', " | ");
        println!("NUMAVM-RESULT name={name} ok={ok} detail={detail}");
    }
}

fn run(spec: &Spec, name: &str) -> Check {
    let parts: Vec<&str> = name.split('.').collect();
    let node_of = |s: &str| NodeId(s.trim_start_matches('n').parse().expect("node"));
    let page_of = |s: &str| match s {
        "4k" => PageSize::Base4K,
        "thp" => PageSize::Transparent,
        "2m" => PageSize::Huge2M,
        "1g" => PageSize::Huge1G,
        o => panic!("page size {o}"),
    };
    match parts[..] {
        ["pools"] => pools(spec),
        ["topology"] => topology(spec),
        ["bind", "cli"] => bind_cli(spec),
        ["bind", n, p] => bind(spec, node_of(n), page_of(p)),
        ["interleave2", p] => interleave(spec, 2, page_of(p)),
        ["interleave3", p] => interleave(spec, 3, page_of(p)),
        ["preferred", "room"] => preferred(spec, false),
        ["preferred", "fallback"] => preferred(spec, true),
        ["short", "preflight"] => short(spec, false),
        ["short", "kernel"] => short(spec, true),
        ["short", "kernel", "multi"] => short_multi(spec),
        ["short", "cli"] => short_cli(spec),
        ["short", "rsvd"] => short_rsvd(spec),
        ["interleave", "fallback"] => interleave_fallback(spec),
        ["auto", "fallback"] => auto_fallback(spec),
        ["auto", "1g"] => auto_1g(spec),
        ["auto", n] => auto(spec, node_of(n)),
        ["many"] => many(spec),
        ["default", "local"] => default_local(spec),
        ["default", "nearest"] => default_nearest(spec),
        ["ledger"] => ledger(spec),
        ["shared", n] => shared_adopted(node_of(n)),
        _ => crate::vmm_guest::run(spec, name)
            .unwrap_or_else(|| Err(format!("unknown scenario {name}"))),
    }
}

// ---- kernel-side readings ---------------------------------------------------------------

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{path}: {e}"))
        .trim()
        .to_string()
}

fn pool_file(node: u32, kib: u64, file: &str) -> String {
    format!("/sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB/{file}")
}

fn pool_count(node: u32, kib: u64, file: &str) -> u64 {
    let p = pool_file(node, kib, file);
    if std::path::Path::new(&p).exists() {
        read(&p).parse().expect("number")
    } else {
        0
    }
}

fn set_pool(node: u32, kib: u64, n: u64) {
    std::fs::write(pool_file(node, kib, "nr_hugepages"), n.to_string())
        .unwrap_or_else(|e| panic!("set pool node {node} {kib}kB to {n}: {e}"));
}

/// Puts every pool back to the spec's size (scenarios shrink some).
fn restore_pools(spec: &Spec) {
    for n in spec.mem_nodes() {
        if pool_count(n.id, 2048, "nr_hugepages") != n.pool_2m {
            set_pool(n.id, 2048, n.pool_2m);
        }
    }
}

/// Every pool counter of every node, and the host-wide reserved count: what must not change
/// when a reservation fails.
fn pool_state(spec: &Spec) -> Vec<(u32, u64, u64, u64, u64)> {
    let mut v = vec![];
    for n in &spec.nodes {
        for kib in [2048, 1048576] {
            v.push((
                n.id,
                kib,
                pool_count(n.id, kib, "nr_hugepages"),
                pool_count(n.id, kib, "free_hugepages"),
                pool_count(n.id, kib, "surplus_hugepages"),
            ));
        }
    }
    let rsvd = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("HugePages_Rsvd:"))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0);
    v.push((u32::MAX, 0, rsvd, 0, 0));
    v
}

/// The kernel's own per-node page count of the mapping at `addr`, from `/proc/self/numa_maps`:
/// node → bytes, and the page size the kernel says the VMA has.
fn numa_maps(addr: usize) -> Result<(BTreeMap<NodeId, u64>, u64, String), String> {
    let text = read("/proc/self/numa_maps");
    let line = text
        .lines()
        .find(|l| {
            l.split_whitespace()
                .next()
                .and_then(|a| usize::from_str_radix(a, 16).ok())
                == Some(addr)
        })
        .ok_or_else(|| format!("no numa_maps line starts at {addr:#x}"))?;
    let mut kps = 0;
    let mut nodes: BTreeMap<NodeId, u64> = BTreeMap::new();
    for tok in line.split_whitespace() {
        if let Some(v) = tok.strip_prefix("kernelpagesize_kB=") {
            kps = v.parse::<u64>().unwrap() * 1024;
        }
    }
    for tok in line.split_whitespace() {
        if let Some((n, c)) = tok.strip_prefix('N').and_then(|t| t.split_once('=')) {
            if let (Ok(n), Ok(c)) = (n.parse::<u32>(), c.parse::<u64>()) {
                nodes.insert(NodeId(n), c * kps);
            }
        }
    }
    Ok((nodes, kps, line.to_string()))
}

fn fmt_place(p: &BTreeMap<NodeId, u64>) -> String {
    let v: Vec<String> = p
        .iter()
        .map(|(n, b)| format!("N{n}={}M", b / MIB))
        .collect();
    v.join(",")
}

/// The checks every successful reservation gets: the report's placement equals `want`, the
/// kernel's numa_maps agree page for page, every page was verified, and the kernel backs the
/// VMA with the page size asked for.
fn check_region(r: &Reservation, want: &BTreeMap<NodeId, u64>) -> Check {
    let rep = r.report();
    let addr = r.as_ptr() as usize;
    ensure!(
        rep.verified_all && rep.verified_pages == rep.total_pages,
        "not every page verified: {}/{}",
        rep.verified_pages,
        rep.total_pages
    );
    ensure!(
        &rep.placement == want,
        "report placement {} != expected {}",
        fmt_place(&rep.placement),
        fmt_place(want)
    );
    let (kernel, kps, line) = numa_maps(addr)?;
    // The policy the kernel holds for the VMA (what mbind set), e.g. `bind:0`,
    // `interleave:0-1`, `prefer:3`: pages that merely landed right by first touch do not pass.
    let nodes: Vec<u32> = rep.nodes.iter().map(|n| n.0).collect();
    let list = numapin::topology::format_cpulist(&nodes);
    let policy = match rep.policy {
        MemPolicy::Bind => format!("bind:{list}"),
        MemPolicy::Interleave => format!("interleave:{list}"),
        MemPolicy::Preferred => format!("prefer:{list}"),
    };
    ensure!(
        line.split_whitespace().nth(1) == Some(policy.as_str()),
        "the kernel's policy for the VMA is not {policy}: {line}"
    );
    ensure!(
        kernel == rep.placement,
        "numa_maps {} != report {} ({line})",
        fmt_place(&kernel),
        fmt_place(&rep.placement)
    );
    let vma = numapin::smaps::vma_info(addr)
        .map_err(|e| e.to_string())?
        .ok_or("no smaps entry")?;
    ensure!(
        vma.start == addr && vma.end == addr + r.len(),
        "VMA {:#x}-{:#x} is not the region {addr:#x}+{}",
        vma.start,
        vma.end,
        r.len()
    );
    match rep.page_size {
        PageSize::Base4K => {
            ensure!(
                kps == 4096 && vma.anon_huge == 0,
                "4k region has kernelpagesize {kps} and {} AnonHugePages (THP crept in)",
                vma.anon_huge
            );
            ensure!(
                vma.flags.iter().any(|f| f == "nh"),
                "4k region lacks VmFlags nh (MADV_NOHUGEPAGE): {:?}",
                vma.flags
            );
        }
        PageSize::Transparent => ensure!(
            vma.anon_huge == r.len() as u64 && rep.thp_bytes == Some(r.len() as u64),
            "THP region: AnonHugePages {} report {:?} of {}",
            vma.anon_huge,
            rep.thp_bytes,
            r.len()
        ),
        PageSize::Huge2M | PageSize::Huge1G => ensure!(
            kps as usize == rep.page_size.bytes().unwrap() && vma.hugetlb_bytes == r.len() as u64,
            "hugetlb region: kernelpagesize {kps}, hugetlb bytes {}",
            vma.hugetlb_bytes
        ),
        PageSize::Auto => return Err("report says Auto".into()),
    }
    Ok(format!(
        "{} {} on {} (numa_maps agrees, kps={}K), workers on cpus {:?} pinned {:?}",
        rep.page_size,
        r.len() as u64 / MIB,
        fmt_place(&rep.placement),
        kps / 1024,
        rep.worker_cpus,
        rep.pinned_cpus
    ))
}

fn one(node: NodeId, bytes: u64) -> BTreeMap<NodeId, u64> {
    BTreeMap::from([(node, bytes)])
}

/// Workers ran on the node's CPUs, or — for a CPU-less node — on any CPU, and the report says so.
fn check_workers(spec: &Spec, r: &Reservation, node: NodeId) -> Check {
    let rep = r.report();
    let ns = spec.nodes.iter().find(|n| n.id == node.0).unwrap();
    if ns.cpus.is_empty() {
        ensure!(
            rep.pinned_cpus == spec.cpus(),
            "CPU-less node {node}: pinned to {:?}, expected all CPUs {:?}",
            rep.pinned_cpus,
            spec.cpus()
        );
        ensure!(
            rep.notes.iter().any(|n| n.contains("no CPU")),
            "CPU-less node {node}: no note says so: {:?}",
            rep.notes
        );
    } else {
        ensure!(
            rep.pinned_cpus == ns.cpus,
            "pinned to {:?}, node {node} has {:?}",
            rep.pinned_cpus,
            ns.cpus
        );
    }
    ensure!(
        !rep.worker_cpus.is_empty() && rep.worker_cpus.iter().all(|c| rep.pinned_cpus.contains(c)),
        "workers ran on {:?}, pinned to {:?}",
        rep.worker_cpus,
        rep.pinned_cpus
    );
    Ok(String::new())
}

fn size_for(p: PageSize) -> u64 {
    match p {
        PageSize::Base4K | PageSize::Transparent => 16 * MIB,
        PageSize::Huge2M => 32 * MIB,
        _ => 1 << 30,
    }
}

// ---- scenarios ----------------------------------------------------------------------------

fn pools(spec: &Spec) -> Check {
    let mut got = vec![];
    for n in &spec.nodes {
        let g = (
            pool_count(n.id, 2048, "nr_hugepages"),
            pool_count(n.id, 1048576, "nr_hugepages"),
        );
        ensure!(
            g == (n.pool_2m, n.pool_1g),
            "node {}: pools 2M/1G {g:?}, spec {:?}",
            n.id,
            (n.pool_2m, n.pool_1g)
        );
        got.push(format!("N{}:{}x2M+{}x1G", n.id, g.0, g.1));
    }
    Ok(got.join(" "))
}

fn topology(spec: &Spec) -> Check {
    let out = Command::new("/numapin")
        .args(["topology", "--json"])
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "numapin topology failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cli: Topology = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    // The guest kernel's own view, read here independently of numapin's parser.
    let online = read("/sys/devices/system/node/online");
    let ids: Vec<u32> = cli.nodes.iter().map(|n| n.id.0).collect();
    let want_ids: Vec<u32> = spec.nodes.iter().map(|n| n.id).collect();
    ensure!(
        ids == want_ids,
        "nodes {ids:?}, spec {want_ids:?} (sysfs online: {online})"
    );
    let mut d = vec![];
    for (n, s) in cli.nodes.iter().zip(&spec.nodes) {
        let dir = format!("/sys/devices/system/node/node{}", s.id);
        let cpulist = read(&format!("{dir}/cpulist"));
        let sys_cpus = numapin::topology::parse_cpulist(&cpulist).map_err(|e| e.to_string())?;
        ensure!(
            n.cpus == sys_cpus && n.cpus == s.cpus,
            "node {}: numapin cpus {:?}, sysfs {cpulist:?}, spec {:?}",
            s.id,
            n.cpus,
            s.cpus
        );
        let memtotal: u64 = read(&format!("{dir}/meminfo"))
            .lines()
            .find(|l| l.contains("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(3))
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or("no MemTotal")?
            * 1024;
        ensure!(
            n.mem_total_bytes == memtotal,
            "node {}: numapin MemTotal {} != sysfs {memtotal}",
            s.id,
            n.mem_total_bytes
        );
        // The kernel keeps some of a node for itself; the rest must be there, and no more.
        let spec_bytes = s.mem_mib * MIB;
        ensure!(
            memtotal <= spec_bytes && memtotal >= spec_bytes * 80 / 100,
            "node {}: MemTotal {memtotal} does not fit the {} MiB QEMU gave it",
            s.id,
            s.mem_mib
        );
        ensure!(
            n.has_memory() == (s.mem_mib > 0),
            "node {}: has_memory {}",
            s.id,
            n.has_memory()
        );
        let dist = numapin::topology::parse_distances(&read(&format!("{dir}/distance")))
            .map_err(|e| e.to_string())?;
        let i = ids.iter().position(|x| *x == s.id).unwrap();
        ensure!(
            cli.distances[i] == dist && dist == spec.dist[i],
            "node {}: distances numapin {:?} sysfs {dist:?} spec {:?}",
            s.id,
            cli.distances[i],
            spec.dist[i]
        );
        for (kib, want) in [(2048u64, s.pool_2m), (1048576, s.pool_1g)] {
            let pool = n.hugepages.iter().find(|p| p.page_size_bytes == kib * 1024);
            let (total, free) = pool.map_or((0, 0), |p| (p.total, p.free));
            ensure!(
                (total, free)
                    == (
                        pool_count(s.id, kib, "nr_hugepages"),
                        pool_count(s.id, kib, "free_hugepages")
                    )
                    && total == want,
                "node {}: {kib}kB pool numapin {total}/{free}, spec {want}",
                s.id
            );
        }
        d.push(format!(
            "N{}:cpus={:?},mem={}M",
            s.id,
            n.cpus,
            memtotal / MIB
        ));
    }
    Ok(format!("{} (distances match)", d.join(" ")))
}

fn bind(spec: &Spec, node: NodeId, page: PageSize) -> Check {
    let size = size_for(page);
    let r = Reservation::builder(size)
        .node(node)
        .page_size(page)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let d = check_region(&r, &one(node, size))?;
    check_workers(spec, &r, node)?;
    Ok(d)
}

fn bind_cli(spec: &Spec) -> Check {
    let node = spec.mem_nodes().last().unwrap().id;
    let out = Command::new("/numapin")
        .args(["reserve", "--json", "--size", "32MiB", "--page-size", "2m"])
        .args(["--node", &node.to_string(), "--policy", "bind"])
        .output()
        .map_err(|e| e.to_string())?;
    ensure!(
        out.status.success(),
        "numapin reserve failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())?;
    let placement = v["placement"].as_object().ok_or("no placement")?;
    ensure!(
        placement.len() == 1 && placement[&node.to_string()].as_u64() == Some(32 * MIB),
        "placement {placement:?}"
    );
    ensure!(
        v["verified_all"] == true && v["total_pages"] == 16,
        "verification {v}"
    );
    Ok(format!("numapin reserve --json: placement {placement:?}"))
}

fn interleave(spec: &Spec, k: usize, page: PageSize) -> Check {
    let nodes: Vec<NodeId> = spec.mem_nodes()[..k].iter().map(|n| NodeId(n.id)).collect();
    let size = if page == PageSize::Base4K {
        12 * MIB
    } else {
        48 * MIB
    };
    let gran = page.bytes().unwrap() as u64;
    let r = Reservation::builder(size)
        .nodes(nodes.clone())
        .policy(MemPolicy::Interleave)
        .page_size(page)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let rep = r.report();
    let even = size / k as u64;
    for n in &nodes {
        let got = rep.placement.get(n).copied().unwrap_or(0);
        ensure!(
            got.abs_diff(even) <= gran,
            "node {n} got {got} bytes, an even split is {even} (placement {})",
            fmt_place(&rep.placement)
        );
    }
    let want = rep.placement.clone();
    ensure!(
        want.keys().all(|n| nodes.contains(n)) && want.values().sum::<u64>() == size,
        "pages off the interleave set: {}",
        fmt_place(&want)
    );
    check_region(&r, &want)
}

fn preferred(spec: &Spec, empty: bool) -> Check {
    let target = spec.mem_nodes().last().unwrap().id;
    let size = 32 * MIB;
    if empty {
        set_pool(target, 2048, 0);
        ensure!(
            pool_count(target, 2048, "free_hugepages") == 0,
            "could not empty the pool"
        );
    }
    let r = Reservation::builder(size)
        .node(NodeId(target))
        .policy(MemPolicy::Preferred)
        .page_size(PageSize::Huge2M)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let rep = r.report().clone();
    let d = if empty {
        ensure!(
            !rep.placement.contains_key(&NodeId(target))
                && rep.placement.values().sum::<u64>() == size,
            "node {target} has no pages, yet placement is {}",
            fmt_place(&rep.placement)
        );
        ensure!(
            rep.notes
                .iter()
                .any(|n| n.contains("fell back") && n.contains("32 MiB")),
            "no note says where the pages went: {:?}",
            rep.notes
        );
        check_region(&r, &rep.placement)?
    } else {
        check_region(&r, &one(NodeId(target), size))?
    };
    Ok(format!("{d}; notes {:?}", rep.notes))
}

/// The node whose pool a shortage scenario targets, the pages to ask, and the error expected.
fn short_case(spec: &Spec) -> (NodeId, u64, Error) {
    let target = spec.mem_nodes()[0];
    let wanted = target.pool_2m + 16;
    let elsewhere: u64 = spec
        .mem_nodes()
        .iter()
        .filter(|n| n.id != target.id)
        .map(|n| n.pool_2m)
        .sum();
    (
        NodeId(target.id),
        wanted,
        Error::HugepagesShort {
            node: NodeId(target.id),
            page_size: PageSize::Huge2M,
            wanted,
            free_on_node: target.pool_2m,
            free_elsewhere: elsewhere,
            reserved: 0,
            short: 16,
        },
    )
}

fn same_error(got: &Error, want: &Error) -> bool {
    got.to_string() == want.to_string()
        && std::mem::discriminant(got) == std::mem::discriminant(want)
}

/// Host facts that claim `nodes` have `free` free 2 MiB pages (and the host as many more):
/// the preflight passes and the kernel has to refuse.
fn lying_facts(nodes: &[NodeId], free: u64) -> numapin::HostFacts {
    let mut f = numapin::HostFacts::gather(None).expect("host facts");
    for n in f
        .topology
        .nodes
        .iter_mut()
        .filter(|n| nodes.contains(&n.id))
    {
        for p in n
            .hugepages
            .iter_mut()
            .filter(|p| p.page_size_bytes == 2 * MIB)
        {
            p.free = free;
            p.total = free;
        }
    }
    for p in f
        .host_pools
        .iter_mut()
        .filter(|p| p.page_size_bytes == 2 * MIB)
    {
        p.free += free * nodes.len() as u64;
        p.total += free * nodes.len() as u64;
    }
    f
}

fn short(spec: &Spec, kernel: bool) -> Check {
    let (node, wanted, want) = short_case(spec);
    let before = pool_state(spec);
    let mut b = Reservation::builder(wanted * 2 * MIB)
        .node(node)
        .page_size(PageSize::Huge2M);
    if kernel {
        b = b.facts(lying_facts(&[node], 100_000));
    }
    let e = match b.build() {
        Ok(r) => {
            return Err(format!(
                "reserved although node {node} is short: {:?}",
                r.report().placement
            ))
        }
        Err(e) => e,
    };
    ensure!(same_error(&e, &want), "error {e:?}, expected {want:?}");
    let after = pool_state(spec);
    ensure!(before == after, "pools changed: {before:?} -> {after:?}");
    Ok(format!("{e} (pools unchanged)"))
}

fn short_multi(spec: &Spec) -> Check {
    // Bind to two nodes the preflight believes are full; the kernel's reservation counts both
    // pools; the error must give each node's real numbers and what the pair lacks.
    let m = spec.mem_nodes();
    let (a, b) = (m[0], m[1]);
    let pages = a.pool_2m + b.pool_2m + 16;
    let nodes = [NodeId(a.id), NodeId(b.id)];
    let before = pool_state(spec);
    let e = match Reservation::builder(pages * 2 * MIB)
        .nodes(nodes)
        .page_size(PageSize::Huge2M)
        .facts(lying_facts(&nodes, 100_000))
        .build()
    {
        Ok(_) => return Err("reserved more than both pools hold".into()),
        Err(e) => e,
    };
    // The shortage belongs to both nodes, each with its own free count.
    let want = Error::HugepagesShortOnNodes {
        page_size: PageSize::Huge2M,
        wanted: pages,
        free: vec![(NodeId(a.id), a.pool_2m), (NodeId(b.id), b.pool_2m)],
        reserved: 0,
        short: 16,
    };
    ensure!(same_error(&e, &want), "error {e:?}, expected {want:?}");
    ensure!(before == pool_state(spec), "pools changed");
    Ok(format!("{e} (pools unchanged)"))
}

/// Another mapping holds all but 10 of the host's free 2M pages reserved (`HugePages_Rsvd`)
/// without faulting them: a 16-page reservation is 6 short, in the preflight and, past a
/// preflight fed lying facts, when the kernel refuses at `mmap` (never "0 short").
fn short_rsvd(spec: &Spec) -> Check {
    let m = spec.mem_nodes();
    let a = m[0];
    let all: u64 = m.iter().map(|n| n.pool_2m).sum();
    ensure!(
        all > 26 && a.pool_2m >= 16,
        "pools too small for the scenario: {all}"
    );
    let held = (all - 10) * 2 * MIB;
    // SAFETY: a fresh anonymous hugetlb mapping, never touched, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            held as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    ensure!(
        p != libc::MAP_FAILED,
        "reserve {held} bytes: {}",
        std::io::Error::last_os_error()
    );
    let want = Error::HugepagesShort {
        node: NodeId(a.id),
        page_size: PageSize::Huge2M,
        wanted: 16,
        free_on_node: a.pool_2m,
        free_elsewhere: all - a.pool_2m,
        reserved: all - 10,
        short: 6,
    };
    let b = || {
        Reservation::builder(16 * 2 * MIB)
            .node(NodeId(a.id))
            .page_size(PageSize::Huge2M)
    };
    let pre = b().build();
    let kernel = b().facts(lying_facts(&[NodeId(a.id)], 100_000)).build();
    // SAFETY: the mapping made above.
    unsafe { libc::munmap(p, held as usize) };
    let pre = pre.err().ok_or("the preflight passed")?;
    let kernel = kernel.err().ok_or("the kernel accepted")?;
    ensure!(
        same_error(&pre, &want),
        "preflight: {pre:?}, expected {want:?}"
    );
    ensure!(
        same_error(&kernel, &want),
        "kernel: {kernel:?}, expected {want:?}"
    );
    Ok(format!("{pre}"))
}

/// Interleave over two nodes whose first pool runs dry half-way (the preflight is fed facts
/// that hide it): hugetlb interleave falls back to another node, and the verification must say
/// so instead of reporting an interleaved region.
fn interleave_fallback(spec: &Spec) -> Check {
    let m = spec.mem_nodes();
    let (a, b) = (m[0], m[1]);
    ensure!(b.pool_2m >= 20, "node {} pool too small", b.id);
    set_pool(a.id, 2048, 4);
    let nodes = [NodeId(a.id), NodeId(b.id)];
    let before = pool_state(spec);
    let r = Reservation::builder(24 * 2 * MIB)
        .nodes(nodes)
        .policy(MemPolicy::Interleave)
        .page_size(PageSize::Huge2M)
        .facts(lying_facts(&nodes, 100_000))
        .build();
    let e = match r {
        Ok(r) => {
            return Err(format!(
                "uneven interleave reported as success: {}",
                fmt_place(&r.report().placement)
            ))
        }
        Err(e) => e,
    };
    let ok = match &e {
        Error::InterleaveUneven { short_nodes, .. } => short_nodes.contains(&NodeId(a.id)),
        // A third node took the pages: off the interleave set.
        Error::Misplaced { .. } => m.len() > 2,
        _ => false,
    };
    ensure!(ok, "error {e:?}");
    ensure!(before == pool_state(spec), "pools changed");
    Ok(format!("{e}"))
}

fn short_cli(spec: &Spec) -> Check {
    let (node, wanted, want) = short_case(spec);
    let before = pool_state(spec);
    let out = Command::new("/numapin")
        .args(["reserve", "--json", "--page-size", "2m"])
        .args(["--size", &format!("{}MiB", wanted * 2)])
        .args(["--node", &node.to_string()])
        .output()
        .map_err(|e| e.to_string())?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1),
        "exit {:?}, stderr {stderr}",
        out.status
    );
    ensure!(
        stderr.trim() == format!("numapin: error: {want}"),
        "stderr {stderr:?}, expected the message of {want:?}"
    );
    ensure!(before == pool_state(spec), "pools changed");
    Ok(format!("exit 1: {}", stderr.trim()))
}

fn auto(spec: &Spec, node: NodeId) -> Check {
    let size = 32 * MIB;
    let r = Reservation::builder(size)
        .node(node)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    ensure!(
        r.report().page_size == PageSize::Huge2M
            && r.report().requested_page_size == PageSize::Auto,
        "auto chose {} (notes {:?})",
        r.report().page_size,
        r.report().notes
    );
    check_workers(spec, &r, node)?;
    check_region(&r, &one(node, size))
}

fn auto_fallback(spec: &Spec) -> Check {
    let node = spec.mem_nodes().last().unwrap().id;
    set_pool(node, 2048, 0);
    let size = 32 * MIB;
    let r = Reservation::builder(size)
        .node(NodeId(node))
        .build()
        .map_err(|e| format!("build: {e}"))?;
    let rep = r.report();
    let note = format!("auto: not 2m: node {node} has 0 free, 16 needed (16 short)");
    ensure!(
        rep.page_size == PageSize::Transparent && rep.notes.iter().any(|n| n == &note),
        "auto chose {} with notes {:?}, expected thp and {note:?}",
        rep.page_size,
        rep.notes
    );
    check_region(&r, &one(NodeId(node), size))
}

fn auto_1g(spec: &Spec) -> Check {
    let node = NodeId(spec.mem_nodes().iter().find(|n| n.pool_1g > 0).unwrap().id);
    let r = Reservation::builder(1 << 30)
        .node(node)
        .build()
        .map_err(|e| format!("build: {e}"))?;
    ensure!(
        r.report().page_size == PageSize::Huge1G,
        "auto chose {}",
        r.report().page_size
    );
    check_region(&r, &one(node, 1 << 30))
}

fn many(spec: &Spec) -> Check {
    let with_cpus: Vec<_> = spec
        .mem_nodes()
        .into_iter()
        .filter(|n| !n.cpus.is_empty())
        .take(2)
        .collect();
    ensure!(with_cpus.len() == 2, "need two nodes with CPUs and memory");
    let size = 32 * MIB;
    let t = Instant::now();
    let rs = Reservation::build_many(with_cpus.iter().map(|n| {
        Reservation::builder(size)
            .node(NodeId(n.id))
            .page_size(PageSize::Huge2M)
    }))
    .map_err(|e| format!("build_many: {e}"))?;
    let wall = t.elapsed().as_secs_f64();
    let mut d = vec![];
    let mut sum = 0.0;
    for (r, n) in rs.iter().zip(&with_cpus) {
        check_region(r, &one(NodeId(n.id), size))?;
        check_workers(spec, r, NodeId(n.id))?;
        let rep = r.report();
        sum += rep.populate_seconds + rep.verify_seconds;
        d.push(format!(
            "node {} workers on {:?} populate {:.3}s verify {:.3}s",
            n.id, rep.worker_cpus, rep.populate_seconds, rep.verify_seconds
        ));
    }
    Ok(format!(
        "{}; build_many wall {wall:.3}s vs populate+verify summed {sum:.3}s",
        d.join("; ")
    ))
}

fn pinned_default(cpu: u32) -> Result<Reservation, String> {
    numapin::process::set_thread_affinity(&[cpu]).map_err(|e| format!("pin to cpu {cpu}: {e}"))?;
    Reservation::builder(4 * MIB)
        .page_size(PageSize::Base4K)
        .build()
        .map_err(|e| format!("build: {e}"))
}

fn default_local(spec: &Spec) -> Check {
    let mut d = vec![];
    for n in spec.mem_nodes().into_iter().filter(|n| !n.cpus.is_empty()) {
        let r = pinned_default(n.cpus[0])?;
        ensure!(
            r.report().nodes == [NodeId(n.id)],
            "on cpu {} chose {:?}, expected node {} (notes {:?})",
            n.cpus[0],
            r.report().nodes,
            n.id,
            r.report().notes
        );
        check_region(&r, &one(NodeId(n.id), 4 * MIB))?;
        d.push(format!("cpu {} -> node {}", n.cpus[0], n.id));
    }
    Ok(d.join(", "))
}

fn default_nearest(spec: &Spec) -> Check {
    let cpu_only = spec
        .nodes
        .iter()
        .find(|n| n.mem_mib == 0 && !n.cpus.is_empty())
        .unwrap();
    let nearest = spec
        .mem_nodes()
        .into_iter()
        .min_by_key(|n| (spec.distance(cpu_only.id, n.id), n.id))
        .unwrap();
    let r = pinned_default(cpu_only.cpus[0])?;
    ensure!(
        r.report().nodes == [NodeId(nearest.id)],
        "on cpu {} (memory-less node {}) chose {:?}, expected the nearest node with memory {} (notes {:?})",
        cpu_only.cpus[0],
        cpu_only.id,
        r.report().nodes,
        nearest.id,
        r.report().notes
    );
    check_region(&r, &one(NodeId(nearest.id), 4 * MIB))?;
    Ok(format!(
        "cpu {} on memory-less node {} -> node {} (distance {}); notes {:?}",
        cpu_only.cpus[0],
        cpu_only.id,
        nearest.id,
        spec.distance(cpu_only.id, nearest.id),
        r.report().notes
    ))
}

/// Per-node ledger accounting matches where the pages really are. Two 2 MiB regions whose
/// pages spread over nodes — an interleave over two nodes, and a preferred reservation whose
/// node's pool was emptied after the first, so that every page falls back — are charged to an in-memory ledger
/// per node from their reports (a VMM's way to account). The ledger's 2 MiB class of every
/// node must then equal that node's pool usage read from sysfs (`nr − free`, delta) and the
/// regions' numa_maps; after the charges and regions are dropped, ledger and pools are back.
fn ledger(spec: &Spec) -> Check {
    use numapin::ledger::{ClassSpec, Ledger};
    use std::sync::Arc;
    let mem = spec.mem_nodes();
    let target = mem.last().unwrap().id;
    let pair = [NodeId(mem[0].id), NodeId(mem[1].id)];
    let topo = Topology::from_sysfs().map_err(|e| e.to_string())?;
    let classes = ClassSpec::from_topology(&topo, 0, 0);
    for n in &spec.nodes {
        let has = classes
            .iter()
            .any(|c| c.node.0 == n.id && c.page_size_bytes == 4096);
        ensure!(
            has == (n.mem_mib > 0),
            "node {}: base class {has}, memory {} MiB",
            n.id,
            n.mem_mib
        );
    }
    let ledger = Arc::new(Ledger::in_memory(&classes, 16).map_err(|e| e.to_string())?);
    let used = |n: u32| {
        (pool_count(n, 2048, "nr_hugepages") - pool_count(n, 2048, "free_hugepages")) * 2 * MIB
    };
    let before: BTreeMap<u32, u64> = mem.iter().map(|n| (n.id, used(n.id))).collect();
    let inter = Reservation::builder(24 * MIB)
        .nodes(pair)
        .policy(MemPolicy::Interleave)
        .page_size(PageSize::Huge2M)
        .build()
        .map_err(|e| format!("interleave: {e}"))?;
    // Empty the preferred node's pool now (pages in use stay in use, `nr - free` unchanged):
    // every page of the next region falls back to other nodes.
    set_pool(target, 2048, 0);
    let pref = Reservation::builder(16 * MIB)
        .node(NodeId(target))
        .policy(MemPolicy::Preferred)
        .page_size(PageSize::Huge2M)
        .build()
        .map_err(|e| format!("preferred: {e}"))?;
    let mut vm = ledger.vm("numavm-guest").map_err(|e| e.to_string())?;
    let mut kernel_maps: BTreeMap<NodeId, u64> = BTreeMap::new();
    for r in [&inter, &pref] {
        for (node, bytes) in &r.report().placement {
            vm.try_charge(*node, 2 * MIB, *bytes)
                .map_err(|e| format!("charge {bytes} on node {node}: {e}"))?;
        }
        for (node, bytes) in numa_maps(r.as_ptr() as usize)?.0 {
            *kernel_maps.entry(node).or_default() += bytes;
        }
    }
    let mut d = vec![];
    for c in ledger.classes().map_err(|e| e.to_string())? {
        if c.page_size_bytes != 2 * MIB {
            ensure!(
                c.reserved_bytes == 0,
                "class {}/{} charged {}",
                c.node,
                c.page_size_bytes,
                c.reserved_bytes
            );
            continue;
        }
        let pools = used(c.node.0) - before[&c.node.0];
        let maps = kernel_maps.get(&c.node).copied().unwrap_or(0);
        ensure!(
            c.reserved_bytes == pools && pools == maps,
            "node {}: ledger {} pools {} numa_maps {}",
            c.node,
            c.reserved_bytes,
            pools,
            maps
        );
        d.push(format!(
            "N{}: ledger={}M pools={}M",
            c.node,
            c.reserved_bytes / MIB,
            pools / MIB
        ));
    }
    ensure!(
        ledger
            .classes()
            .map_err(|e| e.to_string())?
            .iter()
            .any(|c| c.node.0 == target),
        "no class for node {target}"
    );
    drop(vm);
    drop((inter, pref));
    for c in ledger.classes().map_err(|e| e.to_string())? {
        ensure!(
            c.reserved_bytes == 0,
            "after release: class {}/{} still {}",
            c.node,
            c.page_size_bytes,
            c.reserved_bytes
        );
    }
    for n in &mem {
        ensure!(
            used(n.id) == before[&n.id],
            "node {}: pool usage {} after release, {} before",
            n.id,
            used(n.id),
            before[&n.id]
        );
    }
    Ok(d.join(", "))
}

/// A shared reservation (2M memfd) bound to `node`, adopted by a second process (this binary's
/// ignored `shared_adopter` test, which inherits the descriptor): the adopter finds every page
/// on `node` too, with `move_pages` and in its own `numa_maps`, and the pool moves by no page.
fn shared_adopted(node: NodeId) -> Check {
    use std::os::fd::AsRawFd;
    let r = Reservation::builder(16 * MIB)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .map_err(|e| format!("shared reservation: {e}"))?;
    let (kernel, _, line) = numa_maps(r.as_ptr() as usize)?;
    ensure!(
        kernel.keys().copied().collect::<Vec<_>>() == vec![node],
        "creator's numa_maps: {line}"
    );
    // A duplicate without close-on-exec for the child (this runner is single-threaded).
    let fd = r
        .as_fd()
        .unwrap()
        .try_clone_to_owned()
        .map_err(|e| e.to_string())?;
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty()).map_err(|e| e.to_string())?;
    let free = pool_count(node.0, 2048, "free_hugepages");
    let out = Command::new("/proc/self/exe")
        .args(["--ignored", "--exact", "shared_adopter", "--nocapture"])
        .env("NUMAVM_ADOPT_FD", fd.as_raw_fd().to_string())
        .env("NUMAVM_ADOPT_NODE", node.0.to_string())
        .output()
        .map_err(|e| format!("spawn the adopter: {e}"))?;
    drop(fd);
    let text = String::from_utf8_lossy(&out.stdout);
    let adopted = text
        .lines()
        .find_map(|l| l.strip_prefix("ADOPTED "))
        .ok_or_else(|| {
            format!(
                "adopter failed ({}): {text} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })?
        .to_string();
    let after = pool_count(node.0, 2048, "free_hugepages");
    ensure!(
        after == free,
        "the adopter moved the pool: {free} -> {after}"
    );
    Ok(format!("creator: {line}; adopter: {adopted}"))
}

/// The second process of `shared.nN`: adopts the inherited memfd, requiring every page on the
/// node, and reports its own numa_maps line.
pub fn shared_adopter() {
    use std::os::fd::FromRawFd;
    let fd: i32 = std::env::var("NUMAVM_ADOPT_FD").unwrap().parse().unwrap();
    let node = NodeId(std::env::var("NUMAVM_ADOPT_NODE").unwrap().parse().unwrap());
    // SAFETY: the parent passed this descriptor to us open, and nothing else in this process
    // owns it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    let a = Reservation::adopt(fd)
        .size(16 * MIB)
        .page_size(PageSize::Huge2M)
        .node(node)
        .build()
        .unwrap_or_else(|e| panic!("adopt: {e}"));
    let (kernel, _, line) = numa_maps(a.as_ptr() as usize).unwrap();
    assert_eq!(kernel.get(&node), Some(&(16 * MIB)), "{line}");
    assert_eq!(a.report().placement.get(&node), Some(&(16 * MIB)));
    println!("ADOPTED {line}");
}
