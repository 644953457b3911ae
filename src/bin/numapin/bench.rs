//! `numapin bench`: a reservation against the ballooning baseline, side by side in one run.
//!
//! Every measurement is repeated with numapin and the baseline interleaved (numapin, limit,
//! baseline, then the other way round on the next repetition, so drift in the machine's speed
//! hits both), and each row reports the medians and the median of the per-repetition ratios.
//! A ratio > 1 always means numapin is better. See `docs/benchmarks.md` for what each row
//! measures and why.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use numapin::baseline::{LazyRegion, Sharing};
use numapin::measure::{self, median, percentile};
use numapin::{format_bytes, PageSize, Reservation, ThpMode, Topology};

use crate::CliError;

mod pool_rows;
mod shared_rows;
mod svg;

/// Arguments of `numapin bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Guest size for the side-by-side rows, reserved in 2 MiB pages (needs that many free
    /// pages in the 2M pool).
    #[arg(long, value_parser = numapin::parse_size, default_value = "1GiB")]
    size: u64,
    /// Fewer repetitions and smaller samples (well under two minutes on a 2-CPU VM).
    #[arg(long)]
    quick: bool,
    /// Print one JSON object (`{"machine": {...}, "results": [...]}`) instead of a table.
    #[arg(long)]
    json: bool,
    /// Also sweep the size and write SVG plots (time to ready vs size, latency CDF,
    /// populate throughput per page size) into this directory.
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Threads for every populate and touch (default: every CPU this process may use).
    #[arg(long)]
    threads: Option<usize>,
    /// Repetitions of each side-by-side measurement (default 9, 3 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Only the warm-pool rows (`warm_time_to_ready`, `failover_restart`, `rezero_vs_memset`).
    #[arg(long, conflicts_with = "no_pool")]
    only_pool: bool,
    /// Skip the warm-pool rows (they start a `numapin serve` child and need 4 GiB of 2M pages).
    #[arg(long)]
    no_pool: bool,
    /// Internal: the adopting process of the `adopt_vs_populate` row (connects to SOCKET,
    /// adopts every memfd it receives, answers the seconds each took).
    #[arg(long, hide = true, value_name = "SOCKET")]
    adopt_child: Option<PathBuf>,
}

/// One row of the report.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    metric: String,
    numapin: f64,
    baseline: f64,
    unit: &'static str,
    /// > 1: numapin better.
    ratio: f64,
    /// The goal for the ratio, if it sets one.
    goal: Option<f64>,
    /// What the baseline is, and anything unusual.
    note: String,
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// Progress goes to stderr, so that `--json` keeps stdout to the one object.
fn say(msg: &str) {
    eprintln!("bench: {msg}");
}

/// The pairwise ratio's median, with each pair from the same repetition.
fn paired(numapin: &[f64], baseline: &[f64], better_is_lower: bool) -> f64 {
    let r: Vec<f64> = numapin
        .iter()
        .zip(baseline)
        .map(|(n, b)| if better_is_lower { b / n } else { n / b })
        .collect();
    median(&r)
}

fn gibps(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / GIB as f64 / d.as_secs_f64().max(1e-9)
}

/// Writes one byte in every base page of `mem[range]`; returns the time.
fn touch(mem: &mut [u8], from: usize, to: usize) -> Duration {
    let t = Instant::now();
    for i in (from..to).step_by(4096) {
        mem[i] = mem[i].wrapping_add(1);
    }
    std::hint::black_box(&mem[from]);
    t.elapsed()
}

fn reserve(size: u64, page: PageSize, threads: usize) -> Result<Reservation, numapin::Error> {
    Reservation::builder(size)
        .page_size(page)
        .threads(threads)
        .build()
}

/// Samples of the side-by-side loop.
#[derive(Default)]
struct Samples {
    ttr: [Vec<f64>; 2],
    p99: [Vec<f64>; 2],
    /// numapin's p99 on a second pass over the same pages (the machine's access floor).
    floor: Vec<f64>,
    random: [Vec<f64>; 2],
    populate: [Vec<f64>; 2],
    balloon: [Vec<f64>; 2],
    lat_last: [Vec<u64>; 2],
}

