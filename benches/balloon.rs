//! Balloon cycles: inflate a quarter of a touched region (the host takes it back), deflate it
//! and touch it again (the guest refaults it). A reservation never pays this; its row is the
//! guest's touch of the same quarter of resident memory.

use criterion::{Criterion, Throughput};
use numapin::baseline::{LazyRegion, Sharing};
use numapin::{PageSize, Reservation};

const SIZE: u64 = 64 << 20;

pub fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("balloon_cycle");
    let q = SIZE as usize / 4;
    g.throughput(Throughput::Bytes(q as u64));
    for (name, page, sharing) in [
        ("private-4k", PageSize::Base4K, Sharing::Private),
        ("memfd-4k", PageSize::Base4K, Sharing::Shared),
        ("private-thp", PageSize::Transparent, Sharing::Private),
        ("memfd-2m", PageSize::Huge2M, Sharing::Shared),
    ] {
        if page == PageSize::Huge2M && crate::free_hugepages(2048) < SIZE >> 21 {
            eprintln!("skip balloon_cycle/{name}: pool too small");
            continue;
        }
        let mut r = LazyRegion::new(SIZE, page, sharing).expect("map");
        r.touch(0, r.len());
        g.bench_function(name, |b| {
            b.iter(|| {
                r.inflate(q, q).expect("inflate");
                r.deflate(q, q, true).expect("deflate")
            })
        });
    }
    if crate::free_hugepages(2048) >= SIZE >> 21 {
        let mut r = Reservation::builder(SIZE)
            .page_size(PageSize::Huge2M)
            .build()
            .expect("reserve");
        g.bench_function("numapin-2m-touch", |b| {
            b.iter(|| {
                let s = r.as_mut_slice();
                for i in (q..2 * q).step_by(4096) {
                    s[i] = s[i].wrapping_add(1);
                }
                std::hint::black_box(&s[q]);
            })
        });
    }
    g.finish();
}
