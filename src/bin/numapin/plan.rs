//! `numapin plan`: N+k failover, headroom, right-sizing, HA and placement over snapshots.
//!
//! Exit codes: 0 every scenario guaranteed; 3 some scenario impossible; 4 none impossible but
//! some not proven (or not evaluated); 1 an error (unreadable or inconsistent snapshot);
//! 2 bad arguments.

use std::io::Write;

use numapin::plan::failover::{self, explain, Budget, FailoverReport, Outcome, Verdict};
use numapin::plan::{class_name, ha, headroom, policy, rightsize, sat_sum, Fleet, Target};
use numapin::snapshot::Snapshot;
use numapin::{format_bytes, Error};
use serde_json::{json, Value};

use crate::CliError;

/// Exit code when some scenario is proven impossible.
pub const EXIT_IMPOSSIBLE: i32 = 3;
/// Exit code when no scenario is impossible but some is not proven.
pub const EXIT_NOT_PROVEN: i32 = 4;

/// Arguments of `numapin plan`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit codes: 0 guaranteed, 3 impossible, 4 not proven, 1 error, 2 usage.\n\
Produce each input with `numapin status --json > HOST.json` on the host."
)]
pub struct Args {
    /// One `numapin status --json` snapshot per host.
    #[arg(required = true, value_name = "SNAPSHOT.json")]
    snapshots: Vec<std::path::PathBuf>,
    /// Hosts failing together (N+K): every set of K hosts is a scenario.
    #[arg(long, short = 'k', default_value_t = 1)]
    failures: usize,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    json: bool,
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
    /// Also report the largest VM of this page-size class (4k, 2m, 1g) admissible now while
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
    /// VM of this size (`8GiB`, or `8GiB:1g` for a class; default class 2m) and whether N+K
    /// still holds afterwards.
    #[arg(long, value_name = "SIZE[:CLASS]")]
    place: Option<String>,
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
    let p: numapin::PageSize = s.parse()?;
    p.bytes()
        .map(|b| b as u64)
        .ok_or_else(|| "auto is not a class; use 4k, 2m or 1g".to_string())
}

/// Reads and checks every snapshot; errors name the file.
fn load(paths: &[std::path::PathBuf]) -> Result<Fleet, Error> {
    let mut snaps = Vec::with_capacity(paths.len());
    for p in paths {
        let file = p.display().to_string();
        let text = std::fs::read_to_string(p).map_err(|e| Error::InvalidSnapshot {
            file: file.clone(),
            field: "(file)".into(),
            what: format!("cannot read it: {e}"),
        })?;
        let s: Snapshot = serde_json::from_str(&text).map_err(|e| Error::InvalidSnapshot {
            file: file.clone(),
            field: format!("line {} column {}", e.line(), e.column()),
            what: e.to_string(),
        })?;
        snaps.push((file, s));
    }
    let refs: Vec<(&str, &Snapshot)> = snaps.iter().map(|(f, s)| (f.as_str(), s)).collect();
    Fleet::from_labelled(&refs)
}

fn node_name(f: &Fleet, n: usize) -> String {
    let node = &f.nodes[n];
    format!("{}/node{}", f.hosts[node.host].name, node.id)
}

fn target_name(f: &Fleet, t: Target) -> String {
    match t {
        Target::Node(n) => node_name(f, n),
        Target::Host(h) => f.hosts[h].name.clone(),
    }
}

fn demand_text(f: &Fleet, d: &[u64]) -> String {
    let parts: Vec<String> = d
        .iter()
        .enumerate()
        .filter(|(_, &b)| b > 0)
        .map(|(c, &b)| format!("{} {}", format_bytes(b), class_name(f.classes[c])))
        .collect();
    if parts.is_empty() {
        "nothing".into()
    } else {
        parts.join(" + ")
    }
}

