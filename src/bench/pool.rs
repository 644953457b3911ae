//! The warm-pool rows of `numapin bench` (a `numapin serve` child on a private socket and
//! ledger):
//! - `warm_time_to_ready`: 4 GiB of 2M pages asked of the service and adopted (mapped, every
//!   page's node verified) in this process, vs a cold shared reservation of the same built
//!   here (map, bind, populate, verify), same threads.
//! - `failover_restart`: 8 guests of 512 MiB asked for at once (8 threads): warm pools vs the
//!   same service with no pool (every request a cold reservation).
//! - `rezero_vs_memset`: the service's background zeroing of returned memory (SCHED_IDLE, the
//!   node's CPUs) in GiB/s, vs `memset` of populated memory in this process, same run.
//!
//! The phases run one after the other, not interleaved: a warm pool and a cold reservation of
//! 4 GiB each do not fit the 2M pool together.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Row;
use crate::error::{Error, Result};
use crate::measure::median;
use crate::pool::{PoolClient, Request};
use crate::units::{format_bytes, NodeId, PageSize};
use crate::{Ledger, Reservation};

/// An I/O error of `call` as [`Error::Sys`].
fn io(call: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |source| Error::Sys { call, source }
}

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

struct Serve {
    child: Child,
    socket: PathBuf,
    stats: PathBuf,
}

impl Serve {
    fn start(exe: &Path, dir: &Path, ledger: &Path, pools: &[String]) -> Result<Serve> {
        let socket = dir.join("serve.sock");
        let stats = dir.join("stats.json");
        let _ = std::fs::remove_file(&stats);
        let mut c = Command::new(exe);
        c.arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--ledger")
            .arg(ledger);
        for p in pools {
            c.args(["--pool", p]);
        }
        c.arg("--stats-file").arg(&stats);
        let child = c
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(io("spawn numapin serve"))?;
        let mut s = Serve {
            child,
            socket,
            stats,
        };
        s.wait_for(|st| st.is_some(), Duration::from_secs(30))?;
        Ok(s)
    }

    fn stats(&self) -> Option<serde_json::Value> {
        let t = std::fs::read_to_string(&self.stats).ok()?;
        serde_json::from_str(&t).ok()
    }

