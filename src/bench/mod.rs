//! The protocols of `numapin bench`: a reservation against the ballooning baseline
//! ([`crate::baseline`]), side by side in one run.
//!
//! Every measurement is repeated with numapin and the baseline interleaved (numapin, then the
//! baseline, then the other way round on the next repetition, so drift in the machine's speed
//! hits both), and each [`Row`] carries the medians and the median of the per-repetition
//! ratios. A ratio > 1 always means numapin is better. `docs/benchmarks.md` says what each row
//! measures and why. The `numapin bench` command only parses its arguments, calls [`run`] and
//! renders the [`Report`] (table, JSON, SVG plots).

#[cfg(feature = "pool")]
mod pool;
mod qemu;
mod shared;

#[cfg(feature = "pool")]
pub use pool::pool_rows;

pub use shared::adopt_child;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::baseline::{LazyRegion, Sharing};
use crate::error::{Error, Result};
use crate::measure::{self, median, percentile};
use crate::units::{format_bytes, PageSize};
use crate::{Reservation, ThpMode, Topology};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Config {
    /// Guest size for the side-by-side rows, reserved in 2 MiB pages.
    pub size: u64,
    /// Fewer repetitions and smaller samples.
    pub quick: bool,
    /// Threads for every populate and touch (`None`: every CPU this process may use).
    pub threads: Option<usize>,
    /// Repetitions of each side-by-side measurement (`None`: 9, 3 when quick).
    pub reps: Option<usize>,
    /// Also sweep the size for the time-to-ready plot ([`PlotData::time_to_ready`]).
    pub sweep: bool,
    /// The `numapin` executable, for the rows that run it as a process (`qemu_prealloc`,
    /// `adopt_vs_populate`, `qemu_on_numapin`; `None`: they are skipped).
    pub numapin_exe: Option<PathBuf>,
}

impl Config {
    /// The defaults of `numapin bench` for a guest of `size` bytes.
    pub fn new(size: u64) -> Config {
        Config {
            size,
            quick: false,
            threads: None,
            reps: None,
            sweep: false,
            numapin_exe: None,
        }
    }
}

/// One row of the report: numapin against its baseline.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Row {
    /// The metric's name (`time_to_ready`, `populate_gibps_2m_1t`, ...).
    pub metric: String,
    /// numapin's median.
    pub numapin: f64,
    /// The baseline's median.
    pub baseline: f64,
    /// The unit of both.
    pub unit: &'static str,
    /// Median of the per-repetition ratios; > 1: numapin better.
    pub ratio: f64,
    /// The goal for the ratio, if one is set.
    pub goal: Option<f64>,
    /// What the baseline is, and anything unusual.
    pub note: String,
}

impl Row {
    /// A row from samples taken side by side, one per repetition on each side: the medians and
    /// the median of the per-repetition ratios (`lower_is_better` for times and latencies, so
    /// that > 1 always means numapin better).
    fn paired(
        metric: &str,
        unit: &'static str,
        numapin: &[f64],
        baseline: &[f64],
        lower_is_better: bool,
        goal: Option<f64>,
        note: String,
    ) -> Row {
        Row {
            metric: metric.into(),
            numapin: median(numapin),
            baseline: median(baseline),
            unit,
            ratio: paired(numapin, baseline, lower_is_better),
            goal,
            note,
        }
    }
}

/// The machine the figures were taken on.
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Machine {
    /// `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    /// CPUs this process may use.
    pub cpus: usize,
    /// Online NUMA nodes.
    pub numa_nodes: usize,
    /// Whether it is a VM (`hypervisor` flag).
    pub hypervisor: bool,
    /// Kernel release.
    pub kernel: String,
    /// Memory of all nodes.
    pub mem_total_bytes: u64,
    /// THP mode, lower case.
    pub thp: String,
    /// Free 2 MiB pages before the run.
    pub free_hugepages_2m: u64,
    /// Free 1 GiB pages before the run.
    pub free_hugepages_1g: u64,
    /// `/proc/loadavg` before the run.
    pub loadavg: String,
    /// numapin's version.
    pub numapin_version: &'static str,
    /// The median cost of one timed empty interval, in every latency sample.
    pub clock_overhead_ns: u64,
    /// Guest size of the side-by-side rows.
    pub size_bytes: u64,
    /// Threads.
    pub threads: usize,
    /// Repetitions.
    pub reps: usize,
    /// Whether the quick variant ran.
    pub quick: bool,
    /// Seconds since the epoch at the start.
    pub unix_time: u64,
}

