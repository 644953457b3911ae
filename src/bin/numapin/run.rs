//! `numapin run`: reserve a shared reservation, then `exec` an unmodified VMM on it.
//!
//! Why `exec` and not fork + wait: the ledger charge must live exactly as long as the process
//! that holds the memory. `exec` keeps the process (its pid, its start time, its open
//! descriptors), so the VMM *is* the process that reserved and was charged: the memfd and the
//! ledger record's lock (its liveness, kept across `exec` by `VmRecord::keep_across_exec`)
//! survive into it, the record is settled when it exits (when the
//! memory goes), signals reach the VMM directly (nothing to forward, nothing to lose when a
//! launcher is killed), and the exit status is the VMM's. A launcher that forked would either
//! lose the charge while the VMM still runs (if the launcher were killed) or have to kill the
//! VM with it. See `docs/vmm-guide.md`.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;

use crate::CliError;

/// Arguments of `numapin run`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "In ARGS, {fd} becomes the memory's descriptor number, {path} a path that opens it (/proc/self/fd/N) and {size} its size in bytes; NUMAPIN_FD, NUMAPIN_PATH, NUMAPIN_SIZE and NUMAPIN_PAGE_SIZE are exported.\n\nExample:\n  numapin run --size 4GiB --node 1 --page-size 2m --vm web-1 -- \\\n    qemu-system-x86_64 -m 4G -object memory-backend-file,id=ram0,size={size},mem-path={path},share=on,prealloc=off \\\n    -machine q35,memory-backend=ram0 ..."
)]
pub struct Args {
    #[command(flatten)]
    mem: crate::memory::MemoryArgs,
    /// Charge the host ledger under this VM name before mapping (refused if it does not fit);
    /// the VMM holds the charge until it exits.
    #[arg(long)]
    vm: String,
    /// The ledger file (default: $NUMAPIN_LEDGER, else the host ledger).
    #[arg(long)]
    ledger: Option<std::path::PathBuf>,
    /// Ask the warm-pool service (`numapin serve`) for the memory instead of reserving here.
    #[arg(long)]
    from_pool: bool,
    /// The service's socket for --from-pool (default: $NUMAPIN_SOCKET, else
    /// /run/numapin/serve.sock).
    #[arg(long, requires = "from_pool")]
    socket: Option<std::path::PathBuf>,
    /// Do not print the reservation's report on stderr before starting the VMM.
    #[arg(long, short)]
    quiet: bool,
    /// The VMM and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD ARGS")]
    command: Vec<OsString>,
}

/// Replaces `{fd}`, `{path}` and `{size}` in one argument.
fn substitute(arg: &OsString, fd: i32, size: u64) -> OsString {
    match arg.to_str() {
        Some(s) if s.contains('{') => s
            .replace("{fd}", &fd.to_string())
            .replace("{path}", &format!("/proc/self/fd/{fd}"))
            .replace("{size}", &size.to_string())
            .into(),
        _ => arg.clone(),
    }
}

/// Exits with 126 (found but not runnable) or 127 (not found), as shells do, after printing
/// why.
fn exec_failed(cmd: &OsString, e: &std::io::Error) -> CliError {
    let code = if e.kind() == std::io::ErrorKind::NotFound {
        127
    } else {
        126
    };
    CliError::Exec {
        command: cmd.to_string_lossy().into_owned(),
        source: std::io::Error::new(e.kind(), e.to_string()),
        code,
    }
}

pub fn run(a: &Args) -> Result<(), CliError> {
    let path = a
        .ledger
        .clone()
        .unwrap_or_else(numapin::ledger::default_path);
    let (fd, record, page_size, size) = if a.from_pool {
        let socket = a
            .socket
            .clone()
            .unwrap_or_else(numapin::pool::default_socket);
        let client = numapin::pool::PoolClient::new(
            socket,
            std::sync::Arc::new(numapin::Ledger::open(path)?),
        );
        let req = a.mem.pool_request(a.vm.clone());
        let (fd, record, grant) = client.request_fd(&req)?;
        if !a.quiet {
            eprintln!(
                "from pool: {:?}, {} of {} pages on node(s) {:?}, service took {:.3}s",
                grant.source,
                numapin::format_bytes(grant.size),
                grant.page_size,
                grant.nodes,
                grant.service_seconds
            );
        }
        (fd, record, grant.page_size, grant.size)
    } else {
        let b = a
            .mem
            .builder()
            .shared(true)
            .ledger(std::sync::Arc::new(numapin::Ledger::open(path)?))
            .vm(a.vm.clone());
        let r = crate::reserve::wait_with_progress(b.build_background()?)?;
        if !a.quiet {
            eprint!("{}", r.report());
        }
        let page_size = r.page_size();
        let size = r.len() as u64;
        let (fd, record) = r.into_fd().expect("built with .shared(true)");
        let record = record.expect("built with a ledger");
        (fd, record, page_size, size)
    };
    let fd: OwnedFd = fd;
    // The VMM inherits the memory's descriptor, and the descriptor holding the record's lock
    // (its liveness): the VMM then holds the record until it exits.
    rustix::io::fcntl_setfd(&fd, rustix::io::FdFlags::empty())
        .map_err(|e| CliError::Io(e.into()))?;
    let n = fd.as_raw_fd();
    let (cmd, args) = a.command.split_first().expect("clap requires a command");
    let mut c = std::process::Command::new(cmd);
    c.args(args.iter().map(|x| substitute(x, n, size)))
        .env("NUMAPIN_FD", n.to_string())
        .env("NUMAPIN_PATH", format!("/proc/self/fd/{n}"))
        .env("NUMAPIN_SIZE", size.to_string())
        .env("NUMAPIN_PAGE_SIZE", page_size.to_string());
    // Last before the exec, so that no process forked meanwhile holds the record's lock.
    record.keep_across_exec()?;
    // exec returns only on failure: then `record` and `fd` drop here (refund and free the pages,
    // or hand both back to the service for warm memory).
    let e = c.exec();
    drop(record);
    drop(fd);
    Err(exec_failed(cmd, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_replaced_anywhere_in_an_argument() {
        let s = |x: &str| substitute(&OsString::from(x), 7, 1 << 30);
        assert_eq!(
            s("memory-backend-file,id=m,size={size},mem-path={path},share=on"),
            "memory-backend-file,id=m,size=1073741824,mem-path=/proc/self/fd/7,share=on"
        );
        assert_eq!(s("--fd={fd}"), "--fd=7");
        assert_eq!(s("plain"), "plain");
        assert_eq!(s("{other}"), "{other}");
    }
}
