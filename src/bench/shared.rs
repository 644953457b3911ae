//! The shared-reservation rows of [`super::run`]:
//! - `adopt_vs_populate`: a shared reservation of 2M pages built (populated) in this process
//!   vs adopted by another process (a child `numapin bench --adopt-child SOCKET` that receives
//!   the memfd over a UNIX socket and times `Reservation::adopt(..).build()`).
//! - `qemu_on_numapin`: the whole wall time until QEMU's monitor answers, `numapin run` + QEMU
//!   on the memfd with `prealloc=off` vs QEMU preallocating the same size alone
//!   (`prealloc=on`, same threads).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use super::qemu::{time_process, which};
use super::{Row, GIB, MIB};
use crate::error::{Error, Result};
use crate::units::{format_bytes, NodeId, PageSize};
use crate::Reservation;

/// An I/O error of `call` as [`Error::Sys`].
fn io(call: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Sys { call, source }
}

/// The child's side of `adopt_vs_populate` (`numapin bench --adopt-child SOCKET`): adopt
/// every descriptor received on `socket`, answer the seconds each adoption took (or the
/// error), until the parent hangs up.
///
/// # Errors
/// [`Error::Sys`] if the socket fails.
pub fn adopt_child(socket: &Path) -> Result<()> {
    let s = UnixStream::connect(socket).map_err(io("connect"))?;
    let mut w = s.try_clone().map_err(io("dup"))?;
    loop {
        let mut buf = [0u8; 64];
        let (n, fd) = crate::shared::recv_fd(&s, &mut buf).map_err(io("recvmsg"))?;
        let Some(fd) = fd else {
            if n == 0 {
                return Ok(()); // the parent is done
            }
            writeln!(w, "error: no descriptor came with the message").map_err(io("write"))?;
            continue;
        };
        let size: u64 = std::str::from_utf8(&buf[..n])
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0);
        let t = Instant::now();
        match Reservation::adopt(fd)
            .size(size)
            .page_size(PageSize::Huge2M)
            .build()
        {
            Ok(r) => {
                let secs = t.elapsed().as_secs_f64();
                drop(r);
                writeln!(w, "{secs}").map_err(io("write"))?;
            }
            Err(e) => writeln!(w, "error: {e}").map_err(io("write"))?,
        }
    }
}

fn free_2m(node: NodeId) -> u64 {
    crate::Topology::from_sysfs()
        .ok()
        .and_then(|t| {
            t.node(node)
                .and_then(|n| n.pool(PageSize::Huge2M))
                .map(|p| p.free)
        })
        .unwrap_or(0)
}

