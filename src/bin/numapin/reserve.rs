//! `numapin reserve`.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use numapin::{format_bytes, PendingReservation, Reservation};

use crate::CliError;

/// Arguments of `numapin reserve`.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    mem: crate::memory::MemoryArgs,
    /// Do not lock base pages.
    #[arg(long)]
    no_lock: bool,
    /// Hold the reservation this many seconds after printing the report (a finite number,
    /// 0 or more; fractions allowed).
    #[arg(long, default_value = "0", value_parser = parse_hold_secs)]
    hold_secs: Duration,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Only run the preflight: print what would be reserved and whether the host can hold it
    /// now; map nothing.
    #[arg(long)]
    dry_run: bool,
    /// Charge the host ledger under this VM name before mapping (refused if it does not fit).
    #[arg(long)]
    vm: Option<String>,
    /// The ledger file for --vm (default: $NUMAPIN_LEDGER, else /run/numapin/ledger).
    #[arg(long, requires = "vm")]
    ledger: Option<std::path::PathBuf>,
    /// Ask the warm-pool service (`numapin serve`) instead of reserving here: warm memory if a
    /// pool matches, else a cold reservation made by the service. Needs --vm.
    #[arg(long, requires = "vm")]
    from_pool: bool,
    /// The service's socket for --from-pool (default: $NUMAPIN_SOCKET, else
    /// /run/numapin/serve.sock).
    #[arg(long, requires = "from_pool")]
    socket: Option<std::path::PathBuf>,
}

/// `--from-pool`: the memory comes from the service, adopted here.
fn from_pool(a: &Args) -> Result<(), CliError> {
    let path = a
        .ledger
        .clone()
        .unwrap_or_else(numapin::ledger::default_path);
    let socket = a
        .socket
        .clone()
        .unwrap_or_else(numapin::pool::default_socket);
    let client =
        numapin::pool::PoolClient::new(socket, std::sync::Arc::new(numapin::Ledger::open(path)?));
    let req = a.mem.pool_request(a.vm.clone().unwrap_or_default());
    let served = client.request(&req)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        let j = serde_json::json!({ "grant": served.grant, "report": served.reservation.report() });
        writeln!(out, "{j}")?;
    } else {
        writeln!(
            out,
            "from pool: {:?}, service took {:.3}s",
            served.grant.source, served.grant.service_seconds
        )?;
        write!(out, "{}", served.reservation.report())?;
    }
    out.flush()?;
    drop(out);
    if !a.hold_secs.is_zero() {
        std::thread::sleep(a.hold_secs);
    }
    Ok(())
}

/// `--hold-secs`: seconds as a finite, non-negative number that a `Duration` holds (not `inf`,
/// `NaN`, `-1` or `1e300`), checked before anything is reserved.
fn parse_hold_secs(s: &str) -> Result<Duration, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a number of seconds"))?;
    Duration::try_from_secs_f64(v).map_err(|_| {
        format!(
            "{s:?} is not a finite number of seconds from 0 to {}",
            u64::MAX
        )
    })
}

pub fn run(a: &Args) -> Result<(), CliError> {
    if a.from_pool {
        return from_pool(a);
    }
    let mut b = a.mem.builder().lock(!a.no_lock);
    if let Some(vm) = &a.vm {
        let path = a
            .ledger
            .clone()
            .unwrap_or_else(numapin::ledger::default_path);
        b = b
            .ledger(std::sync::Arc::new(numapin::Ledger::open(path)?))
            .vm(vm.clone());
    }
    if a.dry_run {
        let plan = b.preflight()?;
        if a.json {
            println!("{}", serde_json::to_string(&plan)?);
        } else {
            print!("{plan}");
        }
        return Ok(());
    }
    let r = wait_with_progress(b.build_background()?)?;
    let mut out = std::io::stdout().lock();
    if a.json {
        writeln!(out, "{}", serde_json::to_string(r.report())?)?;
    } else {
        write!(out, "{}", r.report())?;
    }
    out.flush()?;
    drop(out);
    if !a.hold_secs.is_zero() {
        std::thread::sleep(a.hold_secs);
    }
    drop(r);
    Ok(())
}

/// Waits for a background population; on a terminal, draws a progress bar on stderr once it
/// has run for about a second.
pub fn wait_with_progress(p: PendingReservation) -> Result<Reservation, numapin::Error> {
    // Without a terminal there is nothing to draw: join at once (polling cost a reservation
    // wall time after its workers had finished; docs/benchmarks.md has the figures).
    if !std::io::stderr().is_terminal() {
        return p.wait();
    }
    let mut drawn = false;
    let mut last_draw = 0.0;
    while !p.is_finished() {
        std::thread::sleep(Duration::from_millis(5));
        let pr = p.progress();
        if pr.elapsed_seconds >= 1.0 && pr.elapsed_seconds - last_draw >= 0.1 {
            last_draw = pr.elapsed_seconds;
            let width = 30;
            let filled = (pr.fraction() * width as f64) as usize;
            let what = if pr.done_bytes >= pr.total_bytes {
                "verifying "
            } else {
                "populating"
            };
            eprint!(
                "\r{what} [{}{}] {:5.1}%  {} / {}  {}/s ",
                "#".repeat(filled),
                ".".repeat(width - filled),
                100.0 * pr.fraction(),
                format_bytes(pr.done_bytes),
                format_bytes(pr.total_bytes),
                format_bytes(pr.bytes_per_second() as u64)
            );
            drawn = true;
        }
    }
    if drawn {
        eprintln!();
    }
    p.wait()
}
