//! The ledger shared by real processes: random charges and releases with SIGKILL and SIGSTOP
//! at random moments, exact admission up to the limit across processes, a killed holder's
//! charges freed exactly, and `numapin status` seeing the same ledger as the VMMs.
//!
//! The test binary is its own worker: `worker` runs a role when `NUMAPIN_LEDGER_WORKER` is set.

mod common;
use common::TempPath;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::NodeId;

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

fn classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec {
            headroom_ppm: 0,
            ..ClassSpec::new(NodeId(0), M2, 64 * M2)
        },
        ClassSpec {
            headroom_ppm: 0,
            ..ClassSpec::new(NodeId(0), G1, 4 * G1)
        },
    ]
}

fn create(p: &Path) -> Arc<Ledger> {
    let cfg = LedgerConfig {
        slots: 64,
        ..LedgerConfig::default()
    };
    Arc::new(Ledger::create(p, &classes(), &cfg).unwrap())
}

fn reserved(l: &Ledger) -> Vec<u64> {
    l.classes()
        .unwrap()
        .iter()
        .map(|c| c.reserved_bytes)
        .collect()
}

// ---- the worker side ----------------------------------------------------------------------

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn wait_for_eof() {
    let mut s = String::new();
    while std::io::stdin()
        .read_line(&mut s)
        .map(|n| n > 0)
        .unwrap_or(false)
    {}
}

