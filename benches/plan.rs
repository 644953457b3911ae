//! Criterion benchmark of the N+1 check on synthetic fleets (100 and 1,000 hosts × 50 VMs).
//!
//! `cargo bench --bench plan`

use criterion::{criterion_main, BenchmarkId, Criterion};
use numapin::plan::failover::{check, Budget};
use numapin::plan::sim::synthetic_fleet;

fn n_plus_one(c: &mut Criterion) {
    let mut g = c.benchmark_group("plan_n_plus_1");
    g.sample_size(10);
    for hosts in [100usize, 1000] {
        let fleet = synthetic_fleet(hosts, 50, 42);
        let budget = Budget::default();
        g.bench_with_input(BenchmarkId::from_parameter(hosts), &fleet, |b, f| {
            b.iter(|| check(f, 1, &budget))
        });
    }
    g.finish();
}

// The macro defines an undocumented public function.
#[allow(missing_docs)]
mod group {
    criterion::criterion_group!(benches, super::n_plus_one);
}
criterion_main!(group::benches);