fn outcome_json(f: &Fleet, o: &Outcome) -> Value {
    match o {
        Outcome::Guaranteed { method, witness } => json!({
            "verdict": Verdict::Guaranteed,
            "method": method,
            "moves": witness.iter().map(|m| json!({
                "vm": f.vms[m.vm].name,
                "parts": m.parts.iter().map(|p| json!({
                    "host": f.hosts[f.nodes[p.node].host].name,
                    "node": f.nodes[p.node].id,
                    "page_size_bytes": f.classes[p.class],
                    "bytes": p.bytes,
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        }),
        Outcome::Impossible { proof } => json!({
            "verdict": Verdict::Impossible,
            "proof": proof,
            "explanation": explain(f, proof),
        }),
        Outcome::NotProven { steps } => json!({
            "verdict": Verdict::NotProven,
            "search_steps": steps,
        }),
    }
}

fn report_json(f: &Fleet, r: &FailoverReport) -> Value {
    json!({
        "k": r.k,
        "verdict": r.verdict,
        "total_scenarios": r.total_scenarios,
        "evaluated_scenarios": r.scenarios.len(),
        "scenarios": r.scenarios.iter().map(|s| {
            let mut o = outcome_json(f, &s.outcome);
            o["failed"] = json!(s.failed.iter().map(|&h| &f.hosts[h].name).collect::<Vec<_>>());
            o["displaced"] = json!(s.displaced.iter().map(|&v| &f.vms[v].name).collect::<Vec<_>>());
            o["demand_bytes"] = json!(s.demand_bytes);
            o["witness_kept"] = json!(s.witness_kept);
            o
        }).collect::<Vec<_>>(),
    })
}

fn summary_text(f: &Fleet) -> String {
    let mut s = format!(
        "fleet: {} host(s), {} node(s), {} VM(s)\n",
        f.hosts.len(),
        f.nodes.len(),
        f.vms.len()
    );
    s += &format!(
        "{:<6} {:>12} {:>12} {:>12}\n",
        "class", "limit", "reserved", "free"
    );
    for (c, &p) in f.classes.iter().enumerate() {
        let limit = sat_sum(f.nodes.iter().map(|n| n.limit[c]));
        let reserved = sat_sum(f.nodes.iter().map(|n| n.reserved[c]));
        let free = sat_sum((0..f.nodes.len()).map(|n| f.free(n, c)));
        s += &format!(
            "{:<6} {:>12} {:>12} {:>12}\n",
            class_name(p),
            format_bytes(limit),
            format_bytes(reserved),
            format_bytes(free)
        );
    }
    s
}

fn report_text(f: &Fleet, r: &FailoverReport, witness: bool, all: bool) -> String {
    let mut s = format!("\nN+{} failover: {} scenario(s)\n", r.k, r.total_scenarios);
    s += &format!(
        "{:<24} {:>4} {:>12}  {:<11} {}\n",
        "failed", "VMs", "demand", "outcome", "how"
    );
    let all = all || r.scenarios.len() <= 100;
    let mut shown_ok = 0usize;
    let mut hidden = 0usize;
    for sc in &r.scenarios {
        if !all && sc.outcome.verdict() == Verdict::Guaranteed {
            shown_ok += 1;
            if shown_ok > 20 {
                hidden += 1;
                continue;
            }
        }
        let failed: Vec<&str> = sc
            .failed
            .iter()
            .map(|&h| f.hosts[h].name.as_str())
            .collect();
        let failed = if failed.is_empty() {
            "(none)".to_string()
        } else {
            failed.join(",")
        };
        let how = match &sc.outcome {
            Outcome::Guaranteed { .. } if sc.displaced.is_empty() => "nothing to move".to_string(),
            Outcome::Guaranteed { method, .. } => match method {
                failover::Method::Heuristic => "placed by first/best-fit decreasing".to_string(),
                failover::Method::Exact => "placed by exact search".to_string(),
            },
            Outcome::Impossible { proof } => explain(f, proof),
            Outcome::NotProven { steps } => format!(
                "heuristics failed, exact search stopped after {steps} steps (raise --search-budget)"
            ),
        };
        s += &format!(
            "{:<24} {:>4} {:>12}  {:<11} {}\n",
            failed,
            sc.displaced.len(),
            format_bytes(sc.demand_bytes),
            sc.outcome.verdict().to_string(),
            how
        );
        if let (true, Outcome::Guaranteed { witness: w, .. }) = (witness, &sc.outcome) {
            for m in w {
                let parts: Vec<String> = m
                    .parts
                    .iter()
                    .map(|p| {
                        format!(
                            "{} {} on {}",
                            format_bytes(p.bytes),
                            class_name(f.classes[p.class]),
                            node_name(f, p.node)
                        )
                    })
                    .collect();
                s += &format!("    {} -> {}\n", f.vms[m.vm].name, parts.join(", "));
            }
        }
    }
    if hidden > 0 {
        s += &format!(
            "({hidden} more guaranteed scenario(s) not shown; --all-scenarios shows them)\n"
        );
    }
    let count = |v: Verdict| {
        r.scenarios
            .iter()
            .filter(|s| s.outcome.verdict() == v)
            .count()
    };
    s += &format!(
        "verdict: N+{} {} ({} guaranteed, {} impossible, {} not proven",
        r.k,
        r.verdict,
        count(Verdict::Guaranteed),
        count(Verdict::Impossible),
        count(Verdict::NotProven)
    );
    let skipped = r.total_scenarios - r.scenarios.len() as u64;
    if skipped > 0 {
        s += &format!(", {skipped} not evaluated: raise --max-scenarios");
    }
    s += ")\n";
    s
}

/// Parses `SIZE[:CLASS]`.
fn parse_place(s: &str) -> Result<(u64, u64), Error> {
    let (size, class) = s.split_once(':').unwrap_or((s, "2m"));
    let size =
        numapin::parse_size(size).map_err(|e| Error::InvalidConfig(format!("--place: {e}")))?;
    let class = parse_class(class).map_err(|e| Error::InvalidConfig(format!("--place: {e}")))?;
    Ok((size, class))
}

pub fn run(a: &Args) -> Result<(), CliError> {
    let fleet = load(&a.snapshots)?;
    let budget = Budget {
        search_steps: a.search_budget,
        max_scenarios: a.max_scenarios,
        ..Budget::default()
    };
    let report = failover::check(&fleet, a.failures, &budget);
    let mut out = json!({ "failover": report_json(&fleet, &report) });
    let mut text = summary_text(&fleet) + &report_text(&fleet, &report, a.witness, a.all_scenarios);

    if let Some(class) = a.headroom {
        if fleet.class_index(class).is_none() {
            return Err(Error::InvalidConfig(format!(
                "--headroom: no host offers {} pages",
                class_name(class)
            ))
            .into());
        }
        let h = headroom::headroom(&fleet, class, !a.multi_node, a.failures, 8, &budget);
        text += &format!(
            "\nheadroom ({} pages, {}): largest VM admissible keeping N+{}: {}{}; nothing above {} fits anywhere now ({} checks)\n",
            class_name(class),
            if a.multi_node { "may span nodes" } else { "one node" },
            a.failures,
            format_bytes(h.admissible_bytes),
            h.target.map(|t| format!(" on {}", target_name(&fleet, t))).unwrap_or_default(),
            format_bytes(h.upper_bound_bytes),
            h.checks,
        );
        out["headroom"] = json!({
            "page_size_bytes": h.page_size_bytes,
            "single_node": h.single_node,
            "k": h.k,
            "admissible_bytes": h.admissible_bytes,
            "target": h.target.map(|t| target_name(&fleet, t)),
            "upper_bound_bytes": h.upper_bound_bytes,
            "checks": h.checks,
        });
    }

    if let Some(ratio) = a.rightsize {
        let rule = rightsize::Rule {
            ratio,
            ..rightsize::Rule::default()
        };
        let r = rightsize::rightsize(&fleet, &rule);
        text += &format!(
            "\nright-sizing (peak <= {:.0}% of allocation, suggest peak + {:.0}%): {} VM(s), {} freed; {} VM(s) without a known peak\n",
            ratio * 100.0,
            rule.margin * 100.0,
            r.candidates.len(),
            format_bytes(r.freed_bytes),
            r.unknown_peak
        );
        if !r.candidates.is_empty() {
            text += &format!(
                "{:<20} {:<16} {:>11} {:>11} {:>11} {:>11}\n",
                "vm", "host", "allocated", "peak", "suggested", "freed"
            );
        }
        for c in &r.candidates {
            let vm = &fleet.vms[c.vm];
            text += &format!(
                "{:<20} {:<16} {:>11} {:>11} {:>11} {:>11}\n",
                vm.name,
                fleet.hosts[vm.host].name,
                format_bytes(c.allocated_bytes),
                format_bytes(c.peak_bytes),
                format_bytes(c.suggested_bytes),
                format_bytes(c.freed_bytes)
            );
        }
        out["rightsize"] = json!({
            "ratio": ratio,
            "margin": rule.margin,
            "freed_bytes": r.freed_bytes,
            "unknown_peak": r.unknown_peak,
            "candidates": r.candidates.iter().map(|c| json!({
                "vm": fleet.vms[c.vm].name,
                "host": fleet.hosts[fleet.vms[c.vm].host].name,
                "allocated_bytes": c.allocated_bytes,
                "peak_bytes": c.peak_bytes,
                "suggested_bytes": c.suggested_bytes,
                "freed_bytes": c.freed_bytes,
            })).collect::<Vec<_>>(),
        });
    }

    if a.ha {
        let c = ha::compare(&fleet, a.failures, &budget);
        let word = |x: ha::Agreement| match x {
            ha::Agreement::Agrees => "agrees with the exact answer",
            ha::Agreement::TooStrict => "TOO STRICT: refuses a guaranteed fleet",
            ha::Agreement::TooLax => "TOO LAX: accepts a fleet that cannot fail over",
            ha::Agreement::Unknown => "cannot be judged: the exact answer is not proven",
        };
        let yes = |b: bool| if b { "protected" } else { "not protected" };
        text += &format!(
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
        out["ha"] = json!(c);
    }

    if let Some(p) = &a.place {
        let (size, class) = parse_place(p)?;
        let Some(ci) = fleet.class_index(class) else {
            return Err(Error::InvalidConfig(format!(
                "--place: no host offers {} pages",
                class_name(class)
            ))
            .into());
        };
        let mut demand = vec![0u64; fleet.classes.len()];
        demand[ci] = size;
        text += &format!(
            "\nplacing a new VM of {} ({}):\n",
            demand_text(&fleet, &demand),
            if a.multi_node {
                "may span nodes"
            } else {
                "one node"
            }
        );
        let mut rows = Vec::new();
        for pol in policy::Policy::ALL {
            let t = policy::choose(&fleet, &demand, !a.multi_node, pol);
            let after = t.map(|t| {
                let mut g = fleet.clone();
                let host = match t {
                    Target::Node(n) => fleet.nodes[n].host,
                    Target::Host(h) => h,
                };
                g.admit("new", &demand, t);
                failover::recheck(&g, &report, host, &budget)
            });
            text += &format!(
                "  {:<10} {:<24} N+{} afterwards: {}\n",
                pol.name(),
                t.map_or("(fits nowhere)".to_string(), |t| target_name(&fleet, t)),
                a.failures,
                after.map_or("-".to_string(), |v| v.to_string())
            );
            rows.push(json!({
                "policy": pol,
                "target": t.map(|t| target_name(&fleet, t)),
                "verdict_after": after,
            }));
        }
        out["placement"] = json!({ "bytes": size, "page_size_bytes": class, "policies": rows });
    }

    let mut stdout = std::io::stdout().lock();
    if a.json {
        writeln!(stdout, "{}", serde_json::to_string_pretty(&out)?)?;
    } else {
        write!(stdout, "{text}")?;
    }
    stdout.flush()?;
    drop(stdout);
    match report.verdict {
        Verdict::Guaranteed => Ok(()),
        Verdict::Impossible => std::process::exit(EXIT_IMPOSSIBLE),
        Verdict::NotProven => std::process::exit(EXIT_NOT_PROVEN),
    }
}
