//! `numapin status`: the host ledger per node and page-size class, and per VM.

use std::io::Write;
use std::path::PathBuf;

use numapin::format_bytes;
use numapin::ledger::metrics::{prometheus, right_size_hint, DEFAULT_MARGIN_PPM};
use numapin::ledger::{default_path, Ledger};

use crate::CliError;

/// Arguments of `numapin status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ledger file (default: $NUMAPIN_LEDGER, else /dev/shm/numapin-ledger). Created from
    /// this host's topology if it does not exist.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Print the snapshot as JSON (the planner's input).
    #[arg(long, conflicts_with = "prometheus")]
    json: bool,
    /// Print Prometheus text exposition (`numapin_*` metrics).
    #[arg(long)]
    prometheus: bool,
    /// Record what a VM's guest uses, `NAME=SIZE` (e.g. from balloon statistics), before
    /// printing; repeat for several VMs.
    #[arg(long = "guest-used", value_parser = parse_guest_used)]
    guest_used: Vec<(String, u64)>,
}

fn parse_guest_used(s: &str) -> Result<(String, u64), String> {
    let (n, v) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got {s:?}"))?;
    Ok((n.to_string(), numapin::parse_size(v)?))
}

pub fn run(a: &Args) -> Result<(), CliError> {
    let path = a.ledger.clone().unwrap_or_else(default_path);
    let l = Ledger::open(&path)?;
    for (name, bytes) in &a.guest_used {
        if l.set_guest_used(name, None, *bytes)? == 0 {
            eprintln!("numapin: warning: no VM named {name:?} in the ledger");
        }
    }
    let snap = l.snapshot()?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string(&snap)?)?;
        return Ok(());
    }
    if a.prometheus {
        write!(out, "{}", prometheus(&snap))?;
        return Ok(());
    }
    writeln!(out, "ledger {}", path.display())?;
    writeln!(
        out,
        "{:>4}  {:>6}  {:>11}  {:>11}  {:>11}  {:>11}",
        "node", "class", "capacity", "limit", "reserved", "available"
    )?;
    for n in &snap.nodes {
        for c in &n.classes {
            writeln!(
                out,
                "{:>4}  {:>6}  {:>11}  {:>11}  {:>11}  {:>11}",
                n.id.0,
                class_name(c.page_size_bytes),
                format_bytes(c.capacity_bytes),
                format_bytes(c.limit_bytes),
                format_bytes(c.reserved_bytes),
                format_bytes(c.available_bytes)
            )?;
        }
    }
    if snap.vms.is_empty() {
        writeln!(out, "no VMs")?;
        return Ok(());
    }
    writeln!(
        out,
        "\n{:<20} {:>8}  {:>11}  {:>11}  {:>11}  right-size hint (peak + 15%)",
        "vm", "pid", "allocated", "guest used", "peak"
    )?;
    for v in &snap.vms {
        let alloc = v.reserved_bytes();
        let hint = match right_size_hint(v, DEFAULT_MARGIN_PPM) {
            None => "no guest usage reported".to_string(),
            Some(h) if h < alloc => format!(
                "{} (could free {})",
                format_bytes(h),
                format_bytes(alloc - h)
            ),
            Some(h) => format!("{} (allocation is tight)", format_bytes(h)),
        };
        writeln!(
            out,
            "{:<20} {:>8}  {:>11}  {:>11}  {:>11}  {hint}",
            v.name,
            v.pid,
            format_bytes(alloc),
            format_bytes(v.guest_used_bytes),
            format_bytes(v.guest_used_peak_bytes)
        )?;
        for r in &v.reservations {
            writeln!(
                out,
                "{:<20} {:>8}  {:>11}  node {} {}",
                "",
                "",
                format_bytes(r.bytes),
                r.node.0,
                class_name(r.page_size_bytes)
            )?;
        }
    }
    Ok(())
}

fn class_name(page: u64) -> &'static str {
    match page {
        4096 => "4k/thp",
        0x20_0000 => "2m",
        0x4000_0000 => "1g",
        _ => "?",
    }
}
