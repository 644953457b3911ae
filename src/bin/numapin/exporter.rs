//! `numapin exporter`: serve this host's ledger as Prometheus metrics over HTTP.
//!
//! Every scrape of `/metrics` takes a fresh snapshot (a consistent cut, see
//! `Ledger::snapshot`) and renders it; any other path answers 404. One request at a time: a
//! snapshot takes microseconds to milliseconds, and Prometheus scrapes every few seconds.

use std::path::PathBuf;
use std::process::ExitCode;

use numapin::fleet::prometheus::exposition;
use numapin::ledger::{default_path, Ledger};

use crate::{export, CliError};

/// Arguments of `numapin exporter`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (e.g. 0.0.0.0:9877, or 127.0.0.1:0 for any free port: the address
    /// taken is printed on stdout).
    #[arg(long, default_value = "0.0.0.0:9877")]
    listen: String,
    /// The ledger file (default: $NUMAPIN_LEDGER, else /run/numapin/ledger).
    #[arg(long)]
    ledger: Option<PathBuf>,
    /// Also export `numapin_failover_holdback_bytes` from this file (`numapin plan --holdback
    /// --json` output), read again at every scrape.
    #[arg(long, value_name = "PLAN.json")]
    holdback: Option<PathBuf>,
}

/// Serves until killed.
pub fn run(a: &Args) -> Result<ExitCode, CliError> {
    let path = a.ledger.clone().unwrap_or_else(default_path);
    let ledger = Ledger::open(&path)?;
    let server = tiny_http::Server::http(&a.listen).map_err(|e| CliError::Http {
        url: a.listen.clone(),
        what: format!("cannot listen: {e}"),
    })?;
    let addr = server
        .server_addr()
        .to_ip()
        .map_or_else(|| a.listen.clone(), |x| x.to_string());
    println!(
        "numapin exporter: ledger {} on http://{addr}/metrics",
        path.display()
    );
    for req in server.incoming_requests() {
        let resp = if req.url() == "/metrics" || req.url().starts_with("/metrics?") {
            match render(&ledger, a) {
                Ok(text) => tiny_http::Response::from_string(text)
                    .with_header(header("text/plain; version=0.0.4; charset=utf-8")),
                Err(e) => tiny_http::Response::from_string(format!("numapin: {e}\n"))
                    .with_status_code(500)
                    .with_header(header("text/plain; charset=utf-8")),
            }
        } else {
            tiny_http::Response::from_string("numapin exporter: metrics are at /metrics\n")
                .with_status_code(404)
                .with_header(header("text/plain; charset=utf-8"))
        };
        if let Err(e) = req.respond(resp) {
            eprintln!("numapin exporter: answering a scrape failed: {e}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn header(v: &str) -> tiny_http::Header {
    tiny_http::Header::from_bytes("Content-Type", v).expect("a valid header")
}

fn render(ledger: &Ledger, a: &Args) -> Result<String, CliError> {
    let snap = ledger.snapshot()?;
    let hold = match &a.holdback {
        Some(p) => Some(export::read_holdback(p, &snap)?),
        None => None,
    };
    Ok(exposition(&snap, hold.as_deref()))
}
