//! `numapin plan`: parse the arguments, read the snapshots (files or Prometheus), call
//! [`numapin::plan::plan`], render the report.
//!
//! Exit codes: 0 every scenario guaranteed; 3 some scenario impossible; 4 none impossible but
//! some not proven (or not evaluated); 1 an error (unreadable or inconsistent snapshot);
//! 2 bad arguments.

use std::io::Write;
use std::process::ExitCode;

use numapin::format_bytes;
use numapin::plan::failover::Method;
use numapin::plan::report::{NamedOutcome, PlanReport};
use numapin::plan::{class_name, Budget, Fleet, PlanOptions, Verdict};

use crate::{export, CliError};

/// Exit code when some scenario is proven impossible.
pub const EXIT_IMPOSSIBLE: u8 = 3;
/// Exit code when no scenario is impossible but some is not proven.
pub const EXIT_NOT_PROVEN: u8 = 4;

/// Output formats of `numapin plan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables.
    Text,
    /// The report as one JSON object.
    Json,
    /// OpenStack Placement inventories per host and NUMA node, `reserved` = hold-back
    /// (implies --holdback).
    Placement,
    /// `numapin_failover_holdback_bytes` in Prometheus text exposition (implies --holdback).
    Prometheus,
}

/// Arguments of `numapin plan`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 guaranteed, 3 impossible, 4 not proven, 1 error, 2 usage.\n\
Produce each input with `numapin status --json > HOST.json` on the host, or read them all \
from Prometheus with --prometheus URL."
)]
pub struct Args {
    /// One `numapin status --json` snapshot per host.
    #[arg(value_name = "SNAPSHOT.json", required_unless_present = "prometheus")]
    snapshots: Vec<std::path::PathBuf>,
    /// Rebuild every host's snapshot from the `numapin_*` metrics in this Prometheus server
    /// (e.g. http://prometheus:9090) instead of reading files.
    #[arg(long, value_name = "URL", conflicts_with = "snapshots")]
    prometheus: Option<String>,
    /// With --prometheus: a PromQL label selector the series must match.
    #[arg(long, value_name = "{LABEL=\"VALUE\",...}", requires = "prometheus")]
    selector: Option<String>,
    /// Hosts failing together (N+K): every set of K hosts is a scenario.
    #[arg(long, short = 'k', default_value_t = 1)]
    failures: usize,
    /// Print one JSON object instead of tables (same as --format json).
    #[arg(long, conflicts_with = "format")]
    json: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Print each guaranteed scenario's placement (where every displaced VM goes).
    #[arg(long)]
    witness: bool,
    /// Print a row for every scenario (default: all when there are at most 100, else the
    /// ones not guaranteed and the first 20 guaranteed).
    #[arg(long)]
    all_scenarios: bool,
    /// Work units the exact search may spend per scenario.
    #[arg(long, default_value_t = Budget::default().search_steps)]
    search_budget: u64,
    /// Evaluate at most this many scenarios (the verdict is then at best "not proven").
    #[arg(long, default_value_t = Budget::default().max_scenarios)]
    max_scenarios: u64,
    /// Also report the largest VM of this page-size class (4K, 2M, 1G) admissible now while
    /// keeping N+K.
    #[arg(long, value_name = "CLASS", value_parser = parse_class)]
    headroom: Option<u64>,
    /// With --headroom and --place: the new VM may spread over a host's nodes (default: it
    /// must sit on one node).
    #[arg(long)]
    multi_node: bool,
    /// Also list VMs whose guest-used peak is at most this share of their allocation
    /// (0.5 = half), with the memory right-sizing would free.
    #[arg(long, value_name = "RATIO", num_args = 0..=1, default_missing_value = "0.5", value_parser = parse_ratio)]
    rightsize: Option<f64>,
    /// Also compare with VMware HA's slot and percentage admission policies.
    #[arg(long)]
    ha: bool,
    /// Also show where each placement policy (first-fit, best-fit, spread, market) puts a new
    /// VM of this size (`8GiB`, or `8GiB:1G` for a class; default class 2M) and whether N+K
    /// still holds afterwards.
    #[arg(long, value_name = "SIZE[:CLASS]", value_parser = parse_place)]
    place: Option<(u64, u64)>,
    /// Also compute the failover hold-back: per host, node and class, what must stay free so
    /// that N+K stays guaranteed, and what a scheduler may still hand out.
    #[arg(long)]
    holdback: bool,
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1.0 => Ok(r),
        _ => Err(format!("{s:?} is not a share in (0, 1], e.g. 0.5")),
    }
}