pub fn run(a: &Args) -> Result<(), CliError> {
    if let Some(sock) = &a.adopt_child {
        return shared_rows::adopt_child(sock);
    }
    let started = Instant::now();
    let threads = a
        .threads
        .unwrap_or_else(|| numapin::process::affinity().map_or(1, |c| c.len().max(1)));
    let reps = a.reps.unwrap_or(if a.quick { 3 } else { 9 }).max(1);
    let size = a.size;
    let json = a.json;
    if a.only_pool {
        let rows = pool_rows::pool_rows(size, threads, if a.quick { 3 } else { 5 })?;
        let mut out = std::io::stdout().lock();
        if json {
            writeln!(out, "{}", serde_json::to_string_pretty(&rows)?)?;
        } else {
            for r in &rows {
                let goal = r.goal.map_or_else(String::new, |g| format!("≥{g}"));
                writeln!(
                    out,
                    "{:<26} {:>12} {:>12} {:<10} {:>8.2} {:>6}\n  {}",
                    r.metric,
                    fmt_num(r.numapin),
                    fmt_num(r.baseline),
                    r.unit,
                    r.ratio,
                    goal,
                    r.note
                )?;
            }
        }
        return Ok(());
    }

    if size < 8 * MIB {
        return Err(numapin::Error::InvalidSize {
            size,
            reason: "numapin bench needs at least 8 MiB (its balloon takes a quarter, in 2 MiB granules); pass --size 8MiB or more".into(),
        }
        .into());
    }
    // Fail early, with the library's own message (pool short, size not a multiple of 2 MiB).
    if let Err(e) = Reservation::builder(size)
        .page_size(PageSize::Huge2M)
        .threads(threads)
        .preflight()
    {
        eprintln!(
            "numapin bench needs {} in 2 MiB hugepages for its main rows; pass a smaller --size (e.g. --size 256MiB) or grow the pool",
            format_bytes(size)
        );
        return Err(e.into());
    }
    let topo = Topology::from_sysfs()?;
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let hypervisor = cpuinfo
        .lines()
        .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor"));
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or_else(String::new, |(_, v)| v.trim().to_string());
    let free = |p: PageSize| -> u64 {
        topo.nodes
            .iter()
            .filter_map(|n| n.pool(p))
            .map(|p| p.free)
            .sum()
    };
    let machine = serde_json::json!({
        "cpu_model": model,
        "cpus": numapin::process::affinity().map_or(0, |c| c.len()),
        "numa_nodes": topo.nodes.len(),
        "hypervisor": hypervisor,
        "kernel": numapin::process::kernel_release(),
        "mem_total_bytes": topo.nodes.iter().map(|n| n.mem_total_bytes).sum::<u64>(),
        "thp": format!("{:?}", topo.thp).to_lowercase(),
        "free_hugepages_2m": free(PageSize::Huge2M),
        "free_hugepages_1g": free(PageSize::Huge1G),
        "loadavg": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "numapin_version": env!("CARGO_PKG_VERSION"),
        "clock_overhead_ns": clock_overhead_ns(),
        "size_bytes": size,
        "threads": threads,
        "reps": reps,
        "quick": a.quick,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    });
    if hypervisor {
        say("this machine is a VM (`hypervisor` in /proc/cpuinfo): its host faults guest memory in lazily, so the first pass over memory is slow; warming up first");
    }

    // Warm-up: fault the pool pages and base memory in on the outer host, and run every code
    // path once. Nothing here is counted.
    say(&format!(
        "warming up {} of 2M pages and of base pages",
        format_bytes(size)
    ));
    drop(reserve(size, PageSize::Huge2M, threads)?);
    {
        let mut w = LazyRegion::new(size, PageSize::Base4K, Sharing::Private)?;
        w.touch_parallel(threads);
        let l = LazyRegion::new(size, PageSize::Huge2M, Sharing::Private)?;
        measure::populate_limit(&l, threads)?;
    }

    let sample_pages = if a.quick { 8192 } else { 32768 };
    let steps = if a.quick { 1 << 20 } else { 1 << 22 };
    // A quarter, in whole 2 MiB granules (size >= 8 MiB, so at least one).
    let q = size as usize / 4 / (2 << 20) * (2 << 20);
    let granule = 2 << 20;
    let mut s = Samples::default();
    say(&format!(
        "{reps} interleaved repetitions at {} with {threads} thread(s)",
        format_bytes(size)
    ));
    for rep in 0..reps {
        let sample = measure::page_sample(size as usize, sample_pages, rep as u64 + 1);
        let mut order = [0, 2];
        if rep % 2 == 1 {
            order.reverse();
        }
        for side in order {
            match side {
                0 => {
                    // numapin: reserve, then use the ready memory.
                    let t = Instant::now();
                    let mut r = reserve(size, PageSize::Huge2M, threads)?;
                    s.ttr[0].push(t.elapsed().as_secs_f64());
                    let lat = measure::write_latencies(r.as_mut_slice(), &sample);
                    let mut sorted = lat.clone();
                    sorted.sort_unstable();
                    s.p99[0].push(percentile(&sorted, 0.99) as f64);
                    s.lat_last[0] = lat;
                    // The same pages again: what any access to this memory costs here.
                    let mut again = measure::write_latencies(r.as_mut_slice(), &sample);
                    again.sort_unstable();
                    s.floor.push(percentile(&again, 0.99) as f64);
                    let (d, _) = measure::random_reads(r.as_slice(), steps, rep as u64 + 7);
                    s.random[0].push(steps as f64 / d.as_secs_f64() / 1e6);
                    s.balloon[0].push(touch(r.as_mut_slice(), q, 2 * q).as_secs_f64());
                }
                _ => {
                    // Baseline: first touch of a lazy 4K region ...
                    let mut lazy = LazyRegion::new(size, PageSize::Base4K, Sharing::Private)?;
                    let lat = measure::write_latencies(lazy.as_mut_slice(), &sample);
                    let mut sorted = lat.clone();
                    sorted.sort_unstable();
                    s.p99[1].push(percentile(&sorted, 0.99) as f64);
                    s.lat_last[1] = lat;
                    drop(lazy);
                    // ... time to ready: map + touch every page with the same threads ...
                    let t = Instant::now();
                    let mut lazy = LazyRegion::new(size, PageSize::Base4K, Sharing::Private)?;
                    lazy.touch_parallel(threads);
                    s.ttr[1].push(t.elapsed().as_secs_f64());
                    let (d, _) = measure::random_reads(lazy.as_slice(), steps, rep as u64 + 7);
                    s.random[1].push(steps as f64 / d.as_secs_f64() / 1e6);
                    // ... and a balloon cycle over a quarter.
                    lazy.set_balloon(granule, None)?;
                    let i = lazy.inflate(q, q)?;
                    let d = lazy.deflate(q, q, true)?;
                    s.balloon[1].push((i + d).as_secs_f64());
                }
            }
        }
    }

    // numapin's populate step against the raw kernel limit, in adjacent pairs. Its own loop
    // with more repetitions than the others: the two are close, so the ratio needs them.
    let preps = if a.quick { 7 } else { 15 };
    say(&format!("populate_vs_limit: {preps} interleaved pairs"));
    for rep in 0..=preps {
        let mut sides = [0, 1];
        if rep % 2 == 1 {
            sides.reverse();
        }
        for side in sides {
            let v = if side == 0 {
                reserve(size, PageSize::Huge2M, threads)?
                    .report()
                    .populate_gib_per_s()
            } else {
                // The raw kernel limit: the same threads, same page size, populate only.
                let l = LazyRegion::new(size, PageSize::Huge2M, Sharing::Private)?;
                gibps(size, measure::populate_limit(&l, threads)?)
            };
            // Pair 0 is a warm-up.
            if rep > 0 {
                s.populate[side].push(v);
            }
        }
    }

    let mut rows = vec![
        Row {
            metric: "time_to_ready".into(),
            numapin: median(&s.ttr[0]),
            baseline: median(&s.ttr[1]),
            unit: "s",
            ratio: paired(&s.ttr[0], &s.ttr[1], true),
            goal: Some(3.0),
            note: format!("numapin: reserve {} in 2M pages ({threads} threads: map, bind, populate, verify); baseline: lazy 4K mmap + one write per page by {threads} threads", format_bytes(size)),
        },
        Row {
            metric: "first_touch_p99".into(),
            numapin: median(&s.p99[0]),
            baseline: median(&s.p99[1]),
            unit: "ns",
            ratio: paired(&s.p99[0], &s.p99[1], true),
            goal: Some(10.0),
            note: format!("p99 latency of one write to each of {sample_pages} random 4K pages: numapin after ready, baseline on first touch (each sample includes the clock's own cost, {} ns here, not subtracted)", machine["clock_overhead_ns"]),
        },
        Row {
            metric: "access_floor_p99".into(),
            numapin: median(&s.p99[0]),
            baseline: median(&s.floor),
            unit: "ns",
            ratio: paired(&s.p99[0], &s.floor, true),
            goal: None,
            note: "numapin's p99 after ready (first_touch_p99) vs a second pass over the same pages: a ratio near 1 means no first-touch cost is left, and first_touch_p99 is then bounded by this machine's fault cost over its memory-access floor".into(),
        },
        Row {
            metric: "random_access".into(),
            numapin: median(&s.random[0]),
            baseline: median(&s.random[1]),
            unit: "M reads/s",
            ratio: paired(&s.random[0], &s.random[1], false),
            goal: Some(1.15),
            note: format!("{steps} dependent random byte reads over {}: 2M pinned vs 4K lazy (already touched)", format_bytes(size)),
        },
        Row {
            metric: "populate_vs_limit".into(),
            numapin: median(&s.populate[0]),
            baseline: median(&s.populate[1]),
            unit: "GiB/s",
            ratio: paired(&s.populate[0], &s.populate[1], false),
            goal: Some(0.9),
            note: format!("numapin's populate step vs the raw kernel limit: {threads} pre-started threads, MADV_POPULATE_WRITE on one slice each of a plain 2M hugetlb mapping"),
        },
        Row {
            metric: "balloon_cycle".into(),
            numapin: median(&s.balloon[0]),
            baseline: median(&s.balloon[1]),
            unit: "s",
            ratio: paired(&s.balloon[0], &s.balloon[1], true),
            goal: None,
            note: format!("baseline: inflate {} (a quarter, MADV_DONTNEED, 2 MiB granule) + deflate + refault; numapin has no balloon cost: its figure is the guest's own touch of the same quarter, which both pay", format_bytes(q as u64)),
        },
    ];

    // populate_gibps per page size and thread count (informational).
    let mut tp = Vec::new();
    let tcounts: Vec<usize> = if threads > 1 {
        vec![1, 2.min(threads)]
    } else {
        vec![1]
    };
    let ireps = if a.quick { 3 } else { 5 };
    let free1g = free(PageSize::Huge1G);
    for page in [
        PageSize::Base4K,
        PageSize::Transparent,
        PageSize::Huge2M,
        PageSize::Huge1G,
    ] {
        let psize = match page {
            PageSize::Base4K | PageSize::Transparent => {
                size.min(if a.quick { 256 * MIB } else { 512 * MIB })
            }
            PageSize::Huge2M => size.min(if a.quick { 512 * MIB } else { GIB }),
            _ => match free1g {
                0 => {
                    say("no free 1G hugepage: populate_gibps_1g rows skipped");
                    continue;
                }
                1 => GIB,
                _ => 2 * GIB,
            },
        };
        if page == PageSize::Transparent
            && matches!(topo.thp, ThpMode::Never | ThpMode::Unsupported)
        {
            say("THP disabled: populate_gibps_thp rows skipped");
            continue;
        }
        for &t in &tcounts {
            let measure_one = || -> Result<[Vec<f64>; 3], numapin::Error> {
                let (mut n, mut l, mut z) = (Vec::new(), Vec::new(), Vec::new());
                // Repetition 0 warms the memory up (on a VM, the host faults it in) and is
                // not counted.
                for rep in 0..=ireps {
                    let mut sides = [0, 1];
                    if rep % 2 == 1 {
                        sides.reverse();
                    }
                    for side in sides {
                        if side == 0 {
                            n.push(reserve(psize, page, t)?.report().populate_gib_per_s());
                        } else {
                            let mut m = LazyRegion::new(psize, page, Sharing::Private)?;
                            l.push(gibps(psize, measure::populate_limit(&m, t)?));
                            z.push(gibps(psize, measure::memset_limit(m.as_mut_slice(), t)));
                        }
                    }
                }
                Ok([n.split_off(1), l.split_off(1), z.split_off(1)])
            };
            let name = page.to_string();
            let [n, l, z] = match measure_one() {
                Ok(v) => v,
                Err(e) => {
                    // Informational rows: the pools are shared, another user may hold pages.
                    say(&format!("populate_gibps_{name}_{t}t skipped: {e}"));
                    continue;
                }
            };
            let row = Row {
                metric: format!("populate_gibps_{name}_{t}t"),
                numapin: median(&n),
                baseline: median(&l),
                unit: "GiB/s",
                ratio: paired(&n, &l, false),
                goal: None,
                note: format!("{} of {name} pages, {t} thread(s); baseline = raw kernel limit; zeroing limit (memset of populated memory) {:.2} GiB/s", format_bytes(psize), median(&z)),
            };
            tp.push((
                format!("{name} {t}t"),
                row.numapin,
                row.baseline,
                median(&z),
            ));
            rows.push(row);
        }
    }

    // QEMU's preallocation, whole process against whole process.
    if let Some(row) = qemu_row(size, threads, if a.quick { 3 } else { 7 })? {
        rows.push(row);
    }
    // Shared reservations: adopting instead of populating, and QEMU started by `numapin run`.
    if let Some(row) = shared_rows::adopt_row(size, threads, reps)? {
        rows.push(row);
    }
    if let Some(row) = shared_rows::qemu_run_row(size, threads, if a.quick { 3 } else { 7 })? {
        rows.push(row);
    }

    // Warm pools (`numapin serve`): time to ready, a failover's restarts, re-zeroing.
    if !a.no_pool {
        rows.extend(pool_rows::pool_rows(
            size,
            threads,
            if a.quick { 3 } else { 5 },
        )?);
    }

    if let Some(dir) = &a.plots {
        plots(dir, size, threads, a.quick, &s, &tp)?;
    }

    let elapsed = started.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    if json {
        let mut m = machine;
        m["bench_seconds"] = serde_json::json!(elapsed);
        let results: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "metric": r.metric, "numapin": finite(r.numapin), "baseline": finite(r.baseline),
                    "unit": r.unit, "ratio": finite(r.ratio), "goal": r.goal, "note": r.note,
                })
            })
            .collect();
        writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "machine": m, "results": results }))?
        )?;
    } else {
        writeln!(
            out,
            "numapin bench: {} on {} CPU(s){}, {threads} thread(s), {reps} interleaved repetitions, medians ({elapsed:.0} s)",
            format_bytes(size),
            machine["cpus"],
            if hypervisor { ", a VM (warmed up first)" } else { "" },
        )?;
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:<10} {:>8} {:>6}",
            "metric", "numapin", "baseline", "unit", "ratio", "goal"
        )?;
        for r in &rows {
            let goal = r.goal.map_or_else(String::new, |g| format!("≥{g}"));
            writeln!(
                out,
                "{:<26} {:>12} {:>12} {:<10} {:>8.2} {:>6}",
                r.metric,
                fmt_num(r.numapin),
                fmt_num(r.baseline),
                r.unit,
                r.ratio,
                goal
            )?;
        }
        writeln!(out, "ratio > 1: numapin better. What each row measures:")?;
        for r in &rows {
            writeln!(out, "  {}: {}", r.metric, r.note)?;
        }
    }
    Ok(())
}

