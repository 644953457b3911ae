//! `numapin serve`: the warm-pool service, in the foreground (see `docs/pool.md` for the
//! systemd unit).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use numapin::pool::{PoolTarget, Service, ServiceConfig};

use crate::CliError;

/// Arguments of `numapin serve`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Example:\n  numapin serve --group kvm --pool 0:2m:8x512MiB --pool 0:2m:1x4GiB\n\nClients: numapin reserve --from-pool ..., numapin run --from-pool ..., or numapin::pool::PoolClient."
)]
pub struct Args {
    /// The socket (default: $NUMAPIN_SOCKET, else /run/numapin/serve.sock).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// The ledger file (default: $NUMAPIN_LEDGER, else the host ledger).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// A group (name or gid) whose members may ask for memory, besides root.
    #[arg(long)]
    group: Option<String>,
    /// A warm pool NODE:PAGE:COUNTxSIZE, e.g. 0:2m:8x512MiB; repeat for several.
    #[arg(long = "pool")]
    pools: Vec<PoolTarget>,
    /// A JSON file with more pools: {"pools": [{"node": 0, "page_size": "2m", "chunk": "512MiB", "count": 8}]},
    /// or the output of `numapin plan --holdback --json` (see docs/pool.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Keep this host's N+k failover hold-back warm: the JSON of `numapin plan --holdback
    /// --json`; per node and class of this host, hold-back / --holdback-chunk files.
    #[arg(long, value_name = "PLAN.json")]
    holdback: Option<PathBuf>,
    /// The file size of the pools made from --holdback (raised to the class's page size).
    #[arg(long, value_parser = numapin::parse_size, default_value = "512MiB", requires = "holdback")]
    holdback_chunk: u64,
    /// Print the pools (from --pool, --config and --holdback) and exit without serving.
    #[arg(long)]
    dry_run: bool,
    /// Write the service's statistics (JSON) to this file every second.
    #[arg(long)]
    stats_file: Option<PathBuf>,
}

#[derive(serde::Deserialize)]
struct ConfigFile {
    #[serde(default)]
    pools: Vec<PoolTarget>,
}

fn group_id(g: &str) -> Result<u32, CliError> {
    if let Ok(n) = g.parse::<u32>() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group")?;
    groups
        .lines()
        .find_map(|l| {
            let mut f = l.split(':');
            (f.next() == Some(g)).then(|| f.nth(1).and_then(|x| x.parse().ok()))?
        })
        .ok_or_else(|| {
            CliError::Input(format!(
                "no group {g:?} in /etc/group: give an existing group name or a numeric gid"
            ))
        })
}

pub fn run(a: &Args) -> Result<(), CliError> {
    let ledger_path = a
        .ledger
        .clone()
        .unwrap_or_else(numapin::ledger::default_path);
    let ledger = Arc::new(numapin::Ledger::open(&ledger_path)?);
    let socket = a
        .socket
        .clone()
        .unwrap_or_else(numapin::pool::default_socket);
    let mut cfg = ServiceConfig::new(&socket, ledger);
    cfg.group = a.group.as_deref().map(group_id).transpose()?;
    cfg.pools = a.pools.clone();
    if let Some(path) = &a.config {
        let text = std::fs::read_to_string(path)?;
        let c: ConfigFile = serde_json::from_str(&text).map_err(|e| {
            CliError::Input(format!("{}: not a pool configuration: {e}", path.display()))
        })?;
        cfg.pools.extend(c.pools);
    }
    if let Some(path) = &a.holdback {
        let text = std::fs::read_to_string(path)?;
        let plan: serde_json::Value = serde_json::from_str(&text)?;
        let me = numapin::snapshot::HostIdentity::this_host();
        let pools = numapin::pool::pools_from_holdback(&plan, &me, a.holdback_chunk)
            .map_err(|what| CliError::Input(format!("{}: {what}", path.display())))?;
        cfg.pools.extend(pools);
    }
    let pools: Vec<String> = cfg
        .pools
        .iter()
        .map(|p| {
            format!(
                "node {} {} {}x{}",
                p.node,
                p.page_size,
                p.count,
                numapin::format_bytes(p.chunk)
            )
        })
        .collect();
    if a.dry_run {
        for p in &pools {
            println!("{p}");
        }
        return Ok(());
    }
    let service = Service::bind(cfg)?;
    eprintln!(
        "numapin serve: listening on {} (ledger {}), pools: {}",
        socket.display(),
        ledger_path.display(),
        if pools.is_empty() {
            "none (cold reservations only)".into()
        } else {
            pools.join(", ")
        }
    );
    if let Some(path) = a.stats_file.clone() {
        let read = service.stats_reader();
        std::thread::spawn(move || loop {
            if let Ok(j) = serde_json::to_string(&read()) {
                let tmp = path.with_extension("tmp");
                if std::fs::write(&tmp, j).is_ok() {
                    let _ = std::fs::rename(&tmp, &path);
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        });
    }
    service.run()?;
    Ok(())
}