fn parse_class(s: &str) -> Result<u64, String> {
    if let Ok(b) = s.parse::<u64>() {
        return Ok(b);
    }
    let p: numapin::PageSize = s.parse().map_err(|e: numapin::ParseError| e.to_string())?;
    p.bytes()
        .map(|b| b as u64)
        .ok_or_else(|| "auto is not a class; use 4K, 2M or 1G".to_string())
}

/// Parses `SIZE[:CLASS]`.
fn parse_place(s: &str) -> Result<(u64, u64), String> {
    let (size, class) = s.split_once(':').unwrap_or((s, "2M"));
    let size = numapin::parse_size(size).map_err(|e| e.to_string())?;
    Ok((size, parse_class(class)?))
}

/// Reads the fleet from files or Prometheus; errors name the file or the series.
fn load(a: &Args) -> Result<Fleet, CliError> {
    let snaps = match &a.prometheus {
        Some(url) => export::snapshots_from_prometheus(url, a.selector.as_deref())?,
        None => numapin::snapshot::read_files(&a.snapshots)?,
    };
    let refs: Vec<(&str, &numapin::snapshot::Snapshot)> =
        snaps.iter().map(|(f, s)| (f.as_str(), s)).collect();
    let fleet = Fleet::from_labelled(&refs)?;
    drop(refs);
    // The process ends soon after planning: freeing 10,000 hosts' snapshots one allocation at
    // a time would only add to its wall time, so leave them to the exit.
    std::mem::forget(snaps);
    Ok(fleet)
}

/// Runs `numapin plan`; the exit code tells the verdict.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    let fleet = load(a)?;
    let format = if a.json { Format::Json } else { a.format };
    let opts = PlanOptions {
        k: a.failures,
        budget: Budget {
            search_steps: a.search_budget,
            max_scenarios: a.max_scenarios,
            ..Budget::default()
        },
        headroom: a.headroom,
        single_node: !a.multi_node,
        rightsize: a.rightsize,
        ha: a.ha,
        place: a.place,
        holdback: a.holdback || matches!(format, Format::Placement | Format::Prometheus),
        details: format == Format::Json || a.witness,
    };
    let report = numapin::plan::plan(&fleet, &opts)?;
    let mut stdout = std::io::stdout().lock();
    match format {
        Format::Json => writeln!(stdout, "{}", serde_json::to_string_pretty(&report)?)?,
        Format::Text => write!(stdout, "{}", text(&report, a.witness, a.all_scenarios))?,
        Format::Placement => {
            let h = report.holdback.as_ref().expect("holdback computed");
            let inv = export::placement_inventories(&fleet, h);
            writeln!(stdout, "{}", serde_json::to_string_pretty(&inv)?)?;
        }
        Format::Prometheus => {
            let h = report.holdback.as_ref().expect("holdback computed");
            write!(stdout, "{}", export::holdback_metrics(&fleet, h))?;
        }
    }
    stdout.flush()?;
    let verdict = report.failover.verdict;
    // As for the snapshots: the exit frees these faster than their destructors would.
    std::mem::forget(report);
    std::mem::forget(fleet);
    Ok(match verdict {
        Verdict::Guaranteed => ExitCode::SUCCESS,
        Verdict::Impossible => ExitCode::from(EXIT_IMPOSSIBLE),
        Verdict::NotProven => ExitCode::from(EXIT_NOT_PROVEN),
    })
}

