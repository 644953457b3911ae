//! Shared helpers of the integration tests: privileged-test gating and kernel-side readings.
#![allow(dead_code)]

use std::fs::File;
use std::path::Path;

/// Whether CI demands that privileged tests run (`NUMAPIN_REQUIRE_PRIVILEGED=1`).
pub fn require_privileged() -> bool {
    std::env::var("NUMAPIN_REQUIRE_PRIVILEGED").is_ok_and(|v| v == "1")
}

/// Skips (returns false, printing why) when `ok` is false; under
/// `NUMAPIN_REQUIRE_PRIVILEGED=1` panics instead, so that CI never skips silently.
#[must_use]
pub fn need(ok: bool, what: &str) -> bool {
    if ok {
        return true;
    }
    if require_privileged() {
        panic!("NUMAPIN_REQUIRE_PRIVILEGED=1 but this test cannot run: {what}");
    }
    eprintln!("SKIP: {what}");
    false
}

/// Whether this process runs as root.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Reads a number from a sysfs file.
pub fn read_u64(path: impl AsRef<Path>) -> u64 {
    let p = path.as_ref();
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap_or_else(|e| panic!("parse {}: {e}", p.display()))
}

/// The pool directory of a node and page size in KiB (`2048`, `1048576`).
pub fn pool_dir(node: u32, kib: u64) -> String {
    format!("/sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB")
}

/// Free pages in a node's pool (0 when the pool does not exist).
pub fn free_pages(node: u32, kib: u64) -> u64 {
    let p = format!("{}/free_hugepages", pool_dir(node, kib));
    if Path::new(&p).exists() {
        read_u64(p)
    } else {
        0
    }
}

/// A cross-process lock for tests that use hugepage pools. Tests that assert exact pool deltas
/// take it exclusively; tests that only use pages take it shared. Different test binaries and
/// concurrent `cargo test` runs on the same machine (pools are host-wide) serialize through it.
pub struct PoolLock(#[allow(dead_code)] File);

const POOL_LOCK: &str = "/tmp/numapin-test-hugepages.lock";

/// How long a test waits for the pool lock before it fails, naming the last holder: a hung
/// test holding it would otherwise stall every other test until CI's own timeout. Seconds,
/// `$NUMAPIN_TEST_POOL_LOCK_WAIT` or 600.
fn pool_lock_patience() -> std::time::Duration {
    let s = std::env::var("NUMAPIN_TEST_POOL_LOCK_WAIT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(600);
    std::time::Duration::from_secs(s)
}

fn pool_lock(exclusive: bool) -> PoolLock {
    use rustix::fs::FlockOperation as Op;
    use std::os::unix::fs::FileExt;
    let f = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(POOL_LOCK)
        .expect("open the pool lock file");
    let op = if exclusive {
        Op::NonBlockingLockExclusive
    } else {
        Op::NonBlockingLockShared
    };
    let (t0, patience) = (std::time::Instant::now(), pool_lock_patience());
    loop {
        match rustix::fs::flock(&f, op) {
            Ok(()) => break,
            Err(e) if e == rustix::io::Errno::WOULDBLOCK || e == rustix::io::Errno::INTR => {}
            Err(e) => panic!("flock {POOL_LOCK}: {e}"),
        }
        if t0.elapsed() > patience {
            let holder = std::fs::read_to_string(POOL_LOCK)
                .ok()
                .filter(|h| !h.trim().is_empty())
                .unwrap_or_else(|| "a process that did not say".into());
            panic!(
                "waited {patience:?} for the hugepage pool lock {POOL_LOCK}; last taken by {}: a hung test? (`fuser -v {POOL_LOCK}` names the holders)",
                holder.trim()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // Who took it (best effort: shared holders overwrite each other), for the message above.
    let me = format!(
        "pid {} ({}, thread {:?})\n",
        std::process::id(),
        std::env::current_exe()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_default(),
        std::thread::current().name().unwrap_or("?")
    );
    if exclusive {
        let _ = f.set_len(0);
    }
    let _ = f.write_at(me.as_bytes(), 0);
    PoolLock(f)
}

/// Takes the pool lock exclusively (exact pool counts are asserted).
pub fn pools_exclusive() -> PoolLock {
    pool_lock(true)
}

/// Takes the pool lock shared (pages are used, counts not asserted).
pub fn pools_shared() -> PoolLock {
    pool_lock(false)
}

/// A path of the calling test's own under /dev/shm (pid and name in it, so concurrent tests and
/// runs never share one), removed on drop — also when the test fails.
pub struct TempPath(pub std::path::PathBuf);

impl TempPath {
    /// `/dev/shm/numapin-test-PID-N-NAME` (N counts within the process, so that two tests
    /// running at once under one name never share a file), removed first if a crashed run
    /// left it.
    pub fn new(name: &str) -> TempPath {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let p = std::path::PathBuf::from(format!(
            "/dev/shm/numapin-test-{}-{n}-{name}",
            std::process::id()
        ));
        let _ = std::fs::remove_file(&p);
        TempPath(p)
    }
}

impl Drop for TempPath {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// This host's facts with `extra` more free pages in every hugetlb pool, per node and
/// host-wide: a preflight on them passes where the kernel will refuse.
pub fn lying_facts(extra: u64) -> numapin::HostFacts {
    let mut f = numapin::HostFacts::gather(None).expect("host facts");
    for n in &mut f.topology.nodes {
        for p in &mut n.hugepages {
            p.free += extra;
        }
    }
    for p in &mut f.host_pools {
        p.free += extra;
    }
    f
}

/// Accepts a connection from `child` on `listener`; panics (instead of waiting forever) if the
/// child exits first or does not connect within 60 s.
pub fn accept_from(
    listener: &std::os::unix::net::UnixListener,
    child: &mut std::process::Child,
) -> std::os::unix::net::UnixStream {
    listener.set_nonblocking(true).unwrap();
    let t0 = std::time::Instant::now();
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
        if let Some(st) = child.try_wait().unwrap() {
            panic!("the child exited before connecting: {st}");
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(60),
            "the child never connected"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Pool counts are host-wide: a user of the pools that ignores the tests' pool lock (a bench
/// run, a service under test elsewhere) can move them. Such a check returns `Err` from the test
/// body instead of panicking; `retry_pool` runs the body again before failing.
#[allow(unused_macros)]
macro_rules! pool_eq {
    ($a:expr, $b:expr $(,)?) => {
        pool_eq!($a, $b, "pool count")
    };
    ($a:expr, $b:expr, $($m:tt)+) => {{
        let (a, b) = ($a, $b);
        if a != b {
            return Err(format!("{}: {:?}, expected {:?}", format!($($m)+), a, b));
        }
    }};
}

/// Runs a test body; a pool-count mismatch (see `pool_eq!`) gets up to four more runs, a
/// second apart (a benchmark of another user can churn the pool for a while). In CI nothing
/// else uses the pools, so the first run decides there.
pub fn retry_pool(name: &str, body: impl Fn() -> Result<(), String>) {
    const RUNS: u32 = 5;
    for attempt in 1..=RUNS {
        match body() {
            Ok(()) => return,
            Err(e) if attempt < RUNS => {
                eprintln!("{name}: {e}; the pool moved, run {} of {RUNS}", attempt + 1);
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            Err(e) => panic!("{name}: {e} (in each of {RUNS} runs)"),
        }
    }
}
#[allow(unused_imports)]
pub(crate) use pool_eq;