/// `adopt_vs_populate`: 4 GiB of 2M pages (the `--size` if the pool cannot hold 4 GiB).
pub(super) fn adopt_row(
    exe: &Path,
    size: u64,
    threads: usize,
    reps: usize,
    say: &mut dyn FnMut(&str),
) -> Result<Option<Row>> {
    let node = NodeId(
        crate::Topology::from_sysfs()?
            .nodes
            .iter()
            .find(|n| n.has_memory())
            .map_or(0, |n| n.id.0),
    );
    let size = if free_2m(node) >= 4 * GIB / (2 * MIB) {
        4 * GIB
    } else {
        say(&format!(
            "adopt_vs_populate: fewer than 2048 free 2M pages, measuring {} instead of 4 GiB",
            format_bytes(size)
        ));
        size
    };
    let dir = std::env::temp_dir().join(format!("numapin-bench-adopt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io("mkdir"))?;
    let sock = dir.join("adopt.sock");
    let mut result = || -> Result<Option<Row>> {
        let listener = UnixListener::bind(&sock).map_err(io("bind"))?;
        let mut child = Command::new(exe)
            .args(["bench", "--adopt-child"])
            .arg(&sock)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .map_err(io("spawn the adopter"))?;
        listener.set_nonblocking(true).map_err(io("fcntl"))?;
        let conn = loop {
            match listener.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(io("accept")(e)),
            }
            if let Some(st) = child.try_wait().map_err(io("waitpid"))? {
                say(&format!(
                    "adopt_vs_populate row skipped: the adopter exited ({st})"
                ));
                return Ok(None);
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        conn.set_nonblocking(false).map_err(io("fcntl"))?;
        let mut answers = BufReader::new(conn.try_clone().map_err(io("dup"))?).lines();
        say(&format!(
            "adopt_vs_populate: {reps} rounds of {}: populate here, adopt in pid {}",
            format_bytes(size),
            child.id()
        ));
        let (mut adopt, mut populate) = (Vec::new(), Vec::new());
        for rep in 0..=reps {
            let t = Instant::now();
            let r = match Reservation::builder(size)
                .node(node)
                .page_size(PageSize::Huge2M)
                .threads(threads)
                .shared(true)
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    // The pool is shared: another user may hold pages right now.
                    say(&format!("adopt_vs_populate row skipped: {e}"));
                    let _ = child.kill();
                    let _ = child.wait();
                    return Ok(None);
                }
            };
            let built = t.elapsed().as_secs_f64();
            crate::shared::send_fd(
                &conn,
                r.as_fd().expect("shared"),
                size.to_string().as_bytes(),
            )
            .map_err(io("sendmsg"))?;
            let line = answers
                .next()
                .transpose()
                .map_err(io("read"))?
                .unwrap_or_default();
            drop(r);
            let Ok(secs) = line.trim().parse::<f64>() else {
                say(&format!(
                    "adopt_vs_populate row skipped: the adopter said {line:?}"
                ));
                let _ = child.kill();
                let _ = child.wait();
                return Ok(None);
            };
            // Round 0 warms up (the pool's pages, the child's first mapping).
            if rep > 0 {
                populate.push(built);
                adopt.push(secs);
            }
        }
        // Hang up (both handles of the connection), so that the adopter's loop ends.
        drop(answers);
        drop(conn);
        let _ = child.wait();
        Ok(Some(Row::paired(
            "adopt_vs_populate",
            "s",
            &adopt,
            &populate,
            true,
            Some(50.0),
            format!(
                "{} of 2M pages, node {node}: `Reservation::adopt(fd).build()` in another process (check seals/size/backing, map shared, map the existing pages, verify every page) vs building the same shared reservation ({threads} threads: map, bind, populate, verify)",
                format_bytes(size)
            ),
        )))
    };
    let result = result();
    let _ = std::fs::remove_dir_all(&dir);
    result
}

/// `qemu_on_numapin`: `numapin run` + QEMU (`prealloc=off` on the memfd) vs QEMU
/// preallocating alone, each until its monitor answers `quit`.
pub(super) fn qemu_run_row(
    exe: &Path,
    size: u64,
    threads: usize,
    reps: usize,
    say: &mut dyn FnMut(&str),
) -> Option<Row> {
    let Some(qemu) = which("qemu-system-x86_64") else {
        say("qemu-system-x86_64 not installed: qemu_on_numapin row skipped");
        return None;
    };
    let mb = size / MIB;
    let ledger =
        std::env::temp_dir().join(format!("numapin-bench-run-ledger-{}", std::process::id()));
    let numapin_cmd = || {
        let mut c = Command::new(exe);
        c.args(["run", "--quiet", "--size", &format!("{mb}MiB")])
            .args(["--page-size", "2m", "--threads", &threads.to_string()])
            .args(["--vm", "bench-qemu", "--ledger"])
            .arg(&ledger)
            .arg("--")
            .arg(&qemu)
            .args(super::qemu::MONITOR_ARGS)
            .arg("memory-backend-file,id=m,size={size},mem-path={path},share=on,prealloc=off");
        c
    };
    let qemu_cmd = || super::qemu::prealloc_cmd(&qemu, mb, threads);
    say(&format!("qemu_on_numapin: {reps} interleaved runs of each"));
    let timed = super::qemu::interleaved(
        reps,
        || time_process(&mut numapin_cmd(), b"quit\n"),
        || time_process(&mut qemu_cmd(), b"quit\n"),
    );
    let _ = std::fs::remove_file(&ledger);
    let (n, b) = match timed {
        Ok(t) => t,
        Err((side, e)) => {
            say(&format!(
                "qemu_on_numapin row skipped: {} failed: {e}",
                if side == 0 {
                    "numapin run + qemu"
                } else {
                    "qemu"
                }
            ));
            return None;
        }
    };
    Some(Row::paired(
        "qemu_on_numapin",
        "s",
        &n,
        &b,
        true,
        Some(1.0),
        format!("whole wall time until QEMU's monitor answers: `numapin run --size {mb}MiB --page-size 2m --threads {threads} -- qemu-system-x86_64 -machine none -S -object memory-backend-file,size={{size}},mem-path={{path}},share=on,prealloc=off` vs `qemu-system-x86_64 -machine none -S -object memory-backend-memfd,size={mb}M,hugetlb=on,hugetlbsize=2M,prealloc=on,prealloc-threads={threads}`"),
    ))
}
