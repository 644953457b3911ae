//! The warm-pool service end to end: `numapin serve` on a private socket and ledger, clients in
//! processes of their own, SIGKILLs of both, the ledger exact and the pool's pages accounted
//! for afterwards, and memory zeroed before it is handed out again.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::os::fd::{AsFd, AsRawFd};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{free_pages, is_root, need, pools_exclusive, read_u64, TempPath};
use numapin::pool::{PoolClient, PoolError, RefusalKind, Request};
use numapin::{Ledger, PageSize};

const MIB: u64 = 1 << 20;

/// A private directory under /dev/shm, removed on drop.
struct TempDir(std::path::PathBuf);
impl TempDir {
    fn new(name: &str) -> TempDir {
        let p = TempPath::new(name);
        let d = p.0.clone();
        drop(p);
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Client processes, SIGKILLed when dropped (also when a test fails: a client left holding
/// memory would hold hugepages forever).
struct Clients(Vec<Child>);
impl Drop for Clients {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
impl std::ops::Deref for Clients {
    type Target = Vec<Child>;
    fn deref(&self) -> &Vec<Child> {
        &self.0
    }
}
impl std::ops::DerefMut for Clients {
    fn deref_mut(&mut self) -> &mut Vec<Child> {
        &mut self.0
    }
}

/// 2M pages of node 0 in use (allocated to some file or mapping).
fn used_pages() -> u64 {
    read_u64(format!("{}/nr_hugepages", common::pool_dir(0, 2048))) - free_pages(0, 2048)
}

struct Serve {
    child: Child,
    socket: std::path::PathBuf,
}

impl Serve {
    fn start(dir: &std::path::Path, ledger: &std::path::Path, pools: &[&str]) -> Serve {
        let socket = dir.join("run").join("serve.sock");
        let mut c = Command::new(env!("CARGO_BIN_EXE_numapin"));
        c.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--ledger")
            .arg(ledger);
        for p in pools {
            c.args(["--pool", p]);
        }
        c.arg("--stats-file").arg(dir.join("stats.json"));
        let child = c.stderr(Stdio::inherit()).spawn().unwrap();
        let t0 = Instant::now();
        while !socket.exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "the service never listened"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Serve { child, socket }
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        self.kill();
    }
}

/// (2M bytes reserved on node 0, VMs by name with their 2M bytes), after reaping.
fn ledger_state(path: &std::path::Path) -> (u64, Vec<(String, u64)>) {
    let l = Ledger::open(path).unwrap();
    let s = l.snapshot().unwrap();
    let reserved = s.nodes[0]
        .classes
        .iter()
        .find(|c| c.page_size_bytes == 2 * MIB)
        .unwrap()
        .reserved_bytes;
    let vms = s
        .vms
        .iter()
        .map(|v| (v.name.clone(), v.reservations.iter().map(|r| r.bytes).sum()))
        .collect();
    (reserved, vms)
}

fn warm_bytes(vms: &[(String, u64)]) -> u64 {
    vms.iter()
        .filter(|(n, _)| n == numapin::pool::WARM_NAME)
        .map(|v| v.1)
        .sum()
}

/// Polls `f` until it returns true (60 s at most: the service refills and zeroes at idle
/// priority, which a busy machine starves); panics with `what` otherwise.
fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What every service test needs: root, the hugepage pools to itself, `pages` free 2M pages on
/// node 0. `None` (the reason printed; a failure under `NUMAPIN_REQUIRE_PRIVILEGED`) if not.
fn service_test(pages: u64) -> Option<common::PoolLock> {
    if !need(
        is_root(),
        "the service test needs root (hugepages, /proc of every process)",
    ) {
        return None;
    }
    let lock = pools_exclusive();
    need(
        free_pages(0, 2048) >= pages,
        &format!("node 0 needs {pages} free 2M hugepages"),
    )
    .then_some(lock)
}

/// A client process: this test binary re-run as `client_role` with its task in the
/// environment. It prints `READY <source> <notes>` once it holds the memory.
fn client(
    socket: &std::path::Path,
    ledger: &std::path::Path,
    vm: &str,
    size: u64,
    action: &str,
) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "client_role", "--nocapture", "--test-threads=1"])
        .env("POOL_ROLE", action)
        .env("POOL_SOCKET", socket)
        .env("POOL_LEDGER", ledger)
        .env("POOL_VM", vm)
        .env("POOL_SIZE", size.to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn wait_ready(c: &mut Child) -> String {
    let out = c.stdout.take().unwrap();
    let mut r = BufReader::new(out);
    let mut line = String::new();
    let mut seen = String::new();
    loop {
        seen.push_str(&line);
        line.clear();
        if r.read_line(&mut line).unwrap() == 0 {
            panic!(
                "the client exited before READY: {:?}; it said {seen:?}",
                c.wait()
            );
        }
        // libtest may print "test client_role ... " on the same line first.
        if let Some(rest) = line.split_once("READY ").map(|x| x.1) {
            let rest = rest.trim().to_string();
            // Keep draining its output so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in r.lines() {});
            return rest;
        }
    }
}

/// The client side (runs only when re-executed by the tests above).
#[test]
fn client_role() {
    let Ok(role) = std::env::var("POOL_ROLE") else {
        return; // a normal test run: nothing to do
    };
    let env = |k: &str| std::env::var(k).unwrap();
    let ledger = Arc::new(Ledger::open(env("POOL_LEDGER")).unwrap());
    let client = PoolClient::new(env("POOL_SOCKET"), ledger);
    let mut req = Request::new(
        env("POOL_VM"),
        env("POOL_SIZE").parse().unwrap(),
        PageSize::Huge2M,
    );
    req.nodes = vec![0];
    let mut served = match client.request(&req) {
        Ok(s) => s,
        Err(e) => {
            // Expected when the tests kill the service mid-request: a typed error, no panic.
            println!("ERROR {e}");
            return;
        }
    };
    if role == "reopen" {
        // As a VMM given `mem-path=/proc/self/fd/N` does: open the memory file anew (a
        // description without the service's lock), then let go of the one received.
        let fd = served.reservation.as_fd().unwrap().as_raw_fd();
        let again = std::fs::File::open(format!("/proc/self/fd/{fd}")).unwrap();
        drop(served);
        println!("READY reopened");
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        drop(again);
        return;
    }
    let r = &mut served.reservation;
    match role.as_str() {
        "fill" => r.as_mut_slice().fill(0xA5),
        "scan" => {
            let nonzero = r.as_slice().iter().filter(|&&b| b != 0).count();
            println!("NONZERO {nonzero}");
        }
        _ => {}
    }
    println!(
        "READY {:?} {}",
        served.grant.source,
        served.grant.notes.join(";")
    );
    match role.as_str() {
        "hold" => loop {
            std::thread::sleep(Duration::from_secs(1));
        },
        // Until the test closes our stdin; then exit normally (the reservation drops).
        "wait" => {
            let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        }
        _ => {}
    }
}

#[test]
fn sixteen_racing_clients_kills_of_both_sides_ledger_exact_nothing_leaked() {
    let Some(_lock) = service_test(512) else {
        return;
    };
    let dir = TempDir::new("pool");
    let ledger = dir.0.join("ledger");
    let used0 = used_pages();
    let mut svc = Serve::start(&dir.0, &ledger, &["0:2m:4x16MiB"]);
    eventually("4 warm chunks", || {
        warm_bytes(&ledger_state(&ledger).1) == 64 * MIB
    });

    // 16 clients at once: 4 (or more, with refills) warm, the rest cold; every one served.
    let mut clients = Clients(
        (0..16)
            .map(|i| client(&svc.socket, &ledger, &format!("vm-{i}"), 16 * MIB, "hold"))
            .collect(),
    );
    let sources: Vec<String> = clients.iter_mut().map(wait_ready).collect();
    assert!(sources.iter().any(|s| s.starts_with("Warm")), "{sources:?}");
    let check_exact = |held: usize| {
        eventually("ledger exact and every page accounted for", || {
            let (reserved, vms) = ledger_state(&ledger);
            let vm_bytes: u64 = vms
                .iter()
                .filter(|v| v.0.starts_with("vm-"))
                .map(|v| v.1)
                .sum();
            let each_once = vms.iter().filter(|v| v.0.starts_with("vm-")).count() == held;
            let sum: u64 = vms.iter().map(|v| v.1).sum();
            each_once
                && vm_bytes == held as u64 * 16 * MIB
                && sum == reserved
                && used_pages() - used0 == reserved / (2 * MIB)
        });
    };
    check_exact(16);

    // Kill 8 clients: their charges are reaped, their memory returns to the service.
    for c in clients.iter_mut().step_by(2) {
        c.kill().unwrap();
        c.wait().unwrap();
    }
    check_exact(8);

    // A peer that dies mid-request, one that sends garbage, one of another version: the
    // service goes on.
    for payload in [
        &b"{not json"[..],
        br#"{"version":99,"vm":"x","size":1,"nodes":[],"policy":"bind","page_size":"2m"}"#,
    ] {
        let fd = rustix::net::socket(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            None,
        )
        .unwrap();
        rustix::net::connect(
            &fd,
            &rustix::net::SocketAddrUnix::new(svc.socket.as_path()).unwrap(),
        )
        .unwrap();
        rustix::net::send(fd.as_fd(), payload, rustix::net::SendFlags::empty()).unwrap();
        let mut buf = vec![0u8; 4096];
        let (n, _) =
            rustix::net::recv(fd.as_fd(), &mut buf[..], rustix::net::RecvFlags::empty()).unwrap();
        let text = String::from_utf8_lossy(&buf[..n]);
        assert!(text.contains("refused"), "{text}");
    }
    for _ in 0..4 {
        let mut c = client(&svc.socket, &ledger, "dies", 16 * MIB, "hold");
        std::thread::sleep(Duration::from_millis(5));
        c.kill().unwrap();
        c.wait().unwrap();
    }
    let l = Arc::new(Ledger::open(&ledger).unwrap());
    let e = PoolClient::new(&svc.socket, Arc::clone(&l))
        .request(&Request::new("too-big", 1 << 50, PageSize::Huge2M))
        .unwrap_err();
    assert!(
        matches!(
            e,
            numapin::Error::Pool(PoolError::Refused {
                kind: RefusalKind::Unavailable,
                ..
            })
        ),
        "{e}"
    );
    check_exact(8);

    // Kill the service: clients keep their memory and charges, the warm charge is reaped.
    svc.kill();
    eventually("warm charge reaped, clients' charges kept", || {
        let (reserved, vms) = ledger_state(&ledger);
        reserved == 8 * 16 * MIB && warm_bytes(&vms) == 0 && used_pages() - used0 == 8 * 8
    });
    for c in clients.iter_mut() {
        let _ = c.kill();
        let _ = c.wait();
    }
    eventually("everything back", || {
        ledger_state(&ledger).0 == 0 && used_pages() == used0
    });
}

#[test]
fn memory_is_zeroed_before_anyone_else_gets_it() {
    let Some(_lock) = service_test(64) else {
        return;
    };
    let dir = TempDir::new("pool-zero");
    let ledger = dir.0.join("ledger");
    let used0 = used_pages();
    let svc = Serve::start(&dir.0, &ledger, &["0:2m:1x32MiB"]);
    let stats = || std::fs::read_to_string(dir.0.join("stats.json")).unwrap_or_default();
    eventually("1 warm chunk", || {
        stats().contains(&format!("\"refilled_bytes\":{}", 32 * MIB))
            && warm_bytes(&ledger_state(&ledger).1) == 32 * MIB
    });
    // A fills its memory with a pattern and exits.
    let mut a = client(&svc.socket, &ledger, "a", 32 * MIB, "fill");
    let got = wait_ready(&mut a);
    assert!(got.starts_with("Warm"), "{got}");
    assert!(a.wait().unwrap().success());
    // Its chunk comes back, is zeroed, and (the pool holds one) is the one kept.
    eventually("A's chunk recycled", || {
        let stats = stats();
        stats.contains("\"returned\":1")
            && stats.contains(&format!("\"zeroed_bytes\":{}", 32 * MIB))
            && warm_bytes(&ledger_state(&ledger).1) == 32 * MIB
    });
    // B gets A's chunk and scans every byte.
    let mut b = client(&svc.socket, &ledger, "b", 32 * MIB, "scan");
    let out = b.stdout.take().unwrap();
    let text: Vec<String> = BufReader::new(out).lines().map(Result::unwrap).collect();
    assert!(b.wait().unwrap().success());
    assert!(text.iter().any(|l| l.ends_with("NONZERO 0")), "{text:?}");
    assert!(
        text.iter()
            .any(|l| l.contains("READY Warm") && l.contains("handed out 1 time")),
        "B was not served A's chunk: {text:?}"
    );
    drop(svc);
    eventually("everything back", || {
        ledger_state(&ledger).0 == 0 && used_pages() == used0
    });
}

#[test]
fn memory_held_through_another_description_is_waited_for_with_backoff() {
    let Some(_lock) = service_test(64) else {
        return;
    };
    let dir = TempDir::new("pool-reopen");
    let ledger = dir.0.join("ledger");
    let svc = Serve::start(&dir.0, &ledger, &["0:2m:1x16MiB"]);
    let stats = || -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.0.join("stats.json")).unwrap_or_default())
            .unwrap_or_default()
    };
    eventually("1 warm chunk", || {
        warm_bytes(&ledger_state(&ledger).1) == 16 * MIB
    });
    let mut c = client(&svc.socket, &ledger, "vm-reopen", 16 * MIB, "reopen");
    assert_eq!(wait_ready(&mut c), "reopened");
    // The received description is gone, the memory is not: the service must not take it back,
    // and must not scan /proc every poll (20 ms) meanwhile.
    std::thread::sleep(Duration::from_secs(3));
    let s = stats();
    assert_eq!(s["returned"], 0, "{s}");
    let deferred = s["deferred"].as_u64().unwrap();
    assert!(
        (1..=12).contains(&deferred),
        "{deferred} scans in 3 s (backing off from 50 ms to 2 s: 6 or so, fewer when the \
         machine is busy; every poll: ~150)"
    );
    let (reserved, vms) = ledger_state(&ledger);
    assert!(
        vms.iter().any(|v| v.0 == "vm-reopen" && v.1 == 16 * MIB),
        "still the VM's: {vms:?}"
    );
    assert_eq!(reserved, 32 * MIB, "the held chunk and the refill: {vms:?}");
    // Once the holder lets go, the chunk comes back within the longest back-off.
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    let t0 = Instant::now();
    eventually("the chunk taken back and zeroed", || {
        stats()["zeroed_bytes"] == 16 * MIB
    });
    // Within the longest back-off (2 s) plus the zeroing: seconds, more on a busy machine.
    assert!(t0.elapsed() < Duration::from_secs(15), "{:?}", t0.elapsed());
}

