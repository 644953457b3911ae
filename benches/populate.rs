//! Populate throughput per page size and thread count, beside the raw kernel limit (parallel
//! `MADV_POPULATE_WRITE` by as many threads over the same page size, nothing else) and the
//! zeroing limit (parallel memset of memory already populated).

use std::time::Duration;

use criterion::{Criterion, Throughput};
use numapin::baseline::{LazyRegion, Sharing};
use numapin::measure;
use numapin::{PageSize, Reservation};

pub fn bench(c: &mut Criterion) {
    let mut threads = vec![1];
    if crate::cpus() > 1 {
        threads.push(crate::cpus());
    }
    for (page, size) in [
        (PageSize::Base4K, 256u64 << 20),
        (PageSize::Transparent, 256 << 20),
        (PageSize::Huge2M, 512 << 20),
        (PageSize::Huge1G, 1 << 30),
    ] {
        if page == PageSize::Huge2M && crate::free_hugepages(2048) < size >> 21 {
            eprintln!("skip populate/2m: fewer than {} free 2M pages", size >> 21);
            continue;
        }
        if page == PageSize::Huge1G && crate::free_hugepages(1 << 20) < 1 {
            eprintln!("skip populate/1g: no free 1G page");
            continue;
        }
        let mut g = c.benchmark_group(format!("populate/{page}"));
        g.throughput(Throughput::Bytes(size));
        for &t in &threads {
            g.bench_function(format!("numapin/{t}t"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let r = Reservation::builder(size)
                            .page_size(page)
                            .threads(t)
                            .build()
                            .expect("reserve");
                        total += Duration::from_secs_f64(r.report().populate_seconds);
                    }
                    total
                })
            });
            g.bench_function(format!("kernel-limit/{t}t"), |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let r = LazyRegion::new(size, page, Sharing::Private).expect("map");
                        total += measure::populate_limit(&r, t).expect("populate");
                    }
                    total
                })
            });
            g.bench_function(format!("zeroing-limit/{t}t"), |b| {
                let mut r = LazyRegion::new(size, page, Sharing::Private).expect("map");
                measure::populate_limit(&r, t).expect("populate");
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| measure::memset_limit(r.as_mut_slice(), t))
                        .sum()
                })
            });
        }
        g.finish();
    }
}
