//! `numapin run`: the VMM is exec'ed on a sealed memfd, sees `{fd}`/`{path}`/`{size}` and the
//! NUMAPIN_* variables, holds the ledger charge exactly while it runs (even though nothing of
//! numapin is left), gets signals directly, and its exit status is the command's.
#![cfg(feature = "cli")]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{free_pages, need, pool_eq, pools_exclusive, retry_pool, TempPath};
use numapin::Ledger;

fn run(ledger: &std::path::Path, vm: &str, size: &str, cmd: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_numapin"));
    c.args([
        "run",
        "--quiet",
        "--size",
        size,
        "--page-size",
        "2m",
        "--node",
        "0",
    ])
    .args(["--vm", vm, "--ledger"])
    .arg(ledger)
    .arg("--")
    .args(cmd);
    c
}

/// Reserved bytes in the 2M class of node 0 and the VMs, after reaping dead owners.
fn ledger_state(path: &std::path::Path) -> (u64, Vec<(String, u32)>) {
    let l = Ledger::open(path).unwrap();
    let s = l.snapshot().unwrap();
    let reserved = s.nodes[0]
        .classes
        .iter()
        .find(|c| c.page_size_bytes == 2 << 20)
        .unwrap()
        .reserved_bytes;
    (
        reserved,
        s.vms.iter().map(|v| (v.name.clone(), v.pid)).collect(),
    )
}

#[test]
fn the_command_gets_the_memory_and_its_exit_status_is_returned() {
    retry_pool(
        "the_command_gets_the_memory_and_its_exit_status_is_returned",
        the_command_gets_the_memory_and_its_exit_status_is_returned_body,
    );
}

fn the_command_gets_the_memory_and_its_exit_status_is_returned_body() -> Result<(), String> {
    let _lock = pools_exclusive();
    let before = free_pages(0, 2048);
    if !need(before >= 16, "node 0 needs 16 free 2M hugepages") {
        return Ok(());
    }
    let ledger = TempPath::new("run-ledger");
    let script = "echo \"fd={fd} path={path} size={size}\"; \
                  echo \"env $NUMAPIN_FD $NUMAPIN_PATH $NUMAPIN_SIZE $NUMAPIN_PAGE_SIZE\"; \
                  readlink /proc/self/fd/$NUMAPIN_FD; \
                  cat /sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages; \
                  exit 7";
    let out = run(&ledger.0, "run-status", "32MiB", &["sh", "-c", script])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(7),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<&str> = text.lines().collect();
    let fd: i32 = lines[1].split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        lines[0],
        format!("fd={fd} path=/proc/self/fd/{fd} size={}", 32 << 20)
    );
    assert_eq!(
        lines[1],
        format!("env {fd} /proc/self/fd/{fd} {} 2m", 32 << 20)
    );
    assert!(lines[2].starts_with("/memfd:numapin"), "{}", lines[2]);
    pool_eq!(
        lines[3].parse::<u64>().unwrap(),
        before - 16,
        "the command ran with the pages reserved"
    );
    pool_eq!(free_pages(0, 2048), before, "freed when the command exited");
    assert_eq!(
        ledger_state(&ledger.0),
        (0, vec![]),
        "the charge was settled"
    );
    Ok(())
}

/// The ledger charge lives exactly as long as the command: visible under the command's pid
/// while it runs (nothing of numapin is left to hold it), gone once it was killed — by a
/// signal that reached it directly (the exit status says so).
#[test]
fn the_charge_lives_as_long_as_the_command_and_signals_reach_it() {
    retry_pool(
        "the_charge_lives_as_long_as_the_command_and_signals_reach_it",
        the_charge_lives_as_long_as_the_command_and_signals_reach_it_body,
    );
}

