//! `numapin topology`.

use numapin::topology::format_cpulist;
use numapin::{format_bytes, Topology};

use crate::CliError;

/// Arguments of `numapin topology`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(a: &Args) -> Result<(), CliError> {
    let t = Topology::from_sysfs()?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&t)?);
    } else {
        print!("{}", render(&t));
    }
    Ok(())
}

/// The human-readable table.
pub fn render(t: &Topology) -> String {
    let mut s = String::new();
    s += &format!(
        "{:<5} {:<12} {:>11} {:>11}  {:<24} {:<24}\n",
        "node", "cpus", "mem total", "mem free", "2M pool (free/total)", "1G pool (free/total)"
    );
    for n in &t.nodes {
        let pool = |bytes: u64| {
            n.hugepages
                .iter()
                .find(|p| p.page_size_bytes == bytes)
                .map_or("-".to_string(), |p| {
                    let mut x = format!("{}/{}", p.free, p.total);
                    if p.surplus > 0 {
                        x += &format!(" +{} surplus", p.surplus);
                    }
                    x
                })
        };
        let cpus = if n.cpus.is_empty() {
            "(none)".to_string()
        } else {
            format_cpulist(&n.cpus)
        };
        s += &format!(
            "{:<5} {:<12} {:>11} {:>11}  {:<24} {:<24}\n",
            n.id,
            cpus,
            format_bytes(n.mem_total_bytes),
            format_bytes(n.mem_free_bytes),
            pool(2 << 20),
            pool(1 << 30)
        );
    }
    s += "distances:\n";
    s += &format!(
        "      {}\n",
        t.nodes
            .iter()
            .map(|n| format!("{:>4}", n.id))
            .collect::<String>()
    );
    for (n, row) in t.nodes.iter().zip(&t.distances) {
        s += &format!(
            "  {:>4}{}\n",
            n.id,
            row.iter().map(|d| format!("{d:>4}")).collect::<String>()
        );
    }
    s += &format!("transparent hugepages: {:?}\n", t.thp);
    s
}
