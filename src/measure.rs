//! Measurement kernels shared by `numapin bench` and the criterion benches (`benches/`), so
//! that both time exactly the same code over a [`Reservation`](crate::Reservation) and a
//! [`LazyRegion`]. Safe code only: the regions hand out slices, the kernel calls go through
//! [`LazyRegion::populate`].

use std::sync::Barrier;
use std::time::{Duration, Instant};

use crate::baseline::LazyRegion;
use crate::error::Result;

/// The raw kernel limit of populating: `threads` threads, started and waiting before the clock
/// starts, each `MADV_POPULATE_WRITE` one contiguous slice of `region` (page-aligned). Nothing
/// else — no binding, no locking, no verification. Returns the wall time from the start signal
/// to the last thread's finish.
///
/// # Errors
/// The first populate error ([`crate::Error::Sys`]), e.g. an empty hugetlb pool.
pub fn populate_limit(region: &LazyRegion, threads: usize) -> Result<Duration> {
    let page = region.page_size().bytes().unwrap_or(4096);
    let pages = region.len() / page;
    let threads = threads.clamp(1, pages.max(1));
    let barrier = Barrier::new(threads + 1);
    let start = std::sync::OnceLock::new();
    let results: Vec<Result<Instant>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (b, start) = (&barrier, &start);
                s.spawn(move || {
                    let first = pages * t / threads;
                    let last = pages * (t + 1) / threads;
                    b.wait();
                    let _: &Instant = start.get_or_init(Instant::now);
                    if last > first {
                        region.populate(first * page, (last - first) * page)?;
                    }
                    Ok(Instant::now())
                })
            })
            .collect();
        barrier.wait();
        let _ = start.get_or_init(Instant::now);
        handles
            .into_iter()
            .map(|h| h.join().expect("populate thread panicked"))
            .collect()
    });
    let t0 = *start.get().expect("set before the threads ran");
    let mut end = t0;
    for r in results {
        end = end.max(r?);
    }
    Ok(end - t0)
}

/// Writes one byte in every base page of `mem[from..to]` (the guest touching memory it
/// already has); returns the time.
pub fn touch_pages(mem: &mut [u8], from: usize, to: usize) -> Duration {
    let t = Instant::now();
    for i in (from..to).step_by(4096) {
        mem[i] = mem[i].wrapping_add(1);
    }
    std::hint::black_box(&mem[from.min(mem.len().saturating_sub(1))]);
    t.elapsed()
}

/// The median cost of one timed empty interval (two clock reads), in ns: part of every
/// per-page latency sample of [`write_latencies`], on both sides, and not subtracted.
pub fn clock_overhead_ns() -> u64 {
    let mut v: Vec<u64> = (0..10_000)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(());
            t.elapsed().as_nanos() as u64
        })
        .collect();
    v.sort_unstable();
    percentile(&v, 0.5)
}

/// The zeroing limit: `threads` threads, started before the clock, each `fill(0)` one
/// contiguous slice of memory that is already populated — what the kernel's page clearing
/// costs at best, with no fault at all. Returns the wall time.
pub fn memset_limit(mem: &mut [u8], threads: usize) -> Duration {
    let threads = threads.max(1);
    let per = mem.len().div_ceil(threads).next_multiple_of(4096);
    let n = mem.len().div_ceil(per);
    let barrier = Barrier::new(n + 1);
    let start = std::sync::OnceLock::new();
    let ends: Vec<Instant> = std::thread::scope(|s| {
        let handles: Vec<_> = mem
            .chunks_mut(per)
            .map(|part| {
                let (b, start) = (&barrier, &start);
                s.spawn(move || {
                    b.wait();
                    let _: &Instant = start.get_or_init(Instant::now);
                    part.fill(0);
                    std::hint::black_box(&part[..]);
                    Instant::now()
                })
            })
            .collect();
        barrier.wait();
        let _ = start.get_or_init(Instant::now);
        handles
            .into_iter()
            .map(|h| h.join().expect("memset thread panicked"))
            .collect()
    });
    let t0 = *start.get().expect("set before the threads ran");
    ends.into_iter().fold(t0, Instant::max) - t0
}

