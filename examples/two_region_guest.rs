//! A two-region guest, one region per host NUMA node, as a rust-vmm VMM would lay it out:
//! reserve both regions (populating concurrently, each with its own node's CPUs), map them at
//! guest physical addresses 0 and 4 GiB, then read and write through vm-memory's `Bytes`.
//!
//! ```text
//! cargo run --example two_region_guest --features vm-memory -- \
//!     [--node A --node B] [--size 256MiB] [--page-size auto|4k|thp|2m|1g] [--background]
//! ```
//! Without `--node`, both regions go to the first node with memory (so it runs on a one-node
//! host). `--background` lays the regions out while they are still being populated and lets
//! the "guest" write before population ends, printing progress.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use numapin::vmm::{self, Layout, NumaGuestMemory, RegionMemory};
use numapin::{format_bytes, parse_size, NodeId, PageSize, Reservation, Topology};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Guest physical addresses of the two regions: low memory, and above the 32-bit hole as on
/// x86 (4 GiB is aligned for every page size).
const BASES: [u64; 2] = [0, 4 << 30];

struct Args {
    nodes: Vec<NodeId>,
    size: u64,
    page_size: PageSize,
    background: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        nodes: Vec::new(),
        size: 256 << 20,
        page_size: PageSize::Auto,
        background: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match a.as_str() {
            "--node" => {
                let v = value("--node")?;
                let n = v
                    .parse()
                    .map_err(|_| format!("--node {v}: not a node id"))?;
                args.nodes.push(NodeId(n));
            }
            "--size" => args.size = parse_size(&value("--size")?).map_err(|e| e.to_string())?,
            "--page-size" => {
                args.page_size = value("--page-size")?
                    .parse()
                    .map_err(|e: numapin::ParseError| e.to_string())?
            }
            "--background" => args.background = true,
            "-h" | "--help" => {
                return Err("usage: two_region_guest [--node A --node B] [--size SIZE] \
                            [--page-size auto|4k|thp|2m|1g] [--background]"
                    .into())
            }
            other => return Err(format!("unknown argument {other:?} (try --help)")),
        }
    }
    match args.nodes.len() {
        0 => {
            let topo = Topology::from_sysfs().map_err(|e| e.to_string())?;
            let n = topo
                .nodes
                .iter()
                .find(|n| n.has_memory())
                .ok_or("no node with memory")?
                .id;
            args.nodes = vec![n, n];
        }
        1 => args.nodes.push(args.nodes[0]),
        2 => {}
        n => return Err(format!("two regions, so at most two --node (got {n})")),
    }
    Ok(args)
}

fn run(args: &Args) -> numapin::Result<()> {
    let builders = args.nodes.iter().map(|&n| {
        Reservation::builder(args.size)
            .node(n)
            .page_size(args.page_size)
    });
    let t0 = Instant::now();
    // Reserve before any vCPU runs: every error (short pool, memlock, policy) comes now.
    let memory: Vec<RegionMemory> = if args.background {
        // Both regions populate concurrently in the background; the VM may start at once.
        builders
            .map(|b| b.build_background().map(RegionMemory::from))
            .collect::<numapin::Result<_>>()?
    } else {
        // Both populate concurrently, each with its own node's CPUs; returns when done.
        Reservation::build_many(builders)?
            .into_iter()
            .map(RegionMemory::from)
            .collect()
    };
    let mut layout = Layout::new();
    for (base, m) in BASES.iter().zip(memory) {
        layout = layout.region(GuestAddress(*base), m);
    }
    let mem: NumaGuestMemory = layout.build()?;
    println!(
        "guest memory ready for vCPUs after {:.3}s",
        t0.elapsed().as_secs_f64()
    );
    for r in mem.iter() {
        let o = vmm::owner(r);
        println!(
            "  region {:#011x}..{:#011x}  {:>10}  {} pages  hugetlbfs={:?}  host {:p}  fault guarantee {:?}",
            r.start_addr().0,
            r.start_addr().0 + r.len(),
            format_bytes(r.len()),
            o.page_size(),
            r.is_hugetlbfs(),
            o.as_ptr(),
            o.fault_guarantee(),
        );
    }

    // The "guest": write a signature at the start and end of each region, and a page-strided
    // pattern, through vm-memory, while population may still be running.
    for (i, base) in BASES.iter().enumerate() {
        let last = base + args.size - 8;
        mem.write_obj(0x6e75_6d61_7069_6e00u64 | i as u64, GuestAddress(*base))
            .expect("inside region");
        mem.write_obj(!(i as u64), GuestAddress(last))
            .expect("inside region");
        let mut a = *base;
        while a < base + args.size {
            mem.write_obj((a >> 12) as u32, GuestAddress(a + 64))
                .expect("inside region");
            a += 1 << 21;
        }
    }
    if args.background {
        while !mem.iter().all(|r| vmm::owner(r).is_finished()) {
            // Per region, so that concurrent population shows: both advance together.
            let p = vmm::progress(&mem);
            let each: Vec<String> = mem
                .iter()
                .map(|r| format!("{:3.0}%", 100.0 * vmm::owner(r).progress().fraction()))
                .collect();
            let what = if p.done_bytes == p.total_bytes {
                "verifying placement"
            } else {
                "populating"
            };
            println!(
                "  {what}: {} of {} ({:.0}%), {}/s; per region {}",
                format_bytes(p.done_bytes),
                format_bytes(p.total_bytes),
                100.0 * p.fraction(),
                format_bytes(p.bytes_per_second() as u64),
                each.join(" ")
            );
            if p.done_bytes == p.total_bytes {
                break; // wait_populated below waits for the verification
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let reports = vmm::wait_populated(&mem)?;
    println!(
        "populated and verified after {:.3}s",
        t0.elapsed().as_secs_f64()
    );
    for (base, rep) in BASES.iter().zip(&reports) {
        let place: Vec<String> = rep
            .placement
            .iter()
            .map(|(n, b)| format!("node {n}: {}", format_bytes(*b)))
            .collect();
        println!(
            "  region {base:#011x}: populated in {:.3}s ({:.2} GiB/s) by {} threads on cpus {:?}; {}",
            rep.populate_seconds,
            rep.populate_gib_per_s(),
            rep.threads,
            rep.worker_cpus,
            place.join(", ")
        );
    }

    // Read everything back through Bytes.
    for (i, base) in BASES.iter().enumerate() {
        let sig: u64 = mem.read_obj(GuestAddress(*base)).expect("inside region");
        let end: u64 = mem
            .read_obj(GuestAddress(base + args.size - 8))
            .expect("inside region");
        assert_eq!(sig, 0x6e75_6d61_7069_6e00 | i as u64);
        assert_eq!(end, !(i as u64));
        let mut a = *base;
        while a < base + args.size {
            let v: u32 = mem.read_obj(GuestAddress(a + 64)).expect("inside region");
            assert_eq!(v, (a >> 12) as u32, "at {a:#x}");
            a += 1 << 21;
        }
    }
    println!("read back every write through vm-memory: ok");
    Ok(())
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