#[test]
fn an_auto_page_size_request_is_served_warm_largest_pages_first() {
    let Some(_lock) = service_test(64) else {
        return;
    };
    let dir = TempDir::new("pool-auto");
    let ledger = dir.0.join("ledger");
    let svc = Serve::start(&dir.0, &ledger, &["0:4k:1x64MiB", "0:2m:1x64MiB"]);
    eventually("both pools warm", || {
        let l = Ledger::open(&ledger).unwrap();
        let s = l.snapshot().unwrap();
        s.vms
            .iter()
            .filter(|v| v.name == numapin::pool::WARM_NAME)
            .flat_map(|v| &v.reservations)
            .map(|r| r.bytes)
            .sum::<u64>()
            == 128 * MIB
    });
    let l = Arc::new(Ledger::open(&ledger).unwrap());
    let client = PoolClient::new(&svc.socket, l);
    let mut req = Request::new("vm-auto", 64 * MIB, PageSize::Auto);
    req.nodes = vec![0];
    let first = client.request(&req).unwrap();
    assert_eq!(first.grant.source, numapin::pool::Source::Warm);
    assert_eq!(
        first.grant.page_size,
        PageSize::Huge2M,
        "the largest pages first"
    );
    assert_eq!(first.reservation.page_size(), PageSize::Huge2M);
    // The 2M chunk is out (its refill may or may not be warm yet): still warm, 4K or 2M.
    let second = client.request(&req).unwrap();
    assert_eq!(second.grant.source, numapin::pool::Source::Warm);
}

