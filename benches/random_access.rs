//! Random access over a working set far beyond TLB reach (1 GiB: 262144 base pages; a
//! second-level TLB holds ~1–2 thousand entries): a chain of dependent random byte reads, each
//! paying a TLB miss and its page walk. 4K lazily mapped (touched first, so no fault is timed)
//! vs 2M and 1G pinned reservations.

use criterion::{Criterion, Throughput};
use numapin::baseline::{LazyRegion, Sharing};
use numapin::measure;
use numapin::{PageSize, Reservation};

const SIZE: u64 = 1 << 30;
const STEPS: usize = 1 << 20;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("random_access");
    g.throughput(Throughput::Elements(STEPS as u64));
    let mut lazy = LazyRegion::new(SIZE, PageSize::Base4K, Sharing::Private).expect("map");
    lazy.touch(0, lazy.len());
    g.bench_function("lazy-4k", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|i| measure::random_reads(lazy.as_slice(), STEPS, i + 1).0)
                .sum()
        })
    });
    drop(lazy);
    for (name, page, kib) in [
        ("numapin-2m", PageSize::Huge2M, 2048u64),
        ("numapin-1g", PageSize::Huge1G, 1 << 20),
    ] {
        if crate::free_hugepages(kib) * kib * 1024 < SIZE {
            eprintln!("skip random_access/{name}: pool too small");
            continue;
        }
        let r = Reservation::builder(SIZE)
            .page_size(page)
            .build()
            .expect("reserve");
        g.bench_function(name, |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|i| measure::random_reads(r.as_slice(), STEPS, i + 1).0)
                    .sum()
            })
        });
    }
    g.finish();
}
