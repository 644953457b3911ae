//! N+1 (and N+2 on small fleets) over synthetic fleets of growing size, with timings.
//!
//! `cargo run --release --example plan_scale -- [--vms N] [--max-ms MS] [--headroom] [HOSTS...]`
//!
//! `... -- --write DIR HOSTS` writes the synthetic fleet of HOSTS hosts as one
//! `numapin status --json` file per host into DIR instead (for timing `numapin plan` end to
//! end; see docs/planning.md).
//! (default 50 VMs per host,
//! 100 1000 10000 hosts; about 100 VMs per host fill the fleet to about 90%). Each size
//! prints the verdict, the scenario count and min/median wall time over several runs; the
//! machine may be shared, so read the minimum. `--max-ms` exits 1 when the fastest N+1 run of
//! any size took longer.

use std::time::{Duration, Instant};

use numapin::plan::failover::{check, Budget, ScenarioOutcome};
use numapin::plan::headroom::headroom;
use numapin::plan::sim::synthetic_fleet;

fn stats(mut t: Vec<Duration>) -> (Duration, Duration) {
    t.sort();
    (t[0], t[t.len() / 2])
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut vms = 50;
    let mut max_ms: Option<u128> = None;
    let mut with_headroom = false;
    let mut sizes = Vec::new();
    let mut write: Option<String> = None;
    let mut i = 0;
    while i < args.len() {
        if args[i] == "--vms" {
            vms = args.get(i + 1).and_then(|v| v.parse().ok()).unwrap_or(vms);
            i += 1;
        } else if args[i] == "--write" {
            write = args.get(i + 1).cloned();
            i += 1;
        } else if args[i] == "--headroom" {
            with_headroom = true;
        } else if args[i] == "--max-ms" {
            max_ms = args.get(i + 1).and_then(|v| v.parse().ok());
            i += 1;
        } else if let Ok(h) = args[i].parse() {
            sizes.push(h);
        }
        i += 1;
    }
    let sizes = if sizes.is_empty() {
        vec![100, 1000, 10_000]
    } else {
        sizes
    };
    if let Some(dir) = write {
        std::fs::create_dir_all(&dir).expect("create the directory");
        for &hosts in &sizes {
            for s in synthetic_fleet(hosts, vms, 42).snapshots() {
                let text = serde_json::to_string(&s).expect("serialize");
                std::fs::write(format!("{dir}/{}.json", s.host), text).expect("write");
            }
        }
        return;
    }
    let budget = Budget::default();
    println!(
        "{:>7} {:>8} {:>2} {:>9} {:>11} {:>12} {:>12} {:>5}",
        "hosts", "VMs", "k", "scenarios", "verdict", "min", "median", "runs"
    );
    for &hosts in &sizes {
        let t0 = Instant::now();
        let fleet = synthetic_fleet(hosts, vms, 42);
        let build = t0.elapsed();
        let ks: &[usize] = if hosts <= 100 { &[1, 2] } else { &[1] };
        for &k in ks {
            let runs = if hosts >= 10_000 { 3 } else { 7 };
            let mut times = Vec::new();
            let mut last = None;
            for _ in 0..runs {
                let t = Instant::now();
                let r = check(&fleet, k, &budget);
                times.push(t.elapsed());
                last = Some(r);
            }
            let r = last.expect("at least one run");
            let mut kinds = std::collections::BTreeMap::<String, usize>::new();
            for s in &r.scenarios {
                let kind = match &s.outcome {
                    ScenarioOutcome::Guaranteed { method, .. } => format!("guaranteed/{method:?}"),
                    ScenarioOutcome::Impossible { proof } => {
                        let p = format!("{proof:?}");
                        format!("impossible/{}", p.split([' ', '{']).next().unwrap_or(""))
                    }
                    ScenarioOutcome::NotProven { .. } => "not-proven".to_string(),
                };
                *kinds.entry(kind).or_default() += 1;
            }
            let (min, med) = stats(times);
            println!(
                "{:>7} {:>8} {:>2} {:>9} {:>11} {:>12?} {:>12?} {:>5}",
                hosts,
                fleet.vms().len(),
                k,
                r.scenarios.len(),
                r.verdict.to_string(),
                min,
                med,
                runs
            );
            println!("        {kinds:?}");
            if let (Some(limit), 1) = (max_ms, k) {
                if min.as_millis() > limit {
                    eprintln!("N+1 over {hosts} hosts took {min:?} at best, over {limit} ms");
                    std::process::exit(1);
                }
            }
        }
        eprintln!("  (fleet of {hosts} hosts built in {build:?})");
        if with_headroom {
            let t = Instant::now();
            let h = headroom(&fleet, 2 << 20, true, 1, 8, &budget);
            println!(
                "        headroom 2M single-node keeping N+1: {} GiB ({} N+1 checks) in {:?}",
                h.admissible_bytes >> 30,
                h.checks,
                t.elapsed()
            );
        }
    }
}
