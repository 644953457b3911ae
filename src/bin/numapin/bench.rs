//! `numapin bench`: parses its arguments, runs the protocols of [`numapin::bench`] (a
//! reservation against the ballooning baseline, side by side in one run) and renders the
//! report as a table, JSON or SVG plots. `docs/benchmarks.md` says what each row measures.

use std::io::Write;
use std::path::PathBuf;

use numapin::bench::{Config, Report};
use numapin::format_bytes;

use crate::CliError;

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

/// Progress goes to stderr, so that `--json` keeps stdout to the one object.
fn say(msg: &str) {
    eprintln!("bench: {msg}");
}

pub fn run(a: &Args) -> Result<(), CliError> {
    if let Some(sock) = &a.adopt_child {
        return Ok(numapin::bench::adopt_child(sock)?);
    }
    let pool_reps = a.reps.unwrap_or(if a.quick { 3 } else { 5 }).max(1);
    let pool_threads = a
        .threads
        .unwrap_or_else(|| numapin::process::affinity().map_or(1, |c| c.len().max(1)));
    if a.only_pool {
        let rows = numapin::bench::pool_rows(
            &std::env::current_exe()?,
            a.size,
            pool_threads,
            pool_reps,
            &mut say,
        )?;
        let mut out = std::io::stdout().lock();
        if a.json {
            let results: Vec<serde_json::Value> = rows
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "metric": r.metric, "numapin": finite(r.numapin), "baseline": finite(r.baseline),
                        "unit": r.unit, "ratio": finite(r.ratio), "goal": r.goal, "note": r.note,
                    })
                })
                .collect();
            writeln!(out, "{}", serde_json::to_string_pretty(&results)?)?;
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
    let cfg = Config {
        size: a.size,
        quick: a.quick,
        threads: a.threads,
        reps: a.reps,
        sweep: a.plots.is_some(),
        numapin_exe: std::env::current_exe().ok(),
    };
    if let Err(e) = numapin::bench::check(&cfg) {
        if a.size >= 8 << 20 {
            eprintln!(
                "numapin bench needs {} in 2 MiB hugepages for its main rows; pass a smaller --size (e.g. --size 256MiB) or grow the pool",
                format_bytes(a.size)
            );
        }
        return Err(e.into());
    }
    let mut report = numapin::bench::run(&cfg, &mut say)?;
    // Warm pools (`numapin serve`): time to ready, a failover's restarts, re-zeroing.
    if !a.no_pool {
        report.rows.extend(numapin::bench::pool_rows(
            &std::env::current_exe()?,
            a.size,
            pool_threads,
            pool_reps,
            &mut say,
        )?);
    }
    if let Some(dir) = &a.plots {
        plots(dir, &report)?;
    }
    let mut out = std::io::stdout().lock();
    if a.json {
        let mut m = serde_json::to_value(&report.machine)?;
        m["bench_seconds"] = serde_json::json!(report.seconds);
        let results: Vec<serde_json::Value> = report
            .rows
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
        let m = &report.machine;
        writeln!(
            out,
            "numapin bench: {} on {} CPU(s){}, {} thread(s), {} interleaved repetitions, medians ({:.0} s)",
            format_bytes(m.size_bytes),
            m.cpus,
            if m.hypervisor { ", a VM (warmed up first)" } else { "" },
            m.threads,
            m.reps,
            report.seconds,
        )?;
        writeln!(
            out,
            "{:<26} {:>12} {:>12} {:<10} {:>8} {:>6}",
            "metric", "numapin", "baseline", "unit", "ratio", "goal"
        )?;
        for r in &report.rows {
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
        for r in &report.rows {
            writeln!(out, "  {}: {}", r.metric, r.note)?;
        }
    }
    Ok(())
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

fn plots(dir: &std::path::Path, report: &Report) -> Result<(), CliError> {
    std::fs::create_dir_all(dir)?;
    let p = &report.plots;
    let ttr = svg::lines(
        "Time to ready (all memory backed)",
        "guest size (GiB)",
        "seconds",
        &[
            ("numapin 2M reserve", "#1f77b4", p.time_to_ready[0].clone()),
            ("lazy 4K + touch", "#d62728", p.time_to_ready[1].clone()),
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
            ("numapin (ready)", "#1f77b4", cdf(&p.latencies[0])),
            ("lazy 4K first touch", "#d62728", cdf(&p.latencies[1])),
        ],
        true,
    );
    std::fs::write(dir.join("latency_cdf.svg"), lat)?;

    let groups: Vec<(String, Vec<(&str, f64)>)> = p
        .throughput
        .iter()
        .map(|t| {
            (
                t.label.clone(),
                vec![
                    ("numapin", t.numapin),
                    ("kernel limit", t.kernel_limit),
                    ("zeroing limit", t.zeroing_limit),
                ],
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
