//! The placement policies over streams of arrivals and departures (see `numapin::plan::sim`).
//!
//! `cargo run --release --example plan_sim [EVENTS]` (default 4000 events per workload).

use numapin::plan::failover::Budget;
use numapin::plan::sim::{compare, standard_workloads};

fn main() {
    let events = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(4000);
    let budget = Budget::default();
    println!(
        "{:<16} {:<10} {:>8} {:>9} {:>6} {:>7} {:>6} {:>12} {:>12} {:>6}",
        "workload",
        "policy",
        "arrivals",
        "rejected",
        "util",
        "frag",
        "N+1",
        "slot s/l",
        "pct s/l",
        "N+1 ?"
    );
    for w in standard_workloads(events) {
        for r in compare(&w, &budget) {
            println!(
                "{:<16} {:<10} {:>8} {:>8.1}% {:>5.0}% {:>6.1}% {:>5.0}% {:>5.0}%/{:>3.0}% {:>5.0}%/{:>3.0}% {:>5.0}%",
                w.name,
                r.policy.name(),
                r.arrivals,
                100.0 * r.rejections as f64 / r.arrivals.max(1) as f64,
                100.0 * r.utilisation,
                100.0 * r.fragmentation,
                100.0 * r.n1_safe,
                100.0 * r.slot_too_strict,
                100.0 * r.slot_too_lax,
                100.0 * r.pct_too_strict,
                100.0 * r.pct_too_lax,
                100.0 * r.n1_unknown,
            );
        }
    }
}