    fn wait_for(
        &mut self,
        f: impl Fn(Option<serde_json::Value>) -> bool,
        limit: Duration,
    ) -> Result<()> {
        let t0 = Instant::now();
        while !f(self.stats()) {
            if let Some(st) = self.child.try_wait().map_err(io("waitpid"))? {
                return Err(io("numapin serve")(std::io::Error::other(format!(
                    "exited ({st}) before it was ready"
                ))));
            }
            if t0.elapsed() > limit {
                return Err(io("numapin serve")(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "not ready in time",
                )));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn num(v: &Option<serde_json::Value>, k: &str) -> f64 {
    v.as_ref().and_then(|v| v[k].as_f64()).unwrap_or(0.0)
}

/// Bytes of warm memory the ledger holds (the service's records).
fn warm_bytes(ledger: &Ledger) -> u64 {
    ledger.snapshot().map_or(0, |s| {
        s.vms
            .iter()
            .filter(|v| v.name == crate::pool::WARM_NAME)
            .map(|v| v.reserved_bytes())
            .sum()
    })
}

fn wait_warm(ledger: &Ledger, bytes: u64, serve: &mut Serve) -> Result<()> {
    serve.wait_for(|_| warm_bytes(ledger) >= bytes, Duration::from_secs(120))?;
    // The ledger is charged before the chunk is populated and listed: wait for the refills.
    serve.wait_for(
        |s| num(&s, "refilled_bytes") + num(&s, "zeroed_bytes") >= bytes as f64,
        Duration::from_secs(120),
    )
}

/// Asks for `size` bytes and adopts them; returns the seconds, whether it was warm, and the
/// memory (the caller decides when to give it back).
fn request(
    client: &PoolClient,
    size: u64,
    node: NodeId,
) -> Result<(f64, bool, crate::pool::Served)> {
    let mut req = Request::new("bench", size, PageSize::Huge2M);
    req.nodes = vec![node.0];
    let t = Instant::now();
    let served = client.request(&req)?;
    let secs = t.elapsed().as_secs_f64();
    let warm = served.grant.source == crate::pool::Source::Warm;
    Ok((secs, warm, served))
}

/// The three warm-pool rows, or none (with the reason given to `progress`) when node 0's 2M pool
/// cannot hold them. `exe` is the `numapin` executable: the service runs as its `serve`
/// subcommand in a child process, on a private socket and ledger.
///
/// # Errors
/// [`Error::Sys`] if the service cannot be started or does not get ready; the errors of the
/// reservations, the ledger and the pool client.
pub fn pool_rows(
    exe: &Path,
    size: u64,
    threads: usize,
    reps: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Row>> {
    let node = NodeId(0);
    let free = crate::Topology::from_sysfs()?
        .node(node)
        .and_then(|n| n.pool(PageSize::Huge2M))
        .map_or(0, |p| p.free)
        * 2
        * MIB;
    let big = if free >= 4 * GIB + 64 * MIB {
        4 * GIB
    } else {
        size.min(free / 2) / (2 * MIB) * (2 * MIB)
    };
    if big < 64 * MIB {
        progress("pool rows skipped: fewer than 64 MiB free in node 0's 2M pool");
        return Ok(Vec::new());
    }
    if big != 4 * GIB {
        progress(&format!(
            "pool rows: measuring {} instead of 4 GiB (2M pool)",
            format_bytes(big)
        ));
    }
    let dir = std::env::temp_dir().join(format!("numapin-bench-pool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(io("mkdir"))?;
    let ledger_path = PathBuf::from(format!(
        "/dev/shm/numapin-bench-pool-{}",
        std::process::id()
    ));
    let r = (|| -> Result<Vec<Row>> {
        let ledger = Arc::new(Ledger::open(&ledger_path)?);
        let mut rows = Vec::new();

        // warm_time_to_ready (and the service's zeroing of the returned memory).
        let mut serve = Serve::start(exe, &dir, &ledger_path, &[format!("0:2m:1x{big}")])?;
        let client = PoolClient::new(&serve.socket, Arc::clone(&ledger));
        let mut warm = Vec::new();
        for _ in 0..reps {
            wait_warm(&ledger, big, &mut serve)?;
            let (secs, was_warm, served) = request(&client, big, node)?;
            drop(served);
            if was_warm {
                warm.push(secs);
            }
        }
        wait_warm(&ledger, big, &mut serve)?;
        if !warm.is_empty() {
            // The memory handed out above has come back: wait until the service has zeroed
            // it (at idle priority it runs only when nothing else wants the CPUs), so that the
            // row measures that zeroing rather than whatever happened to be done by now.
            serve.wait_for(
                |s| num(&s, "zeroed_bytes") >= big as f64,
                Duration::from_secs(120),
            )?;
        }
        let st = serve.stats();
        let rezero_gib = num(&st, "zeroed_bytes") / GIB as f64;
        let rezero = rezero_gib / num(&st, "zero_cpu_seconds").max(1e-9);
        let rezero_wall = rezero_gib / num(&st, "zero_seconds").max(1e-9);
        let zeroed = num(&st, "zeroed_bytes") as u64;
        drop(serve);
        let mut cold = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let r = Reservation::builder(big)
                .node(node)
                .page_size(PageSize::Huge2M)
                .threads(threads)
                .shared(true)
                .build()?;
            cold.push(t.elapsed().as_secs_f64());
            drop(r);
        }
        if !warm.is_empty() {
            let (w, c) = (median(&warm), median(&cold));
            rows.push(Row {
                metric: "warm_time_to_ready".into(),
                numapin: w,
                baseline: c,
                unit: "s",
                ratio: c / w,
                goal: Some(50.0),
                note: format!(
                    "{} of 2M pages on node {node}: asked of `numapin serve` and adopted here (map, verify every page) vs a cold shared reservation built here ({threads} threads: map, bind, populate, verify); medians of {} and {}",
                    format_bytes(big), warm.len(), cold.len()
                ),
            });
        }

        // rezero_vs_memset: memset of populated memory here, same size class, same run.
        let m = Reservation::builder(512 * MIB)
            .node(node)
            .page_size(PageSize::Huge2M)
            .threads(threads)
            .shared(true)
            .build()?;
        let memset = crate::pool::memset_gib_per_s(m.as_fd().expect("shared"))?;
        drop(m);
        if zeroed > 0 {
            rows.push(Row {
                metric: "rezero_vs_memset".into(),
                numapin: rezero,
                baseline: memset,
                unit: "GiB/s",
                ratio: rezero / memset,
                goal: Some(0.8),
                note: format!(
                    "the service zeroing {} of returned memory in the background (SCHED_IDLE, pinned to node {node}'s CPUs, one thread; GiB per CPU-second of the zeroing thread; wall-clock {rezero_wall:.2} GiB/s, lower when other work had the CPUs) vs memset of 512 MiB of populated 2M pages in this process (best of 2, per CPU-second of this thread)",
                    format_bytes(zeroed)
                ),
            });
        }

        // failover_restart: 8 x 512 MiB at once, warm vs cold.
        let n = 8usize;
        let each = (big / n as u64 / (2 * MIB)).max(1) * 2 * MIB;
        let at_once = |serve: &Serve| -> Result<(f64, usize)> {
            let client = PoolClient::new(&serve.socket, Arc::clone(&ledger));
            let t = Instant::now();
            type Got = Result<(f64, bool, crate::pool::Served)>;
            let results: Vec<Got> = std::thread::scope(|s| {
                let hs: Vec<_> = (0..n)
                    .map(|_| s.spawn(|| request(&client, each, node)))
                    .collect();
                hs.into_iter()
                    .map(|h| h.join().expect("request thread"))
                    .collect()
            });
            // Every guest's memory held until all are ready, as a failover's restarts hold it.
            let secs = t.elapsed().as_secs_f64();
            let mut warm = 0;
            let mut held = Vec::new();
            for r in results {
                let (_, w, served) = r?;
                warm += usize::from(w);
                held.push(served);
            }
            drop(held);
            Ok((secs, warm))
        };
        let mut serve = Serve::start(exe, &dir, &ledger_path, &[format!("0:2m:{n}x{each}")])?;
        wait_warm(&ledger, each * n as u64, &mut serve)?;
        let (w, warm_n) = at_once(&serve)?;
        drop(serve);
        let serve = Serve::start(exe, &dir, &ledger_path, &[])?;
        let (c, _) = at_once(&serve)?;
        drop(serve);
        rows.push(Row {
            metric: "failover_restart".into(),
            numapin: w,
            baseline: c,
            unit: "s",
            ratio: c / w,
            goal: Some(20.0),
            note: format!(
                "{n} guests of {} (2M, node {node}) asked for at once, until all are adopted: warm pools ({warm_n} of {n} served warm) vs the same service with no pool (cold reservations, the engine's default threads each)",
                format_bytes(each)
            ),
        });
        Ok(rows)
    })();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_file(&ledger_path);
    r
}