/// Samples the ledger and the hugepage pool side by side on a thread until dropped, and
/// remembers every sample in which bytes were in use but not charged: the pool's pages (the
/// same before and after the ledger read, so nothing moved meanwhile) above the reserved
/// bytes of the 2M class, after reaping as any admission would.
///
/// Only where no record's last holder dies: a process that dies holding both a record and its
/// memory file may lose the record's lock before the file (the kernel closes a dead process's
/// files one by one, and may run other work in between), and a reaper can settle the record
/// in that moment (see "Weak points" in docs/pool.md).
struct Sampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Sampler {
    fn start(ledger: &std::path::Path, used0: u64) -> Sampler {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let l = Ledger::open(ledger).unwrap();
        let s = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut n, mut bad) = (0, Vec::new());
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let p1 = used_pages();
                l.reap().unwrap();
                let snap = l.snapshot_no_reap().unwrap();
                let p2 = used_pages();
                let reserved = snap.nodes[0]
                    .classes
                    .iter()
                    .find(|c| c.page_size_bytes == 2 * MIB)
                    .unwrap()
                    .reserved_bytes;
                if p1 == p2 {
                    n += 1;
                    let in_use = (p1 - used0) * 2 * MIB;
                    if reserved < in_use {
                        let vms: Vec<_> = snap.vms.iter().map(|v| v.name.clone()).collect();
                        bad.push(format!(
                            "{} MiB in use, {} MiB charged; records {vms:?}",
                            in_use / MIB,
                            reserved / MIB
                        ));
                    }
                }
                std::thread::sleep(Duration::from_micros(500));
            }
            (n, bad)
        });
        Sampler {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops; (samples taken, samples with memory in use that was not charged).
    fn finish(mut self) -> (usize, Vec<String>) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.take().unwrap().join().unwrap()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

#[test]
fn returned_memory_stays_charged_while_it_is_taken_back_and_zeroed() {
    let Some(_lock) = service_test(256) else {
        return;
    };
    let dir = TempDir::new("pool-return");
    let ledger = dir.0.join("ledger");
    let used0 = used_pages();
    let mut svc = Serve::start(&dir.0, &ledger, &["0:2m:2x128MiB"]);
    let stats = || std::fs::read_to_string(dir.0.join("stats.json")).unwrap_or_default();
    let settled = |held: u64| {
        // Two warm chunks (the pool's target) plus what clients hold, every page charged.
        eventually("the pool settled, every page charged", || {
            let (reserved, vms) = ledger_state(&ledger);
            warm_bytes(&vms) == 256 * MIB
                && reserved == 256 * MIB + held
                && (used_pages() - used0) * 2 * MIB == reserved
        });
    };
    settled(0);
    // `status` shows the pool's memory per node and class: warm, and (none now) being zeroed.
    let status = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .args(["status", "--ledger"])
        .arg(&ledger)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().eq(["0", "2M", "256", "MiB", "0", "B"])),
        "{text}"
    );
    for (round, how) in ["SIGKILL", "exit"].into_iter().enumerate() {
        let mut c = client(&svc.socket, &ledger, "vm-back", 128 * MIB, "wait");
        let got = wait_ready(&mut c);
        assert!(got.starts_with("Warm"), "{got}");
        settled(128 * MIB); // the service refilled behind the hand-out
        let sampler = Sampler::start(&ledger, used0);
        if how == "SIGKILL" {
            c.kill().unwrap();
        } else {
            drop(c.stdin.take()); // the client returns and drops its reservation
        }
        assert!(c.wait().is_ok());
        eventually("the chunk taken back and zeroed", || {
            stats().contains(&format!(
                "\"zeroed_bytes\":{}",
                (round as u64 + 1) * 128 * MIB
            ))
        });
        settled(0);
        let (n, bad) = sampler.finish();
        assert!(n > 10, "only {n} stable samples");
        assert!(
            bad.is_empty(),
            "after a client's {how}, memory was in use but not charged in {} of {n} samples: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }

    // The service dies while a client holds warm memory: the client keeps it and its charge;
    // when the client then exits normally, its charge is released at once (no reaper needed).
    let mut c = client(&svc.socket, &ledger, "vm-orphan", 128 * MIB, "wait");
    assert!(wait_ready(&mut c).starts_with("Warm"));
    svc.kill();
    eventually("the warm charge reaped, the client's kept", || {
        let (reserved, vms) = ledger_state(&ledger);
        reserved == 128 * MIB && warm_bytes(&vms) == 0 && used_pages() - used0 == 64
    });
    drop(c.stdin.take());
    assert!(c.wait().unwrap().success());
    let l = Ledger::open(&ledger).unwrap();
    let left = l.snapshot_no_reap().unwrap();
    assert!(
        left.vms.is_empty(),
        "records left for a reaper: {:?}",
        left.vms
    );
    assert_eq!(used_pages(), used0, "pages left behind");
}

/// A small xorshift generator (seed printed, so a failing round can be replayed).
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[test]
fn random_sigkills_of_clients_and_service_leave_nothing_behind() {
    let Some(_lock) = service_test(256) else {
        return;
    };
    let seed = std::env::var("POOL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("random kills: POOL_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = TempDir::new("pool-chaos");
    let ledger = dir.0.join("ledger");
    let used0 = used_pages();
    let t0 = Instant::now();
    for round in 0..8 {
        // The same socket and ledger every round: a SIGKILLed service leaves a stale socket
        // the next one replaces.
        let mut svc = Serve::start(&dir.0, &ledger, &["0:2m:2x8MiB"]);
        let sampler = Sampler::start(&ledger, used0);
        let mut clients = Clients(Vec::new());
        for i in 0..8 {
            // Warm-sized or not (cold), killed at a random moment or left running.
            let size = if rng.below(2) == 0 { 8 * MIB } else { 4 * MIB };
            clients.push(client(
                &svc.socket,
                &ledger,
                &format!("r{round}-{i}"),
                size,
                "hold",
            ));
            std::thread::sleep(Duration::from_millis(rng.below(15)));
            if rng.below(3) == 0 {
                let k = rng.below(clients.len() as u64) as usize;
                let _ = clients[k].kill();
            }
            if rng.below(16) == 0 {
                svc.kill(); // mid-request for some of them
                svc = Serve::start(&dir.0, &ledger, &["0:2m:2x8MiB"]);
            }
        }
        std::thread::sleep(Duration::from_millis(rng.below(50)));
        if rng.below(2) == 0 {
            svc.kill();
        }
        for c in clients.iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // With the service alive, its warm chunks are all the ledger holds; without, nothing.
        let alive = svc.child.try_wait().unwrap().is_none();
        eventually(&format!("round {round} (seed {seed}) settles"), || {
            let (reserved, vms) = ledger_state(&ledger);
            let warm = warm_bytes(&vms);
            let others = vms
                .iter()
                .filter(|v| v.0 != numapin::pool::WARM_NAME)
                .count();
            others == 0
                && reserved == warm
                && (alive || warm == 0)
                && used_pages() - used0 == reserved / (2 * MIB)
        });
        svc.kill();
        eventually(
            &format!("round {round}: the service's charge reaped"),
            || ledger_state(&ledger).0 == 0 && used_pages() == used0,
        );
        let (n, bad) = sampler.finish();
        eprintln!("round {round}: {n} samples, {} uncharged", bad.len());
        assert!(
            bad.is_empty(),
            "round {round} (seed {seed}): memory in use but not charged in {} of {n} samples: {:?}",
            bad.len(),
            &bad[..bad.len().min(5)]
        );
    }
    assert!(
        t0.elapsed() < Duration::from_secs(120),
        "took {:?}",
        t0.elapsed()
    );
}

#[test]
fn the_planner_counts_warm_memory_as_free() {
    use numapin::snapshot::{Snapshot, VmReservation, VmSnapshot};
    let read = |f: &str| -> Snapshot {
        serde_json::from_str(&std::fs::read_to_string(format!("tests/data/plan/{f}")).unwrap())
            .unwrap()
    };
    let plain: Vec<Snapshot> = ["rack-a.json", "rack-b.json", "rack-c.json"]
        .map(read)
        .into();
    // rack-a with 4 GiB of its free 2M memory on node 0 held warm by `numapin serve`.
    let mut warm = plain.clone();
    let n0 = &mut warm[0].nodes[0];
    let c = n0
        .classes
        .iter_mut()
        .find(|c| c.page_size_bytes == 2 * MIB)
        .unwrap();
    c.reserved_bytes += 4 << 30;
    c.available_bytes -= 4 << 30;
    let node = n0.id;
    warm[0].vms.push(VmSnapshot {
        name: numapin::pool::WARM_NAME.into(),
        pid: 1,
        reservations: vec![VmReservation {
            node,
            page_size_bytes: 2 * MIB,
            bytes: 4 << 30,
        }],
        ..VmSnapshot::default()
    });
    let a = numapin::plan::Fleet::from_snapshots(&plain).unwrap();
    let b = numapin::plan::Fleet::from_snapshots(&warm).unwrap();
    assert_eq!(a, b, "warm memory must plan exactly like free memory");
}

#[test]
fn the_failover_hold_back_sets_the_warm_pools() {
    let exe = env!("CARGO_BIN_EXE_numapin");
    let plan = Command::new(exe)
        .args(["plan", "--holdback", "--json"])
        .args(["rack-a.json", "rack-b.json", "rack-c.json"].map(|f| format!("tests/data/plan/{f}")))
        .output()
        .unwrap();
    assert!(
        plan.status.success(),
        "{}",
        String::from_utf8_lossy(&plan.stderr)
    );
    let file = TempPath::new("plan.json");
    std::fs::write(&file.0, &plan.stdout).unwrap();
    let pools = |host: &str, chunk: &str| {
        let out = Command::new(exe)
            .args([
                "serve",
                "--dry-run",
                "--holdback-chunk",
                chunk,
                "--holdback",
            ])
            .arg(&file.0)
            .env("NUMAPIN_HOSTNAME", host)
            .output()
            .unwrap();
        (
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    // rack-a holds back 4 GiB of 4K on node 0 and 4 GiB of 2M on nodes 0 and 1 (docs/pool.md).
    assert_eq!(
        pools("rack-a", "512MiB").0,
        "node 0 4k 8x512 MiB\nnode 0 2m 8x512 MiB\nnode 1 2m 8x512 MiB\n"
    );
    // rack-c: 40 GiB of 2M and 16 GiB of 1G on node 0; its 2 GiB of 4K per node is less than
    // one chunk and stays cold.
    assert_eq!(
        pools("rack-c", "4GiB").0,
        "node 0 2m 10x4 GiB\nnode 0 1g 4x4 GiB\n"
    );
    let (out, err) = pools("elsewhere", "512MiB");
    assert!(
        out.is_empty() && err.contains("no hold-back for host \"elsewhere\""),
        "{err}"
    );
}