/// The median cost of one timed empty interval (two clock reads): part of every per-page
/// latency sample, on both sides, and not subtracted from them.
fn clock_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    percentile(&v, 0.5)
}

fn finite(x: f64) -> serde_json::Value {
    if x.is_finite() {
        serde_json::json!(x)
    } else {
        serde_json::Value::Null
    }
}

fn fmt_num(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        format!("{x}")
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

/// Finds a program on `PATH`.
fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
}

/// Runs a command to its end with its output discarded; the wall time, or why it failed.
fn time_process(cmd: &mut Command, stdin: &[u8]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        // The monitor reads its `quit` only after QEMU's start-up (and preallocation) is done.
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if out.status.success() {
        Ok(d)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn qemu_row(size: u64, threads: usize, reps: usize) -> Result<Option<Row>, CliError> {
    let Some(qemu) = which("qemu-system-x86_64") else {
        say("qemu-system-x86_64 not installed: qemu_prealloc row skipped");
        return Ok(None);
    };
    let exe = std::env::current_exe()?;
    let mb = size / MIB;
    let numapin_cmd = || {
        let mut c = Command::new(&exe);
        c.args([
            "reserve",
            "--size",
            &format!("{mb}MiB"),
            "--page-size",
            "2m",
            "--threads",
        ])
        .arg(threads.to_string());
        c
    };
    let qemu_cmd = || {
        let mut c = Command::new(&qemu);
        c.args([
            "-machine",
            "none",
            "-nodefaults",
            "-display",
            "none",
            "-monitor",
            "stdio",
            "-S",
            "-object",
        ])
        .arg(format!(
            "memory-backend-memfd,id=m,size={mb}M,hugetlb=on,hugetlbsize=2M,prealloc=on,prealloc-threads={threads}"
        ));
        c
    };
    say(&format!("qemu_prealloc: {reps} interleaved runs of each"));
    let (mut n, mut b) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let mut sides = [0, 1];
        if rep % 2 == 1 {
            sides.reverse();
        }
        for side in sides {
            let r = if side == 0 {
                time_process(&mut numapin_cmd(), b"")
            } else {
                time_process(&mut qemu_cmd(), b"quit\n")
            };
            match r {
                // Run 0 of each is the warm-up (page cache, pool pages on the outer host).
                Ok(d) if rep > 0 => {
                    if side == 0 {
                        n.push(d.as_secs_f64())
                    } else {
                        b.push(d.as_secs_f64())
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    say(&format!(
                        "qemu_prealloc row skipped: {} failed: {e}",
                        if side == 0 { "numapin reserve" } else { "qemu" }
                    ));
                    return Ok(None);
                }
            }
        }
    }
    Ok(Some(Row {
        metric: "qemu_prealloc".into(),
        numapin: median(&n),
        baseline: median(&b),
        unit: "s",
        ratio: paired(&n, &b, true),
        goal: Some(1.0),
        note: format!("whole process: `numapin reserve --size {mb}MiB --page-size 2m --threads {threads}` vs `qemu-system-x86_64 -machine none -object memory-backend-memfd,size={mb}M,hugetlb=on,hugetlbsize=2M,prealloc=on,prealloc-threads={threads} -S` quit from its monitor"),
    }))
}

fn plots(
    dir: &std::path::Path,
    size: u64,
    threads: usize,
    quick: bool,
    s: &Samples,
    tp: &[(String, f64, f64, f64)],
) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    // Time to ready against size: a sweep of smaller sizes, then the main figure.
    let reps = if quick { 1 } else { 3 };
    let mut pts: [Vec<(f64, f64)>; 2] = Default::default();
    let mut sz = (size / 8).next_multiple_of(2 * MIB);
    say("plots: time to ready against size");
    while sz < size {
        let (mut n, mut b) = (Vec::new(), Vec::new());
        for _ in 0..reps {
            let t = Instant::now();
            drop(reserve(sz, PageSize::Huge2M, threads)?);
            n.push(t.elapsed().as_secs_f64());
            let t = Instant::now();
            let mut l = LazyRegion::new(sz, PageSize::Base4K, Sharing::Private)?;
            l.touch_parallel(threads);
            b.push(t.elapsed().as_secs_f64());
        }
        pts[0].push((sz as f64 / GIB as f64, median(&n)));
        pts[1].push((sz as f64 / GIB as f64, median(&b)));
        sz *= 2;
    }
    pts[0].push((size as f64 / GIB as f64, median(&s.ttr[0])));
    pts[1].push((size as f64 / GIB as f64, median(&s.ttr[1])));
    let ttr = svg::lines(
        "Time to ready (all memory backed)",
        "guest size (GiB)",
        "seconds",
        &[
            ("numapin 2M reserve", "#1f77b4", pts[0].clone()),
            ("lazy 4K + touch", "#d62728", pts[1].clone()),
        ],
        false,
    );
    std::fs::write(dir.join("time_to_ready.svg"), ttr)?;

    let cdf = |lat: &[u64]| -> Vec<(f64, f64)> {
        let mut v = lat.to_vec();
        v.sort_unstable();
        let n = v.len().max(1) as f64;
        let step = (v.len() / 400).max(1);
        let mut out: Vec<(f64, f64)> = v
            .iter()
            .enumerate()
            .step_by(step)
            .map(|(i, &x)| ((x.max(1)) as f64, (i + 1) as f64 / n))
            .collect();
        if let Some(&last) = v.last() {
            out.push((last.max(1) as f64, 1.0));
        }
        out
    };
    let lat = svg::lines(
        "Per-page write latency (CDF)",
        "latency (ns, log scale)",
        "fraction of pages",
        &[
            ("numapin (ready)", "#1f77b4", cdf(&s.lat_last[0])),
            ("lazy 4K first touch", "#d62728", cdf(&s.lat_last[1])),
        ],
        true,
    );
    std::fs::write(dir.join("latency_cdf.svg"), lat)?;

    let groups: Vec<(String, Vec<(&str, f64)>)> = tp
        .iter()
        .map(|(name, n, l, z)| {
            (
                name.clone(),
                vec![("numapin", *n), ("kernel limit", *l), ("zeroing limit", *z)],
            )
        })
        .collect();
    let bars = svg::bars(
        "Populate throughput per page size and threads",
        "GiB/s",
        &groups,
        &["#1f77b4", "#ff7f0e", "#7f7f7f"],
    );
    std::fs::write(dir.join("populate_throughput.svg"), bars)?;
    say(&format!("plots written to {}", dir.display()));
    Ok(())
}