/// The latency of one write to each of the bytes at `offsets` (in that order), in
/// nanoseconds: on a lazy region the first touch of a page (a fault), on a reservation a plain
/// store (at most a TLB and cache miss). Each write is timed on its own with the monotonic
/// clock, whose own cost ([`clock_overhead_ns`]) is included in every sample.
pub fn write_latencies(mem: &mut [u8], offsets: &[usize]) -> Vec<u64> {
    let mut out = Vec::with_capacity(offsets.len());
    for &o in offsets {
        let t = Instant::now();
        mem[o] = mem[o].wrapping_add(1);
        std::hint::black_box(&mem[o]);
        out.push(t.elapsed().as_nanos() as u64);
    }
    out
}

/// Offsets of one byte in each of `count` distinct base pages of a region of `len` bytes,
/// spread evenly and visited in a shuffled order (`seed`), so that neither the prefetcher nor
/// THP/fault-around of a neighbour hides a fault.
pub fn page_sample(len: usize, count: usize, seed: u64) -> Vec<usize> {
    let page = 4096;
    let pages = len / page;
    let count = count.clamp(1, pages.max(1));
    let stride = pages / count;
    let mut v: Vec<usize> = (0..count).map(|i| i * stride * page + 64).collect();
    let mut x = seed | 1;
    for i in (1..v.len()).rev() {
        x = xorshift(x);
        v.swap(i, (x % (i as u64 + 1)) as usize);
    }
    v
}

/// A chain of `steps` dependent random byte reads over all of `mem` (each address depends on
/// the byte read before), so each step pays the full TLB-miss and cache-miss latency: the
/// access pattern of a guest whose working set is far beyond TLB reach. Returns the time and a
/// checksum (to keep the reads alive).
pub fn random_reads(mem: &[u8], steps: usize, seed: u64) -> (Duration, u64) {
    let n = mem.len() as u64;
    let mut x = seed | 1;
    let mut sum = 0u64;
    let t = Instant::now();
    for _ in 0..steps {
        x = xorshift(x);
        let b = mem[(x % n) as usize];
        sum = sum.wrapping_add(u64::from(b));
        x ^= u64::from(b);
    }
    (t.elapsed(), std::hint::black_box(sum))
}

fn xorshift(mut x: u64) -> u64 {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    x
}

/// The `p`-th percentile (0.0–1.0) of `sorted` by the nearest-rank method; 0 when empty.
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// The median of some values (the mean of the middle two for an even count); NaN when empty.
pub fn median(values: &[f64]) -> f64 {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| !x.is_nan()).collect();
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::Sharing;
    use crate::units::PageSize;

    #[test]
    fn statistics() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        let v: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&v, 0.99), 99);
        assert_eq!(percentile(&v, 0.5), 50);
        assert_eq!(percentile(&v, 1.0), 100);
        assert_eq!(percentile(&v, 0.0), 1);
        assert_eq!(percentile(&[], 0.5), 0);
    }

    #[test]
    fn sample_hits_distinct_pages_in_range() {
        let s = page_sample(64 << 20, 1000, 7);
        let mut pages: Vec<usize> = s.iter().map(|o| o / 4096).collect();
        assert!(s.iter().all(|&o| o < 64 << 20));
        pages.sort_unstable();
        pages.dedup();
        assert_eq!(pages.len(), 1000);
        assert_ne!(
            s.windows(2).filter(|w| w[0] < w[1]).count(),
            999,
            "shuffled"
        );
    }

    #[test]
    fn populate_limit_faults_everything() {
        let r = LazyRegion::new(8 << 20, PageSize::Base4K, Sharing::Private).unwrap();
        populate_limit(&r, 3).unwrap();
        assert_eq!(r.resident_bytes().unwrap(), 8 << 20);
        let mut r = r;
        let t = memset_limit(r.as_mut_slice(), 2);
        assert!(t > Duration::ZERO);
        assert!(r.as_slice().iter().all(|&b| b == 0));
        let (_, sum) = random_reads(r.as_slice(), 1000, 1);
        assert_eq!(sum, 0);
        let lat = write_latencies(r.as_mut_slice(), &[0, 4096]);
        assert_eq!(lat.len(), 2);
        assert_eq!(r.as_slice()[4096], 1);
    }
}