/// Roles: `stress OPS` (random charges/releases, then print the charges and hold),
/// `hold CLASS BYTES` (charge, print, hold), `race CLASS GRAIN` (charge grains until refused,
/// print how many, hold).
#[test]
fn worker() {
    let Ok(role) = std::env::var("NUMAPIN_LEDGER_WORKER") else {
        return;
    };
    let path = std::env::var("NUMAPIN_LEDGER").unwrap();
    let l = Arc::new(Ledger::open_existing(&path).unwrap());
    let args: Vec<u64> = role
        .split_whitespace()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let mut vm = l.vm(&format!("w{}", std::process::id())).unwrap();
    let grains = [M2, G1 / 4];
    let mut out = std::io::stdout().lock();
    match role.split_whitespace().next().unwrap() {
        "stress" => {
            let mut rng =
                Rng(u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
            writeln!(out, "STARTED").unwrap();
            out.flush().unwrap();
            for _ in 0..args[0] {
                let c = (rng.next() % 2) as usize;
                let n = 1 + rng.next() % 4;
                let have = vm.charged(NodeId(0), classes()[c].page_size_bytes);
                if rng.next() % 2 == 0 || have < n * grains[c] {
                    let _ = vm.try_charge_class(c, n * grains[c]);
                } else {
                    vm.release_class(c, n * grains[c]).unwrap();
                }
            }
        }
        "hold" => vm.try_charge_class(args[0] as usize, args[1]).unwrap(),
        "race" => {
            let mut n = 0;
            writeln!(out, "STARTED").unwrap();
            out.flush().unwrap();
            // Start together: wait for the parent's go line.
            let mut go = String::new();
            std::io::stdin().read_line(&mut go).unwrap();
            while vm.try_charge_class(args[0] as usize, args[1]).is_ok() {
                n += 1;
            }
            writeln!(out, "COUNT {n}").unwrap();
        }
        r => panic!("unknown role {r}"),
    }
    let c0 = vm.charged(NodeId(0), M2);
    let c1 = vm.charged(NodeId(0), G1);
    writeln!(out, "DONE {c0} {c1}").unwrap();
    out.flush().unwrap();
    drop(out);
    wait_for_eof();
}

// ---- the parent side ----------------------------------------------------------------------

struct Worker {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Worker {
    fn spawn(path: &Path, role: &str) -> Worker {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["worker", "--exact", "--nocapture", "--test-threads=1", "-q"])
            .env("NUMAPIN_LEDGER_WORKER", role)
            .env("NUMAPIN_LEDGER", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap());
        Worker { child, out }
    }

    /// The next line starting with `prefix` (the test harness prints its own lines too).
    fn line(&mut self, prefix: &str) -> Option<String> {
        let mut s = String::new();
        loop {
            s.clear();
            if self.out.read_line(&mut s).ok()? == 0 {
                return None;
            }
            if let Some(rest) = s.trim().strip_prefix(prefix) {
                return Some(rest.trim().to_string());
            }
        }
    }

    fn done(&mut self) -> [u64; 2] {
        let l = self.line("DONE").expect("worker ended without DONE");
        let v: Vec<u64> = l.split_whitespace().map(|x| x.parse().unwrap()).collect();
        [v[0], v[1]]
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig}");
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Closes stdin: the worker drops its charges and exits.
    fn finish(mut self) {
        drop(self.child.stdin.take());
        assert!(self.child.wait().unwrap().success());
    }
}

#[test]
fn random_kills_leave_exactly_the_survivors_charges() {
    let p = TempPath::new("stress");
    let l = create(&p.0);
    let limits: Vec<u64> = classes().iter().map(|c| c.limit_bytes()).collect();
    let mut rng = Rng(0x1234_5678_9abc_def1 ^ u64::from(std::process::id()));
    let rounds: u32 = std::env::var("NUMAPIN_LEDGER_STRESS_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(8);
    for round in 0..rounds {
        let n = 6;
        let mut ws: Vec<Worker> = (0..n)
            .map(|_| Worker::spawn(&p.0, &format!("stress {}", 2000 + rng.next() % 20000)))
            .collect();
        for w in &mut ws {
            assert!(w.line("STARTED").is_some());
        }
        // Kill some at random moments (some first frozen with SIGSTOP, wherever they are),
        // sampling the limit meanwhile.
        let mut survivors = Vec::new();
        let mut killed = 0;
        for w in ws {
            std::thread::sleep(Duration::from_micros(rng.next() % 3000));
            for (r, lim) in reserved(&l).iter().zip(&limits) {
                assert!(r <= lim, "round {round}: {r} over limit {lim}");
            }
            match rng.next() % 3 {
                0 => {
                    w.kill();
                    killed += 1;
                }
                1 => {
                    w.signal("STOP");
                    // A frozen process never blocks anyone: charge and release meanwhile.
                    let mut me = l.vm("parent").unwrap();
                    let t = Instant::now();
                    for _ in 0..100 {
                        if me.try_charge_class(0, M2).is_ok() {
                            me.release_class(0, M2).unwrap();
                        }
                    }
                    assert!(t.elapsed() < Duration::from_secs(5));
                    drop(me);
                    w.kill(); // SIGKILL works on a stopped process
                    killed += 1;
                }
                _ => survivors.push(w),
            }
        }
        let mut expect = [0u64; 2];
        let mut held = Vec::new();
        for mut w in survivors {
            let d = w.done();
            expect[0] += d[0];
            expect[1] += d[1];
            held.push(w);
        }
        // Reap the dead (each killed worker's charges), then the ledger is exactly the
        // survivors' charges.
        let reaped = l.reap().unwrap();
        assert!(reaped <= killed, "reaped {reaped} records, killed {killed}");
        assert_eq!(reserved(&l), expect.to_vec(), "round {round}");
        l.audit().unwrap();
        let snap = l.snapshot().unwrap();
        assert_eq!(snap.vms.len(), held.len(), "round {round}: {:?}", snap.vms);
        for w in held {
            w.finish();
        }
        assert_eq!(
            reserved(&l),
            vec![0, 0],
            "round {round}: after survivors exited"
        );
        assert!(l.snapshot().unwrap().vms.is_empty());
    }
}

#[test]
fn racing_processes_are_admitted_exactly_up_to_the_limit() {
    let p = TempPath::new("race");
    let l = create(&p.0);
    for _ in 0..3 {
        let mut ws: Vec<Worker> = (0..4)
            .map(|_| Worker::spawn(&p.0, &format!("race 0 {}", 3 * M2)))
            .collect();
        for w in &mut ws {
            assert!(w.line("STARTED").is_some());
        }
        for w in &mut ws {
            writeln!(w.child.stdin.as_mut().unwrap(), "go").unwrap();
        }
        let mut total = 0;
        for w in &mut ws {
            total += w.line("COUNT").unwrap().parse::<u64>().unwrap();
            w.done();
        }
        // 64 pages, grains of 3: 21 grains fit, and all of them are admitted.
        assert_eq!(total, 21);
        assert_eq!(reserved(&l)[0], 63 * M2);
        for w in ws {
            w.finish();
        }
        assert_eq!(reserved(&l), vec![0, 0]);
    }
}

#[test]
fn sigkill_frees_exactly_the_holders_charges_and_status_agrees() {
    let p = TempPath::new("kill");
    let l = create(&p.0);
    let mut a = Worker::spawn(&p.0, &format!("hold 0 {}", 10 * M2));
    let mut b = Worker::spawn(&p.0, &format!("hold 1 {G1}"));
    assert_eq!(a.done(), [10 * M2, 0]);
    assert_eq!(b.done(), [0, G1]);
    assert_eq!(reserved(&l), vec![10 * M2, G1]);
    // `numapin status --json` sees the same ledger as the two VMM processes.
    let snap = status_json(&p.0);
    let vms = snap["vms"].as_array().unwrap();
    assert_eq!(vms.len(), 2, "{snap}");
    let pids: Vec<u64> = vms.iter().map(|v| v["pid"].as_u64().unwrap()).collect();
    assert!(pids.contains(&u64::from(a.child.id())) && pids.contains(&u64::from(b.child.id())));
    let reserved_json: Vec<u64> = snap["nodes"][0]["classes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["reserved_bytes"].as_u64().unwrap())
        .collect();
    assert_eq!(reserved_json, vec![10 * M2, G1]);
    // SIGKILL a: exactly its charges go, b's stay.
    a.kill();
    let snap = status_json(&p.0);
    assert_eq!(snap["vms"].as_array().unwrap().len(), 1, "{snap}");
    assert_eq!(reserved(&l), vec![0, G1]);
    l.audit().unwrap();
    b.finish();
    assert_eq!(reserved(&l), vec![0, 0]);
}

fn status_json(p: &Path) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .args(["status", "--json", "--ledger"])
        .arg(p)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}
