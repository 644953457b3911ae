//! `qemu_prealloc`: QEMU's own hugetlb preallocation against `numapin reserve`, whole process
//! against whole process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::{Row, MIB};

/// Finds a program on `PATH`.
pub(super) fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| PathBuf::from(d).join(prog))
        .find(|p| p.is_file())
}

/// Runs a command to its end with its output discarded; the wall time, or why it failed.
pub(super) fn time_process(cmd: &mut Command, stdin: &[u8]) -> Result<Duration, String> {
    let t = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    if let Some(mut i) = child.stdin.take() {
        // The monitor reads its `quit` only after QEMU's start-up (and preallocation) is done.
        let _ = i.write_all(stdin);
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let d = t.elapsed();
    if out.status.success() {
        Ok(d)
    } else {
        Err(format!(
            "{}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs two whole-process timings interleaved, A B, B A, A B ..., `reps` counted rounds after
/// one warm-up round (page cache, pool pages on the outer host), and returns each side's
/// seconds. On the first failure: which side failed (0 = A, 1 = B) and why.
pub(super) fn interleaved(
    reps: usize,
    mut a: impl FnMut() -> Result<Duration, String>,
    mut b: impl FnMut() -> Result<Duration, String>,
) -> Result<(Vec<f64>, Vec<f64>), (usize, String)> {
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for rep in 0..=reps {
        let mut sides = [0, 1];
        if rep % 2 == 1 {
            sides.reverse();
        }
        for side in sides {
            let d = if side == 0 { a() } else { b() }.map_err(|e| (side, e))?;
            if rep > 0 {
                if side == 0 { &mut ta } else { &mut tb }.push(d.as_secs_f64());
            }
        }
    }
    Ok((ta, tb))
}

/// QEMU with no machine, stopped (`-S`), its monitor on stdin (`quit` ends it), and `-object`
/// last: the memory backend follows.
pub(super) const MONITOR_ARGS: [&str; 9] = [
    "-machine",
    "none",
    "-nodefaults",
    "-display",
    "none",
    "-monitor",
    "stdio",
    "-S",
    "-object",
];

/// QEMU preallocating `mb` MiB of 2M hugetlb memfd itself with `threads` threads: the
/// baseline of `qemu_prealloc` and `qemu_on_numapin`.
pub(super) fn prealloc_cmd(qemu: &Path, mb: u64, threads: usize) -> Command {
    let mut c = Command::new(qemu);
    c.args(MONITOR_ARGS).arg(format!(
        "memory-backend-memfd,id=m,size={mb}M,hugetlb=on,hugetlbsize=2M,prealloc=on,prealloc-threads={threads}"
    ));
    c
}

/// The row, or `None` (with a progress line saying why) when QEMU is not installed or a run
/// fails.
pub(super) fn prealloc_row(
    numapin: &Path,
    size: u64,
    threads: usize,
    reps: usize,
    progress: &mut dyn FnMut(&str),
) -> Option<Row> {
    let Some(qemu) = which("qemu-system-x86_64") else {
        progress("qemu-system-x86_64 not installed: qemu_prealloc row skipped");
        return None;
    };
    let mb = size / MIB;
    let numapin_cmd = || {
        let mut c = Command::new(numapin);
        c.args([
            "reserve",
            "--size",
            &format!("{mb}MiB"),
            "--page-size",
            "2m",
            "--threads",
        ])
        .arg(threads.to_string());
        c
    };
    let qemu_cmd = || prealloc_cmd(&qemu, mb, threads);
    progress(&format!("qemu_prealloc: {reps} interleaved runs of each"));
    let (n, b) = match interleaved(
        reps,
        || time_process(&mut numapin_cmd(), b""),
        || time_process(&mut qemu_cmd(), b"quit\n"),
    ) {
        Ok(t) => t,
        Err((side, e)) => {
            progress(&format!(
                "qemu_prealloc row skipped: {} failed: {e}",
                if side == 0 { "numapin reserve" } else { "qemu" }
            ));
            return None;
        }
    };
    Some(Row::paired(
        "qemu_prealloc",
        "s",
        &n,
        &b,
        true,
        Some(1.0),
        format!("whole process: `numapin reserve --size {mb}MiB --page-size 2m --threads {threads}` vs `qemu-system-x86_64 -machine none -object memory-backend-memfd,size={mb}M,hugetlb=on,hugetlbsize=2M,prealloc=on,prealloc-threads={threads} -S` quit from its monitor"),
    ))
}