/// The report as tables.
fn text(r: &PlanReport, witness: bool, all: bool) -> String {
    let mut s = format!(
        "fleet: {} host(s), {} node(s), {} VM(s)\n",
        r.summary.hosts, r.summary.nodes, r.summary.vms
    );
    s += &format!(
        "{:<6} {:>12} {:>12} {:>12}\n",
        "class", "limit", "reserved", "free"
    );
    for c in &r.summary.classes {
        s += &format!(
            "{:<6} {:>12} {:>12} {:>12}\n",
            class_name(c.page_size_bytes),
            format_bytes(c.limit_bytes),
            format_bytes(c.reserved_bytes),
            format_bytes(c.free_bytes)
        );
    }
    s += &failover_text(r, witness, all);
    if let Some(h) = &r.headroom {
        s += &format!(
            "\nheadroom ({} pages, {}): largest VM admissible keeping N+{}: {}{}; nothing above {} fits anywhere now ({} checks)\n",
            class_name(h.page_size_bytes),
            if h.single_node { "one node" } else { "may span nodes" },
            h.k,
            format_bytes(h.admissible_bytes),
            h.target.as_ref().map(|t| format!(" on {t}")).unwrap_or_default(),
            format_bytes(h.upper_bound_bytes),
            h.checks,
        );
    }
    if let Some(rs) = &r.rightsize {
        s += &format!(
            "\nright-sizing (peak <= {:.0}% of allocation, suggest peak + {:.0}% in whole pages): {} VM(s), {} freed; {} VM(s) without a known peak\n",
            rs.ratio * 100.0,
            rs.margin_ppm as f64 / 10_000.0,
            rs.candidates.len(),
            format_bytes(rs.freed_bytes),
            rs.unknown_peak
        );
        if !rs.candidates.is_empty() {
            s += &format!(
                "{:<20} {:<16} {:>11} {:>11} {:>11} {:>11}\n",
                "vm", "host", "allocated", "peak", "suggested", "freed"
            );
        }
        for c in &rs.candidates {
            s += &format!(
                "{:<20} {:<16} {:>11} {:>11} {:>11} {:>11}\n",
                c.vm,
                c.host,
                format_bytes(c.allocated_bytes),
                format_bytes(c.peak_bytes),
                format_bytes(c.suggested_bytes),
                format_bytes(c.freed_bytes)
            );
        }
    }
    if let Some(c) = &r.ha {
        use numapin::plan::ha::Agreement;
        let word = |x: Agreement| match x {
            Agreement::Agrees => "agrees with the exact answer",
            Agreement::TooStrict => "TOO STRICT: refuses a guaranteed fleet",
            Agreement::TooLax => "TOO LAX: accepts a fleet that cannot fail over",
            Agreement::Unknown => "cannot be judged: the exact answer is not proven",
        };
        let yes = |b: bool| if b { "protected" } else { "not protected" };
        s += &format!(
            "\nVMware HA comparison (exact N+{}: {}):\n  slot policy:       {:<14} {} [{}]\n  percentage policy: {:<14} {} [{}]\n",
            c.k,
            c.exact,
            yes(c.slot.protected),
            word(c.slot.agreement),
            c.slot.detail,
            yes(c.percentage.protected),
            word(c.percentage.agreement),
            c.percentage.detail
        );
    }
    if let Some(p) = &r.placement {
        s += &format!(
            "\nplacing a new VM of {} {} ({}):\n",
            format_bytes(p.bytes),
            class_name(p.page_size_bytes),
            if p.single_node {
                "one node"
            } else {
                "may span nodes"
            }
        );
        for row in &p.policies {
            s += &format!(
                "  {:<10} {:<24} N+{} afterwards: {}\n",
                row.policy.name(),
                row.target.as_deref().unwrap_or("(fits nowhere)"),
                r.failover.k,
                row.verdict_after.map_or("-".to_string(), |v| v.to_string())
            );
        }
    }
    if let Some(h) = &r.holdback {
        s += &format!(
            "\nfailover hold-back (N+{}; what a new VM may still take keeping it):\n",
            h.k
        );
        s += &format!(
            "{:<24} {:<6} {:>12} {:>12} {:>12}\n",
            "node", "class", "free", "hold-back", "available"
        );
        for e in &h.nodes {
            s += &format!(
                "{:<24} {:<6} {:>12} {:>12} {:>12}\n",
                format!("{}/node{}", e.host, e.node),
                class_name(e.page_size_bytes),
                format_bytes(e.free_bytes),
                format_bytes(e.holdback_bytes),
                format_bytes(e.available_bytes)
            );
        }
    }
    s
}