/// Populate throughput of one page size and thread count: numapin, the kernel's limit and the
/// zeroing limit, in GiB/s.
#[derive(Debug, Clone, PartialEq)]
pub struct Throughput {
    /// `2m 1t` and so on.
    pub label: String,
    /// numapin's populate step.
    pub numapin: f64,
    /// The raw kernel limit.
    pub kernel_limit: f64,
    /// memset of populated memory.
    pub zeroing_limit: f64,
}

/// What the plots show.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlotData {
    /// Time to ready against size (GiB, seconds): numapin, then the baseline. Only the main
    /// size unless [`Config::sweep`].
    pub time_to_ready: [Vec<(f64, f64)>; 2],
    /// The last repetition's per-page write latencies (ns): numapin after ready, the baseline
    /// on first touch.
    pub latencies: [Vec<u64>; 2],
    /// Populate throughput per page size and threads.
    pub throughput: Vec<Throughput>,
}

/// The outcome of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// The rows, in the order measured.
    pub rows: Vec<Row>,
    /// The plots' data.
    pub plots: PlotData,
    /// Wall time of the run.
    pub seconds: f64,
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

fn reserve(size: u64, page: PageSize, threads: usize) -> Result<Reservation> {
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

/// Checks that the main rows can run: at least 8 MiB, and the 2 MiB pool can hold `size`.
///
/// # Errors
/// [`Error::InvalidSize`] below 8 MiB; the preflight's error otherwise (e.g.
/// [`Error::HugepagesShort`]).
pub fn check(cfg: &Config) -> Result<()> {
    if cfg.size < 8 * MIB {
        return Err(Error::InvalidSize {
            size: cfg.size,
            reason: "numapin bench needs at least 8 MiB (its balloon takes a quarter, in 2 MiB granules); pass --size 8MiB or more".into(),
        });
    }
    Reservation::builder(cfg.size)
        .page_size(PageSize::Huge2M)
        .threads(threads_of(cfg))
        .preflight()
        .map(drop)
}

fn threads_of(cfg: &Config) -> usize {
    cfg.threads
        .unwrap_or_else(|| crate::process::affinity().map_or(1, |c| c.len().max(1)))
}

/// Runs every protocol; `progress` gets one line per step (for stderr).
///
/// # Errors
/// [`check`]'s errors, and any reservation or baseline error of the main rows (the
/// informational rows are skipped, with a progress line, when their pages are not free).
pub fn run(cfg: &Config, progress: &mut dyn FnMut(&str)) -> Result<Report> {
    check(cfg)?;
    let started = Instant::now();
    let threads = threads_of(cfg);
    let reps = cfg.reps.unwrap_or(if cfg.quick { 3 } else { 9 }).max(1);
    let size = cfg.size;
    let quick = cfg.quick;
    let topo = Topology::from_sysfs()?;
    let machine = machine(&topo, cfg, threads, reps);
    let free = |p: PageSize| -> u64 {
        topo.nodes
            .iter()
            .filter_map(|n| n.pool(p))
            .map(|p| p.free)
            .sum()
    };
    if machine.hypervisor {
        progress("this machine is a VM (`hypervisor` in /proc/cpuinfo): its host faults guest memory in lazily, so the first pass over memory is slow; warming up first");
    }

    // Warm-up: fault the pool pages and base memory in on the outer host, and run every code
    // path once. Nothing here is counted.
    progress(&format!(
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

    let sample_pages = if quick { 8192 } else { 32768 };
    let steps = if quick { 1 << 20 } else { 1 << 22 };
    // A quarter, in whole 2 MiB granules (size >= 8 MiB, so at least one).
    let q = size as usize / 4 / (2 << 20) * (2 << 20);
    let granule = 2 << 20;
    let mut s = Samples::default();
    progress(&format!(
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
                    s.balloon[0]
                        .push(measure::touch_pages(r.as_mut_slice(), q, 2 * q).as_secs_f64());
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
    let preps = if quick { 7 } else { 15 };
    progress(&format!("populate_vs_limit: {preps} interleaved pairs"));
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

    let mut rows = main_rows(&s, size, threads, sample_pages, steps, q, &machine);
    let mut plots = PlotData::default();
    throughput_rows(
        &mut rows,
        &mut plots,
        size,
        threads,
        quick,
        free(PageSize::Huge1G),
        topo.thp,
        progress,
    );
    if let Some(exe) = &cfg.numapin_exe {
        let qreps = if quick { 3 } else { 7 };
        rows.extend(qemu::prealloc_row(exe, size, threads, qreps, progress));
        // Shared reservations: adopting instead of populating, and QEMU started by
        // `numapin run`.
        rows.extend(shared::adopt_row(exe, size, threads, reps, progress)?);
        rows.extend(shared::qemu_run_row(exe, size, threads, qreps, progress));
    } else {
        progress("no numapin executable given: qemu_prealloc, adopt_vs_populate and qemu_on_numapin rows skipped");
    }

    if cfg.sweep {
        plots.time_to_ready = ttr_sweep(size, threads, quick, progress)?;
    }
    plots.time_to_ready[0].push((size as f64 / GIB as f64, median(&s.ttr[0])));
    plots.time_to_ready[1].push((size as f64 / GIB as f64, median(&s.ttr[1])));
    plots.latencies = s.lat_last;
    Ok(Report {
        machine,
        rows,
        plots,
        seconds: started.elapsed().as_secs_f64(),
    })
}

fn machine(topo: &Topology, cfg: &Config, threads: usize, reps: usize) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let free = |p: PageSize| -> u64 {
        topo.nodes
            .iter()
            .filter_map(|n| n.pool(p))
            .map(|p| p.free)
            .sum()
    };
    Machine {
        cpu_model: cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .and_then(|v| v.split_once(':'))
            .map_or_else(String::new, |(_, v)| v.trim().to_string()),
        cpus: crate::process::affinity().map_or(0, |c| c.len()),
        numa_nodes: topo.nodes.len(),
        hypervisor: cpuinfo
            .lines()
            .any(|l| l.starts_with("flags") && l.split_whitespace().any(|f| f == "hypervisor")),
        kernel: crate::process::kernel_release(),
        mem_total_bytes: topo.nodes.iter().map(|n| n.mem_total_bytes).sum(),
        thp: format!("{:?}", topo.thp).to_lowercase(),
        free_hugepages_2m: free(PageSize::Huge2M),
        free_hugepages_1g: free(PageSize::Huge1G),
        loadavg: std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .trim()
            .to_string(),
        numapin_version: env!("CARGO_PKG_VERSION"),
        clock_overhead_ns: measure::clock_overhead_ns(),
        size_bytes: cfg.size,
        threads,
        reps,
        quick: cfg.quick,
        unix_time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    }
}

fn main_rows(
    s: &Samples,
    size: u64,
    threads: usize,
    sample_pages: usize,
    steps: usize,
    q: usize,
    machine: &Machine,
) -> Vec<Row> {
    vec![
        Row::paired(
            "time_to_ready",
            "s",
            &s.ttr[0],
            &s.ttr[1],
            true,
            Some(3.0),
            format!("numapin: reserve {} in 2M pages ({threads} threads: map, bind, populate, verify); baseline: lazy 4K mmap + one write per page by {threads} threads", format_bytes(size)),
        ),
        Row::paired(
            "first_touch_p99",
            "ns",
            &s.p99[0],
            &s.p99[1],
            true,
            Some(10.0),
            format!("p99 latency of one write to each of {sample_pages} random 4K pages: numapin after ready, baseline on first touch (each sample includes the clock's own cost, {} ns here, not subtracted)", machine.clock_overhead_ns),
        ),
        Row::paired(
            "access_floor_p99",
            "ns",
            &s.p99[0],
            &s.floor,
            true,
            None,
            "numapin's p99 after ready (first_touch_p99) vs a second pass over the same pages: a ratio near 1 means no first-touch cost is left, and first_touch_p99 is then bounded by this machine's fault cost over its memory-access floor".into(),
        ),
        Row::paired(
            "random_access",
            "M reads/s",
            &s.random[0],
            &s.random[1],
            false,
            Some(1.15),
            format!("{steps} dependent random byte reads over {}: 2M pinned vs 4K lazy (already touched)", format_bytes(size)),
        ),
        Row::paired(
            "populate_vs_limit",
            "GiB/s",
            &s.populate[0],
            &s.populate[1],
            false,
            Some(0.9),
            format!("numapin's populate step vs the raw kernel limit: {threads} pre-started threads, MADV_POPULATE_WRITE on one slice each of a plain 2M hugetlb mapping"),
        ),
        Row::paired(
            "balloon_cycle",
            "s",
            &s.balloon[0],
            &s.balloon[1],
            true,
            None,
            format!("baseline: inflate {} (a quarter, MADV_DONTNEED, 2 MiB granule) + deflate + refault; numapin has no balloon cost: its figure is the guest's own touch of the same quarter, which both pay", format_bytes(q as u64)),
        ),
    ]
}

/// populate_gibps per page size and thread count (informational rows).
#[allow(clippy::too_many_arguments)]
fn throughput_rows(
    rows: &mut Vec<Row>,
    plots: &mut PlotData,
    size: u64,
    threads: usize,
    quick: bool,
    free1g: u64,
    thp: ThpMode,
    progress: &mut dyn FnMut(&str),
) {
    let tcounts: Vec<usize> = if threads > 1 {
        vec![1, 2.min(threads)]
    } else {
        vec![1]
    };
    let ireps = if quick { 3 } else { 5 };
    for page in [
        PageSize::Base4K,
        PageSize::Transparent,
        PageSize::Huge2M,
        PageSize::Huge1G,
    ] {
        let psize = match page {
            PageSize::Base4K | PageSize::Transparent => {
                size.min(if quick { 256 * MIB } else { 512 * MIB })
            }
            PageSize::Huge2M => size.min(if quick { 512 * MIB } else { GIB }),
            _ => match free1g {
                0 => {
                    progress("no free 1G hugepage: populate_gibps_1g rows skipped");
                    continue;
                }
                1 => GIB,
                _ => 2 * GIB,
            },
        };
        if page == PageSize::Transparent && matches!(thp, ThpMode::Never | ThpMode::Unsupported) {
            progress("THP disabled: populate_gibps_thp rows skipped");
            continue;
        }
        for &t in &tcounts {
            let measure_one = || -> Result<[Vec<f64>; 3]> {
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
                    progress(&format!("populate_gibps_{name}_{t}t skipped: {e}"));
                    continue;
                }
            };
            let row = Row::paired(
                &format!("populate_gibps_{name}_{t}t"),
                "GiB/s",
                &n,
                &l,
                false,
                None,
                format!("{} of {name} pages, {t} thread(s); baseline = raw kernel limit; zeroing limit (memset of populated memory) {:.2} GiB/s", format_bytes(psize), median(&z)),
            );
            plots.throughput.push(Throughput {
                label: format!("{name} {t}t"),
                numapin: row.numapin,
                kernel_limit: row.baseline,
                zeroing_limit: median(&z),
            });
            rows.push(row);
        }
    }
}

/// Time to ready against size: sizes from an eighth of `size` doubling up to below it.
fn ttr_sweep(
    size: u64,
    threads: usize,
    quick: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<[Vec<(f64, f64)>; 2]> {
    let reps = if quick { 1 } else { 3 };
    let mut pts: [Vec<(f64, f64)>; 2] = Default::default();
    let mut sz = (size / 8).next_multiple_of(2 * MIB);
    progress("plots: time to ready against size");
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
    Ok(pts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_pair_repetitions_and_point_the_same_way() {
        // Lower is better: baseline / numapin per pair, then the median.
        assert_eq!(paired(&[1.0, 2.0, 4.0], &[3.0, 2.0, 8.0], true), 2.0);
        // Higher is better: numapin / baseline.
        assert_eq!(paired(&[3.0, 2.0, 8.0], &[1.0, 2.0, 4.0], false), 2.0);
        assert!((gibps(1 << 30, Duration::from_millis(500)) - 2.0).abs() < 1e-9);
    }

    #[test]
    fn too_small_a_size_is_refused_before_anything_runs() {
        let mut cfg = Config::new(4 << 20);
        cfg.quick = true;
        assert!(matches!(
            run(&cfg, &mut |_| {}),
            Err(Error::InvalidSize { size, .. }) if size == 4 << 20
        ));
    }
}
