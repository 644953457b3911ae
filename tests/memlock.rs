//! RLIMIT_MEMLOCK: a process without CAP_IPC_LOCK and with a low limit gets a typed error that
//! names the numbers and the remedies, from the library and from the CLI. The restricted
//! process is a child (this test binary re-executed, or the CLI) whose capability bounding set
//! lost CAP_IPC_LOCK before exec and whose limit was lowered, so the test process itself keeps
//! its privileges.

mod common;

use std::os::unix::process::CommandExt;
use std::process::Command;

use numapin::{Error, PageSize, Reservation};

const CHILD_ENV: &str = "NUMAPIN_MEMLOCK_CHILD";
const LIMIT: u64 = 1 << 20;
const CAP_IPC_LOCK: libc::c_ulong = 14;

/// Makes `cmd` exec without CAP_IPC_LOCK and with RLIMIT_MEMLOCK = 1 MiB.
fn restrict(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe
    // functions (prctl, setrlimit) on the child's own state; it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            // Drop CAP_IPC_LOCK from the bounding set: after exec, even root's permitted set
            // lacks it. Unprivileged callers lack the capability already (EPERM is fine).
            libc::prctl(libc::PR_CAPBSET_DROP, CAP_IPC_LOCK, 0, 0, 0);
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

#[test]
fn memlock_limit_is_a_typed_error() {
    if std::env::var_os(CHILD_ENV).is_some() {
        // The restricted child.
        assert!(
            !numapin::process::has_cap_ipc_lock(),
            "CAP_IPC_LOCK was not dropped"
        );
        assert_eq!(numapin::process::memlock_limit(), LIMIT);
        let before = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count();
        let err = Reservation::builder(64 << 20)
            .page_size(PageSize::Base4K)
            .build()
            .unwrap_err();
        match &err {
            Error::MemlockLimit {
                requested, limit, ..
            } => {
                assert_eq!(*requested, 64 << 20);
                assert_eq!(*limit, LIMIT);
            }
            other => panic!("expected MemlockLimit, got {other:?}"),
        }
        let msg = err.to_string();
        for needle in [
            "ulimit -l",
            "LimitMEMLOCK",
            "CAP_IPC_LOCK",
            "64 MiB",
            "1 MiB",
        ] {
            assert!(msg.contains(needle), "{needle:?} missing from: {msg}");
        }
        // Refused before mapping: no new mapping left behind.
        let after = std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .count();
        assert!(after <= before, "mappings leaked: {before} -> {after}");
        // hugetlb pages need no lock, and unlocked base pages need no limit.
        Reservation::builder(8 << 20)
            .page_size(PageSize::Base4K)
            .lock(false)
            .build()
            .expect("unlocked reservation under a low limit");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "memlock_limit_is_a_typed_error",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, "1");
    restrict(&mut cmd);
    let out = cmd.output().expect("run the restricted child");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{text}");
    assert!(text.contains("1 passed"), "child ran no test:\n{text}");
}

#[cfg(feature = "cli")]
#[test]
fn cli_reports_the_memlock_limit() {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_numapin"));
    cmd.args(["reserve", "--size", "64MiB", "--page-size", "4k"]);
    restrict(&mut cmd);
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "reserve succeeded under a 1 MiB memlock limit"
    );
    assert!(err.contains("RLIMIT_MEMLOCK is 1 MiB"), "{err}");
    assert!(err.contains("ulimit -l"), "{err}");
}