fn the_charge_lives_as_long_as_the_command_and_signals_reach_it_body() -> Result<(), String> {
    let _lock = pools_exclusive();
    let before = free_pages(0, 2048);
    if !need(before >= 16, "node 0 needs 16 free 2M hugepages") {
        return Ok(());
    }
    let ledger = TempPath::new("run-ledger-kill");
    let mut child = run(&ledger.0, "run-kill", "32MiB", &["sleep", "60"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id();
    // Wait until the exec happened (the pid runs `sleep`).
    let t0 = Instant::now();
    while std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default() != "sleep\n" {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "sleep never started"
        );
        assert!(child.try_wait().unwrap().is_none(), "numapin run exited");
        std::thread::sleep(Duration::from_millis(10));
    }
    let held = free_pages(0, 2048);
    let (reserved, vms) = ledger_state(&ledger.0);
    assert_eq!(reserved, 32 << 20, "charged while the command runs");
    assert_eq!(vms, vec![("run-kill".to_string(), pid)]);
    // SIGTERM goes to the pid `numapin run` was started as: the VMM itself.
    // SAFETY: kill(2) on our own child's pid, which has not been waited for (still ours).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGTERM) }, 0);
    let st = child.wait().unwrap();
    assert_eq!(st.signal(), Some(libc::SIGTERM), "{st}");
    pool_eq!(held, before - 16, "free 2M pages while the command ran");
    pool_eq!(free_pages(0, 2048), before);
    assert_eq!(ledger_state(&ledger.0), (0, vec![]), "reaped after it died");
    Ok(())
}

#[test]
fn a_command_that_cannot_run_releases_everything() {
    retry_pool(
        "a_command_that_cannot_run_releases_everything",
        a_command_that_cannot_run_releases_everything_body,
    );
}

fn a_command_that_cannot_run_releases_everything_body() -> Result<(), String> {
    let _lock = pools_exclusive();
    let before = free_pages(0, 2048);
    if !need(before >= 16, "node 0 needs 16 free 2M hugepages") {
        return Ok(());
    }
    let ledger = TempPath::new("run-ledger-missing");
    let out = run(&ledger.0, "run-missing", "32MiB", &["/nonexistent/vmm"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(127));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot run /nonexistent/vmm"), "{err}");
    pool_eq!(free_pages(0, 2048), before);
    let l = Ledger::open(&ledger.0).unwrap();
    assert!(
        l.snapshot_no_reap().unwrap().vms.is_empty(),
        "refunded, not reaped"
    );
    Ok(())
}

/// "As long as the process that holds the memory": a child the VMM leaves behind holds the
/// memfd and the record's lock descriptor, so after the VMM itself exited the memory stays
/// reserved and charged until that child exits too — then both go.
#[test]
fn a_child_left_holding_the_memory_keeps_the_charge() {
    retry_pool(
        "a_child_left_holding_the_memory_keeps_the_charge",
        a_child_left_holding_the_memory_keeps_the_charge_body,
    );
}

fn a_child_left_holding_the_memory_keeps_the_charge_body() -> Result<(), String> {
    let _lock = pools_exclusive();
    let before = free_pages(0, 2048);
    if !need(before >= 16, "node 0 needs 16 free 2M hugepages") {
        return Ok(());
    }
    let ledger = TempPath::new("run-ledger-orphan");
    let out = run(
        &ledger.0,
        "run-orphan",
        "32MiB",
        &["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let orphan: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let kill = |sig| {
        // SAFETY: kill(2) on the sleep this test started; a stale pid could at worst hit
        // nothing (ESRCH) within the test's short life.
        unsafe { libc::kill(orphan, sig) }
    };
    let (reserved, vms) = ledger_state(&ledger.0);
    let held = (free_pages(0, 2048), reserved, vms.len());
    kill(libc::SIGKILL);
    // The orphan is not our child: wait until it is gone.
    let t0 = Instant::now();
    while std::path::Path::new(&format!("/proc/{orphan}")).exists()
        && std::fs::read_to_string(format!("/proc/{orphan}/stat"))
            .is_ok_and(|s| !s.contains(") Z "))
    {
        assert!(t0.elapsed() < Duration::from_secs(10), "sleep did not die");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(100));
    pool_eq!(
        held,
        (before - 16, 32 << 20, 1),
        "after the VMM exited, its child still holds the memory and the charge"
    );
    pool_eq!(free_pages(0, 2048), before, "freed with the last holder");
    assert_eq!(
        ledger_state(&ledger.0),
        (0, vec![]),
        "and the charge reaped"
    );
    Ok(())
}
