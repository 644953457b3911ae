//! First-touch latency: the cost of the first write to a page. `iter_batched` maps a fresh
//! lazy region in the (untimed) setup; only the touching is timed. The reservation's row is
//! the same write to memory that is already resident — what its guest sees on every page.

use criterion::{BatchSize, Criterion, Throughput};
use numapin::baseline::{LazyRegion, Sharing};
use numapin::{PageSize, Reservation};

/// Bytes touched per iteration: 512 base pages.
const SPAN: usize = 2 << 20;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("first_touch");
    g.throughput(Throughput::Elements((SPAN / 4096) as u64));
    for (name, page) in [
        ("lazy-4k", PageSize::Base4K),
        ("lazy-thp", PageSize::Transparent),
        ("lazy-2m", PageSize::Huge2M),
    ] {
        if page == PageSize::Huge2M && crate::free_hugepages(2048) < 1 {
            eprintln!("skip first_touch/lazy-2m: no free 2M page");
            continue;
        }
        g.bench_function(name, |b| {
            b.iter_batched(
                || LazyRegion::new(SPAN as u64, page, Sharing::Private).expect("map"),
                |mut r| {
                    r.touch(0, SPAN);
                    r // dropped (unmapped) outside the timing
                },
                BatchSize::PerIteration,
            )
        });
    }
    let size = 256u64 << 20;
    if crate::free_hugepages(2048) >= size >> 21 {
        let mut r = Reservation::builder(size)
            .page_size(PageSize::Huge2M)
            .build()
            .expect("reserve");
        let mut off = 0usize;
        g.bench_function("numapin-2m", |b| {
            b.iter_batched(
                || {
                    off = (off + SPAN) % size as usize;
                    off
                },
                |o| {
                    let s = r.as_mut_slice();
                    for i in (o..o + SPAN).step_by(4096) {
                        s[i] = s[i].wrapping_add(1);
                    }
                    std::hint::black_box(&s[o]);
                },
                BatchSize::PerIteration,
            )
        });
    } else {
        eprintln!("skip first_touch/numapin-2m: fewer than 128 free 2M pages");
    }
    g.finish();
}
