//! Criterion benches of numapin against the ballooning baseline: populate throughput and the
//! kernel's limits, first-touch latency, random access beyond TLB reach, balloon cycles.
//!
//! `cargo bench --bench main` runs them all; `cargo bench --bench main -- populate` one group.
//! hugetlb cases skip (with a printed note) when the pools lack free pages.

#![allow(missing_docs)] // criterion_group!/criterion_main! generate undocumented items.

use criterion::{criterion_group, criterion_main, Criterion};
use std::time::Duration;

mod balloon;
mod first_touch;
mod populate;
mod random_access;

/// Free hugepages of a size (KiB) on the whole host.
pub(crate) fn free_hugepages(kib: u64) -> u64 {
    std::fs::read_to_string(format!(
        "/sys/kernel/mm/hugepages/hugepages-{kib}kB/free_hugepages"
    ))
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

/// CPUs this process may run on.
pub(crate) fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
}

criterion_group! {
    name = benches;
    config = config();
    targets = populate::bench, first_touch::bench, random_access::bench, balloon::bench
}
criterion_main!(benches);
