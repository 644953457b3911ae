//! Liveness that no namespace, pid reuse or zombie leader can fool: the reproductions of a
//! live VMM being reaped (its charge gone while it still holds the memory), each as a test.
//!
//! - a holder in a time namespace (`unshare --time --boottime`: `/proc/PID/stat` start times
//!   are shifted by the *reader's* offset);
//! - `numapin status` in a time namespace, as root and as an unprivileged user in a user
//!   namespace (`unshare -U -r --time`);
//! - a holder whose main thread exited while a worker thread still holds the memory (a zombie
//!   leader).
//!
//! `NUMAPIN_TEST_BIN` runs the command-line reproductions against another `numapin` binary
//! (e.g. an older build, to see them fail there).
#![cfg(feature = "cli")]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{is_root, need, TempPath};
use numapin::ledger::Ledger;
use numapin::NodeId;

const M: u64 = 1 << 20;

fn bin() -> String {
    std::env::var("NUMAPIN_TEST_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_numapin").into())
}

fn time_namespaces() -> bool {
    Command::new("unshare")
        .args(["--time", "--boottime", "1000", "true"])
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `numapin status --json` (which reaps) with `prefix` before it (a namespace wrapper),
/// as the given ledger's user; returns the VMs as (name, reserved bytes).
fn status(prefix: &[&str], ledger: &TempPath) -> Vec<(String, u64)> {
    let b = bin();
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend([b.as_str(), "status", "--json"]);
    let out = Command::new(argv[0])
        .args(&argv[1..])
        .env("NUMAPIN_LEDGER", &ledger.0)
        .output()
        .expect("run numapin status");
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["vms"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vm| {
            let bytes = vm["reservations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["bytes"].as_u64().unwrap())
                .sum();
            (vm["name"].as_str().unwrap().to_string(), bytes)
        })
        .collect()
}

/// The base class's reserved bytes, read without reaping.
fn reserved(l: &Ledger) -> u64 {
    l.classes()
        .unwrap()
        .iter()
        .filter(|c| c.page_size_bytes == 4096)
        .map(|c| c.reserved_bytes)
        .sum()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < Duration::from_secs(30), "timed out: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn reserve(prefix: &[&str], ledger: &TempPath, vm: &str, size: &str, hold: &str) -> Child {
    let b = bin();
    let mut argv: Vec<&str> = prefix.to_vec();
    argv.extend([
        b.as_str(),
        "reserve",
        "--size",
        size,
        "--page-size",
        "4k",
        "--no-lock",
        "--vm",
        vm,
        "--hold-secs",
        hold,
        "--json",
    ]);
    Command::new(argv[0])
        .args(&argv[1..])
        .env("NUMAPIN_LEDGER", &ledger.0)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn numapin reserve")
}

/// The issue's first reproduction: A reserves in a time namespace whose boot time is 1000 s
/// ahead; `status` from the host must still list it, B must not take its slot, and after A
/// exits exactly B's charge is left.
#[test]
fn a_holder_in_a_time_namespace_is_not_reaped() {
    if !need(
        is_root() && time_namespaces(),
        "needs root and time namespaces (unshare --time)",
    ) {
        return;
    }
    let p = TempPath::new("timens-holder");
    let mut a = reserve(
        &["unshare", "--time", "--boottime", "1000"],
        &p,
        "A",
        "128MiB",
        "4",
    );
    wait_for("A charged", || {
        Ledger::open_existing(&p.0).is_ok_and(|l| reserved(&l) >= 128 * M)
    });
    assert_eq!(
        status(&[], &p),
        vec![("A".to_string(), 128 * M)],
        "A is alive and must be listed with its charge"
    );
    // B reserves while A holds: it must get a slot of its own.
    let l = Arc::new(Ledger::open_existing(&p.0).unwrap());
    let mut b = l.vm("B").unwrap();
    b.try_charge(NodeId(0), 4096, 256 * M).unwrap();
    assert!(a.wait().unwrap().success());
    let mut vms = status(&[], &p);
    vms.sort();
    assert_eq!(vms, vec![("B".to_string(), 256 * M)]);
    assert_eq!(
        reserved(&l),
        256 * M,
        "A's exit released exactly A's charge"
    );
    l.audit().unwrap();
    drop(b);
    assert_eq!(reserved(&l), 0);
}

/// `numapin status` run in a time namespace must not reap a host VM.
#[test]
fn status_in_a_time_namespace_reaps_no_host_vm() {
    if !need(
        is_root() && time_namespaces(),
        "needs root and time namespaces (unshare --time)",
    ) {
        return;
    }
    let p = TempPath::new("timens-status");
    let l = Arc::new(Ledger::open(&p.0).unwrap());
    let mut a = l.vm("A").unwrap();
    a.try_charge(NodeId(0), 4096, 64 * M).unwrap();
    let vms = status(&["unshare", "--time", "--boottime", "1000"], &p);
    assert_eq!(vms, vec![("A".to_string(), 64 * M)]);
    assert_eq!(reserved(&l), 64 * M);
    drop(a);
    assert_eq!(reserved(&l), 0);
}

/// The same by an unprivileged user in a user namespace of its own (`unshare -U -r --time`),
/// on that user's own ledger.
#[test]
fn unprivileged_status_in_user_and_time_namespaces_reaps_no_vm() {
    let userns = is_root()
        && Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args([
                "unshare",
                "-U",
                "-r",
                "--time",
                "--boottime",
                "1000",
                "true",
            ])
            .status()
            .is_ok_and(|s| s.success());
    if !need(
        userns,
        "needs root (to become nobody), setpriv, and unprivileged user + time namespaces",
    ) {
        return;
    }
    let p = TempPath::new("userns-status");
    let nobody = [
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--",
    ];
    let mut a = reserve(&nobody, &p, "A", "64MiB", "4");
    // The ledger is nobody's: root refuses to map it (the trust model), so ask as nobody.
    wait_for("A charged", || !status(&nobody, &p).is_empty());
    let mut ns = nobody.to_vec();
    ns.extend(["unshare", "-U", "-r", "--time", "--boottime", "1000"]);
    assert_eq!(status(&ns, &p), vec![("A".to_string(), 64 * M)]);
    assert!(a.wait().unwrap().success());
    assert_eq!(status(&nobody, &p), vec![]);
}

/// A VMM whose main thread exited while a worker thread still holds the memory: the leader
/// is a zombie (`Z` in `/proc/PID/stat`) but the process lives, and so must its record.
#[test]
fn a_zombie_leader_with_live_threads_is_not_reaped() {
    let p = TempPath::new("zombie-leader");
    let l = Arc::new(Ledger::open(&p.0).unwrap());
    let go = TempPath::new("zombie-leader-go");
    #[allow(unsafe_code)]
    // SAFETY: fork in a test process: the child only opens the ledger, charges, starts one
    // thread and exits through raw syscalls; it never returns into the test harness.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = std::panic::catch_unwind(|| {
            let l = Arc::new(Ledger::open_existing(&p.0).unwrap());
            let mut z = l.vm("Z").unwrap();
            z.try_charge(NodeId(0), 4096, 32 * M).unwrap();
            let go = go.0.clone();
            std::thread::spawn(move || {
                // The worker holds the record until told to stop, then ends the process.
                let t = Instant::now();
                while !go.exists() && t.elapsed() < Duration::from_secs(30) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                drop(z);
                // SAFETY: ends the whole process; nothing needs to unwind.
                #[allow(unsafe_code)]
                unsafe {
                    libc::_exit(0)
                };
            });
        })
        .map_or(1, |_| 0);
        // SAFETY: SYS_exit ends only the calling (main) thread; the worker keeps running.
        #[allow(unsafe_code)]
        unsafe {
            libc::syscall(libc::SYS_exit, code)
        };
        unreachable!();
    }
    wait_for("Z charged", || reserved(&l) >= 32 * M);
    wait_for("the leader is a zombie", || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
        })
    });
    assert_eq!(l.reap().unwrap(), 0, "a live process was reaped");
    assert_eq!(reserved(&l), 32 * M);
    std::fs::write(&go.0, b"").unwrap();
    let mut st = 0;
    // SAFETY: waits for our own child.
    #[allow(unsafe_code)]
    let r = unsafe { libc::waitpid(pid, &mut st, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(st) && libc::WEXITSTATUS(st) == 0,
        "child status {st}"
    );
    assert_eq!(
        reserved(&l),
        0,
        "the record was released when the worker dropped it"
    );
}
