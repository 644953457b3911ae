//! `numapin`: reserve pinned, NUMA-local guest memory and account for it on the host.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod bench;
mod demo;
mod export;
mod exporter;
mod memory;
mod plan;
mod reserve;
mod run;
mod serve;
mod status;
mod topology;

/// Reserve a VM's RAM up front as pinned, NUMA-local hugepages, verified page by page.
///
/// Without a subcommand, runs a demonstration: shows the topology, reserves a small guest with
/// the best page size available, prints the verified report and releases it.
#[derive(Debug, Parser)]
#[command(name = "numapin", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Show NUMA nodes, their CPUs, memory and hugepage pools, and distances.
    Topology(topology::Args),
    /// Reserve memory (map, bind, populate, lock, verify), print the report, release.
    Reserve(reserve::Args),
    /// Reserve shared memory (a sealed memfd), then exec an unmodified VMM on it:
    /// `numapin run --size 4GiB --vm web-1 -- qemu-system-x86_64 ... mem-path={path},share=on`.
    Run(run::Args),
    /// Run the warm-pool service: pre-zeroed memory per (node, page size), handed out as sealed
    /// memfds over a UNIX socket (`reserve --from-pool`, `run --from-pool`).
    Serve(serve::Args),
    /// Plan capacity over `status --json` snapshots: N+K failover, headroom, right-sizing.
    Plan(plan::Args),
    /// Benchmark a reservation against a ballooning baseline, side by side (ratio > 1: numapin better).
    Bench(bench::Args),
    /// Serve this host's ledger as Prometheus metrics over HTTP (`/metrics`).
    Exporter(exporter::Args),
    /// Show the host ledger: per node and page-size class capacity, limit, reserved and
    /// available; per VM allocated vs guest-used with a right-sizing hint.
    Status(status::Args),
}

/// Errors of the command-line tool.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// An error from the library.
    #[error(transparent)]
    Numapin(#[from] numapin::Error),
    /// JSON output failed.
    #[error("cannot write JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// Writing to stdout failed.
    #[error("cannot write output: {0}")]
    Io(#[from] std::io::Error),
    /// An HTTP server could not be reached, or answered nonsense, or cannot listen.
    #[error("{url}: {what}")]
    Http {
        /// The URL or address.
        url: String,
        /// What went wrong.
        what: String,
    },
    /// An output file could not be written.
    #[error("cannot write {}: {what}", path.display())]
    Output {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        what: String,
    },
    /// A file or value given on the command line is not what it must be (the message names it
    /// and says what to give instead).
    #[error("{0}")]
    Input(String),
    /// `numapin run` could not start the VMM (the reservation was released).
    #[error("cannot run {command}: {source}; the reservation was released. Check the command's name and PATH")]
    Exec {
        /// The command.
        command: String,
        /// Why `execvp` failed.
        source: std::io::Error,
        /// The exit status, as shells use it: 127 not found, 126 not runnable.
        code: u8,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.command {
        Some(Command::Plan(a)) => return finish(plan::run(&a)),
        Some(Command::Exporter(a)) => return finish(exporter::run(&a)),
        None => demo::run(),
        Some(Command::Topology(a)) => topology::run(&a),
        Some(Command::Reserve(a)) => reserve::run(&a),
        Some(Command::Run(a)) => run::run(&a),
        Some(Command::Serve(a)) => serve::run(&a),
        Some(Command::Bench(a)) => bench::run(&a),
        Some(Command::Status(a)) => status::run(&a),
    };
    finish(r.map(|()| ExitCode::SUCCESS))
}

/// The exit code of a subcommand's result, printing its error.
fn finish(r: Result<ExitCode, CliError>) -> ExitCode {
    match r {
        Ok(code) => code,
        Err(e) => {
            eprintln!("numapin: error: {e}");
            match e {
                CliError::Exec { code, .. } => ExitCode::from(code),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