fn failover_text(r: &PlanReport, witness: bool, all: bool) -> String {
    let f = &r.failover;
    let mut s = format!("\nN+{} failover: {} scenario(s)\n", f.k, f.total_scenarios);
    s += &format!(
        "{:<24} {:>4} {:>12}  {:<11} {}\n",
        "failed", "VMs", "demand", "outcome", "how"
    );
    let all = all || f.scenarios.len() <= 100;
    let mut shown_ok = 0usize;
    let mut hidden = 0usize;
    for sc in &f.scenarios {
        if !all && sc.outcome.verdict() == Verdict::Guaranteed {
            shown_ok += 1;
            if shown_ok > 20 {
                hidden += 1;
                continue;
            }
        }
        let failed = if sc.failed.is_empty() {
            "(none)".to_string()
        } else {
            sc.failed.join(",")
        };
        let how = match &sc.outcome {
            NamedOutcome::Guaranteed { .. } if sc.displaced_vms == 0 => {
                "nothing to move".to_string()
            }
            NamedOutcome::Guaranteed { method, .. } => match method {
                Method::Heuristic => "placed by first/best-fit decreasing".to_string(),
                Method::Exact => "placed by exact search".to_string(),
                Method::Composed => "placed by composing single-host placements".to_string(),
            },
            NamedOutcome::Impossible { explanation, .. } => explanation.clone(),
            NamedOutcome::NotProven { search_steps } => format!(
                "heuristics failed, exact search stopped after {search_steps} steps (raise --search-budget)"
            ),
        };
        s += &format!(
            "{:<24} {:>4} {:>12}  {:<11} {}\n",
            failed,
            sc.displaced_vms,
            format_bytes(sc.demand_bytes),
            sc.outcome.verdict().to_string(),
            how
        );
        if let (true, NamedOutcome::Guaranteed { moves, .. }) = (witness, &sc.outcome) {
            for m in moves {
                let parts: Vec<String> = m
                    .parts
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} on {}/node{}",
                            format_bytes(p.bytes),
                            class_name(p.page_size_bytes),
                            p.host,
                            p.node
                        )
                    })
                    .collect();
                s += &format!("    {} -> {}\n", m.vm, parts.join(", "));
            }
        }
    }
    let hidden = hidden as u64 + f.unlisted_guaranteed;
    if hidden > 0 {
        s += &format!(
            "({hidden} more guaranteed scenario(s) not shown; --all-scenarios shows them)\n"
        );
    }
    let count = |v: Verdict| {
        let listed = f
            .scenarios
            .iter()
            .filter(|s| s.outcome.verdict() == v)
            .count() as u64;
        listed
            + if v == Verdict::Guaranteed {
                f.unlisted_guaranteed
            } else {
                0
            }
    };
    s += &format!(
        "verdict: N+{} {} ({} guaranteed, {} impossible, {} not proven",
        f.k,
        f.verdict,
        count(Verdict::Guaranteed),
        count(Verdict::Impossible),
        count(Verdict::NotProven)
    );
    let skipped = f.total_scenarios - f.evaluated_scenarios;
    if skipped > 0 {
        s += &format!(", {skipped} not evaluated: raise --max-scenarios");
    }
    s += ")\n";
    s
}
