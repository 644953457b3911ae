//! `numapin status`: the host ledger per node and page-size class, and per VM.

use std::io::Write;
use std::path::PathBuf;

use numapin::fleet::nrt::{node_resource_topology, NrtOptions};
use numapin::fleet::prometheus::exposition;
use numapin::format_bytes;
use numapin::ledger::{default_path, Ledger};
use numapin::units::class_name;

use crate::{export, CliError};

/// Output formats of `numapin status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Tables.
    Text,
    /// The snapshot as JSON (the planner's input).
    Json,
    /// Prometheus text exposition (`numapin_*` metrics).
    Prometheus,
    /// A Kubernetes NodeResourceTopology (v1alpha2) object as JSON.
    Nrt,
}

/// Arguments of `numapin status`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The ledger file (default: $NUMAPIN_LEDGER, else /run/numapin/ledger). Created from
    /// this host's topology if it does not exist.
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Print the snapshot as JSON (the planner's input); same as --format json.
    #[arg(long, conflicts_with_all = ["prometheus", "format"])]
    json: bool,
    /// Print Prometheus text exposition (`numapin_*` metrics); same as --format prometheus.
    #[arg(long, conflicts_with = "format")]
    prometheus: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    format: Format,
    /// Write the output to FILE by atomic rename instead of stdout (for the node exporter's
    /// textfile collector: `--prometheus --output /var/lib/node_exporter/numapin.prom`).
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
    /// Subtract this host's failover hold-back, read from `numapin plan --holdback --json`
    /// output (NRT allocatable/available; the `numapin_failover_holdback_bytes` metric).
    #[arg(long, value_name = "PLAN.json")]
    holdback: Option<PathBuf>,
    /// With --format nrt: the kubelet's topology manager policy on this node.
    #[arg(long, default_value = "single-numa-node")]
    nrt_policy: String,
    /// With --format nrt: the kubelet's topology manager scope on this node.
    #[arg(long, default_value = "pod")]
    nrt_scope: String,
    /// Record what a VM's guest uses, `NAME=SIZE` (e.g. from balloon statistics), before
    /// printing; repeat for several VMs.
    #[arg(long = "guest-used", value_parser = parse_guest_used)]
    guest_used: Vec<(String, u64)>,
}

fn parse_guest_used(s: &str) -> Result<(String, u64), String> {
    let (n, v) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("expected NAME=SIZE, got {s:?}"))?;
    Ok((
        n.to_string(),
        numapin::parse_size(v).map_err(|e| e.to_string())?,
    ))
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
    let format = match (a.json, a.prometheus) {
        (true, _) => Format::Json,
        (_, true) => Format::Prometheus,
        _ => a.format,
    };
    let hold = match &a.holdback {
        Some(p) => Some(export::read_holdback(p, &snap)?),
        None => None,
    };
    let text = match format {
        Format::Json => serde_json::to_string(&snap)? + "\n",
        Format::Prometheus => exposition(&snap, hold.as_deref()),
        Format::Nrt => {
            let topo = numapin::Topology::from_sysfs().ok();
            let opts = NrtOptions {
                policy: a.nrt_policy.clone(),
                scope: a.nrt_scope.clone(),
            };
            let v =
                node_resource_topology(&snap, topo.as_ref(), hold.as_deref().unwrap_or(&[]), &opts);
            serde_json::to_string_pretty(&v)? + "\n"
        }
        Format::Text => {
            let mut buf = Vec::new();
            table(&mut buf, &path, &snap)?;
            String::from_utf8_lossy(&buf).into_owned()
        }
    };
    match &a.output {
        Some(p) => export::write_atomically(p, &text)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
        }
    }
    Ok(())
}

fn table(
    out: &mut impl Write,
    path: &std::path::Path,
    snap: &numapin::snapshot::Snapshot,
) -> std::io::Result<()> {
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
    for n in &snap.nodes {
        for c in n
            .classes
            .iter()
            .filter(|c| c.reserved_bytes > c.limit_bytes)
        {
            writeln!(
                out,
                "OVER-COMMITTED: node {} {}: {} reserved, {} over the limit of {} (capacity {}: the pool or memory shrank under admitted VMs); grow it back or move VMs",
                n.id.0,
                class_name(c.page_size_bytes),
                format_bytes(c.reserved_bytes),
                format_bytes(c.reserved_bytes - c.limit_bytes),
                format_bytes(c.limit_bytes),
                format_bytes(c.capacity_bytes)
            )?;
        }
    }
    warm_table(out, snap)?;
    if snap.vms.is_empty() {
        writeln!(out, "no VMs")?;
        return Ok(());
    }
    writeln!(
        out,
        "\n{:<20} {:>8}  {:>11}  {:>11}  {:>11}  right-size hint (peak + 25%, whole pages)",
        "vm", "pid", "allocated", "guest used", "peak"
    )?;
    for v in &snap.vms {
        let alloc = v.reserved_bytes();
        let hint = match v.right_size_hint() {
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
            printable(&v.name),
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

/// Memory held by `numapin serve` per node and class: warm (records named
/// `numapin::pool::WARM_NAME`) and being zeroed (`ZEROING_NAME`: refills and memory taken back
/// from VMs); nothing when no service holds any.
fn warm_table(out: &mut impl Write, snap: &numapin::snapshot::Snapshot) -> std::io::Result<()> {
    // (node, class) -> (warm bytes, zeroing bytes). Not a count of files: the snapshot merges
    // one process's records of one name.
    let mut pool = std::collections::BTreeMap::<(u32, u64), (u64, u64)>::new();
    for v in snap
        .vms
        .iter()
        .filter(|v| numapin::snapshot::is_pool_memory(&v.name))
    {
        let warm = v.name == numapin::pool::WARM_NAME;
        for r in &v.reservations {
            let e = pool.entry((r.node.0, r.page_size_bytes)).or_default();
            if warm {
                e.0 += r.bytes;
            } else {
                e.1 += r.bytes;
            }
        }
    }
    if pool.is_empty() {
        return Ok(());
    }
    writeln!(
        out,
        "\nwarm (numapin serve: zeroed, ready to hand out; zeroing: refills and returned memory)"
    )?;
    writeln!(
        out,
        "{:>4}  {:>6}  {:>11}  {:>11}",
        "node", "class", "warm", "zeroing"
    )?;
    for ((node, class), (bytes, zeroing)) in pool {
        writeln!(
            out,
            "{:>4}  {:>6}  {:>11}  {:>11}",
            node,
            class_name(class),
            format_bytes(bytes),
            format_bytes(zeroing)
        )?;
    }
    Ok(())
}

/// A VM name as the terminal may show it: control characters (which a hostile ledger file could
/// hold; `numapin` refuses them when it records a name) escaped, never sent raw.
fn printable(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            let esc: Vec<char> = if c.is_control() {
                c.escape_default().collect()
            } else {
                vec![c]
            };
            esc
        })
        .collect()
}
