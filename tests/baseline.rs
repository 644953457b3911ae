//! The ballooning baseline, checked from the kernel's side: a lazy region has nothing resident
//! until touched, inflating the balloon really frees memory (smaps `Rss`/`*_Hugetlb`, `mincore`,
//! the hugetlb pool's free count), and deflate + touch faults it back in.

mod common;

use numapin::baseline::{Discard, LazyRegion, Sharing};
use numapin::smaps::vma_info;
use numapin::{Error, PageSize};

const MIB: usize = 1 << 20;

/// Resident bytes of the region as smaps counts them (hugetlb pages are counted apart), when
/// the region is a VMA of its own. Private anonymous mappings with the same flags merge with a
/// neighbour (another test's region, mapped concurrently); then smaps cannot tell the region's
/// share and only `mincore` (exact per page) is checked.
fn smaps_resident(r: &LazyRegion) -> Option<u64> {
    let v = vma_info(r.as_ptr() as usize)
        .expect("read smaps")
        .expect("the region is in a VMA");
    if (v.start, v.end) != (r.as_ptr() as usize, r.as_ptr() as usize + r.len()) {
        eprintln!("note: the region's VMA merged with a neighbour; smaps check skipped");
        return None;
    }
    Some(v.rss.max(v.hugetlb_bytes))
}

/// Asserts smaps agrees, where it can tell.
fn assert_smaps(r: &LazyRegion, expected: usize, what: &str) {
    if let Some(rss) = smaps_resident(r) {
        assert_eq!(rss, expected as u64, "smaps: {what}");
    }
}

/// Checks the cycle on one region: lazy → touched → quarter inflated → deflated and touched.
fn cycle(mut r: LazyRegion) {
    let len = r.len();
    let q = len / 4;
    assert_eq!(r.resident_bytes().unwrap(), 0, "lazy: nothing resident yet");
    assert_smaps(&r, 0, "lazy");

    r.as_mut_slice().fill(0xa5);
    assert_eq!(
        r.resident_bytes().unwrap(),
        len as u64,
        "touched: all resident"
    );
    assert_smaps(&r, len, "touched or refaulted");

    r.inflate(q, q).unwrap();
    assert_eq!(r.inflated_bytes(), q as u64);
    assert_eq!(
        r.resident_bytes().unwrap(),
        (len - q) as u64,
        "inflate freed the quarter ({:?})",
        r.discard_method()
    );
    assert_smaps(&r, len - q, "inflated");
    // The host took the pages: the guest's data there is gone, the rest kept.
    let s = r.as_slice();
    assert!(s[..q].iter().all(|&b| b == 0xa5));
    assert!(s[q + q..].iter().all(|&b| b == 0xa5));

    // Inflating again is a no-op on granules already held.
    r.inflate(q, q).unwrap();
    assert_eq!(r.inflated_bytes(), q as u64);

    r.deflate(q, q, true).unwrap();
    assert_eq!(r.inflated_bytes(), 0);
    assert_eq!(
        r.resident_bytes().unwrap(),
        len as u64,
        "deflate + touch refaulted"
    );
    assert_smaps(&r, len, "touched or refaulted");
    // The refaulted pages came back zeroed (touch added one to one byte per page).
    assert!(r.as_slice()[q..q + q]
        .chunks(4096)
        .all(|p| p[0] == 1 && p[1..].iter().all(|&b| b == 0)));
}

#[test]
fn private_base_pages_dontneed_frees_and_refaults() {
    let r = LazyRegion::new(16 << 20, PageSize::Base4K, Sharing::Private).unwrap();
    assert_eq!(r.discard_method(), Discard::DontNeed);
    let v = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    assert_eq!(v.kernel_page_size, 4096);
    assert!(
        v.flags.iter().any(|f| f == "nr"),
        "MAP_NORESERVE: {:?}",
        v.flags
    );
    assert!(v.flags.iter().all(|f| f != "lo"), "not locked");
    cycle(r);
}

#[test]
fn shared_memfd_remove_frees_and_refaults() {
    let r = LazyRegion::new(16 << 20, PageSize::Base4K, Sharing::Shared).unwrap();
    assert_eq!(r.discard_method(), Discard::Remove);
    cycle(r);
}

#[test]
fn untouched_deflated_range_stays_unbacked() {
    let mut r = LazyRegion::new(8 << 20, PageSize::Base4K, Sharing::Shared).unwrap();
    r.touch(0, r.len());
    r.inflate(0, 4 * MIB).unwrap();
    r.deflate(0, 4 * MIB, false).unwrap();
    assert_eq!(
        r.resident_bytes().unwrap(),
        4 * MIB as u64,
        "no refault without a touch"
    );
    r.touch(0, MIB);
    assert_eq!(
        r.resident_bytes().unwrap(),
        5 * MIB as u64,
        "touch refaults"
    );
}

#[test]
fn rate_limit_paces_inflation() {
    let mut r = LazyRegion::new(8 << 20, PageSize::Base4K, Sharing::Private).unwrap();
    r.touch(0, r.len());
    r.set_balloon(256 << 10, Some(16 << 20)).unwrap();
    let t = r.inflate(0, 8 << 20).unwrap();
    // 8 MiB at 16 MiB/s: half a second, less the last granule's share.
    assert!(t.as_secs_f64() >= 0.45, "took {t:?}");
    assert_eq!(r.resident_bytes().unwrap(), 0);
}

#[test]
fn thp_balloon_frees_whole_huge_pages() {
    let topo = numapin::Topology::from_sysfs().unwrap();
    if !common::need(
        !matches!(
            topo.thp,
            numapin::ThpMode::Never | numapin::ThpMode::Unsupported
        ),
        "transparent huge pages are disabled",
    ) {
        return;
    }
    // The huge-page assertions need a region that is its own VMA (not merged with a
    // neighbour, whose pages smaps would count too) and fully THP-backed (compaction can fail
    // on a fragmented host). Try a few mappings, keeping the earlier ones so that the next one
    // lands elsewhere; under NUMAPIN_REQUIRE_PRIVILEGED=1 (CI sets THP to madvise and defrag to
    // madvise, .ci/hugepages.sh) never getting one is a failure, not a note.
    let mut kept = Vec::new();
    for attempt in 1..=4 {
        let mut r = LazyRegion::new(16 << 20, PageSize::Transparent, Sharing::Private).unwrap();
        assert_eq!(r.balloon_granule(), 2 * MIB);
        assert_eq!(r.as_ptr() as usize % (2 * MIB), 0, "2 MiB aligned");
        r.touch(0, r.len());
        let before = vma_info(r.as_ptr() as usize).unwrap().unwrap();
        let own =
            (before.start, before.end) == (r.as_ptr() as usize, r.as_ptr() as usize + r.len());
        if own && before.anon_huge == 16 * MIB as u64 {
            r.inflate(0, 8 * MIB).unwrap();
            assert_eq!(r.resident_bytes().unwrap(), 8 * MIB as u64);
            let after = vma_info(r.as_ptr() as usize).unwrap().unwrap();
            assert_eq!(after.rss, before.rss - 8 * MIB as u64);
            assert_eq!(
                after.anon_huge,
                8 * MIB as u64,
                "four huge pages went back whole"
            );
            return;
        }
        if attempt == 4 {
            let _ = common::need(
                false,
                &format!(
                    "no region of its own fully backed by THP in 4 tries (last: own VMA {own}, {} of 16 MiB huge); the huge-page assertions did not run",
                    before.anon_huge
                ),
            );
            return;
        }
        kept.push(r);
    }
}

/// Free 2 MiB pages host-wide (the baseline binds to no node).
fn free_2m() -> u64 {
    common::read_u64("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages")
}

fn hugetlb_cycle(sharing: Sharing, method: Discard) {
    let _lock = common::pools_exclusive();
    let pages = 8u64;
    if !common::need(free_2m() >= pages, "needs 8 free 2 MiB hugepages") {
        return;
    }
    let free0 = free_2m();
    let mut r = LazyRegion::new(pages * (2 << 20), PageSize::Huge2M, sharing).unwrap();
    assert_eq!(r.discard_method(), method);
    assert_eq!(
        free_2m(),
        free0,
        "MAP_NORESERVE: no page taken or reserved at map time"
    );
    // Populate rather than touch: if another process drains the pool meanwhile, an error,
    // not a SIGBUS.
    r.populate(0, r.len()).unwrap();
    assert_eq!(free_2m(), free0 - pages, "touch faulted all");
    r.inflate(0, 4 * MIB).unwrap();
    assert_eq!(
        free_2m(),
        free0 - pages + 2,
        "inflate returned two pages to the pool"
    );
    assert_eq!(
        r.resident_bytes().unwrap(),
        (pages as usize - 2) as u64 * 2 * MIB as u64
    );
    r.deflate(0, 4 * MIB, true).unwrap();
    assert_eq!(free_2m(), free0 - pages, "refaulted");
    drop(r);
    assert_eq!(free_2m(), free0, "drop returned every page");
}

#[test]
fn hugetlb_memfd_punch_hole_returns_pages_to_the_pool() {
    hugetlb_cycle(Sharing::Shared, Discard::PunchHole);
}

#[test]
fn private_hugetlb_dontneed_returns_pages_to_the_pool() {
    hugetlb_cycle(Sharing::Private, Discard::DontNeed);
}

#[test]
fn errors_leave_nothing_mapped() {
    let count = |p: &str| match std::fs::read_dir(p) {
        Ok(d) => d.count(),
        Err(_) => std::fs::read_to_string(p).unwrap().lines().count(),
    };
    let (maps, fds) = (count("/proc/self/maps"), count("/proc/self/fd"));
    for _ in 0..50 {
        assert!(matches!(
            LazyRegion::new(3 << 20, PageSize::Huge2M, Sharing::Shared),
            Err(Error::InvalidSize { .. })
        ));
        // memfd_create and ftruncate succeed, mmap of 1 PiB fails (beyond the address space):
        // the memfd must be closed.
        let e = LazyRegion::new(1 << 50, PageSize::Base4K, Sharing::Shared).unwrap_err();
        assert!(matches!(e, Error::Sys { call: "mmap", .. }), "{e}");
    }
    // Other tests' threads may map or open a few things meanwhile; 50 leaks would show.
    assert!(count("/proc/self/maps") < maps + 10, "mappings leaked");
    assert!(count("/proc/self/fd") < fds + 10, "memfds leaked");
}

#[test]
fn refault_on_an_empty_pool_is_an_error_not_sigbus() {
    let _lock = common::pools_exclusive();
    if !common::need(free_2m() >= 4, "needs 4 free 2 MiB hugepages") {
        return;
    }
    let mut r = LazyRegion::new(4 * (2 << 20), PageSize::Huge2M, Sharing::Shared).unwrap();
    r.populate(0, r.len()).unwrap();
    r.inflate(0, 4 * MIB).unwrap();
    // Another tenant takes every free page (an overcommitted host).
    let free = free_2m();
    let hog = LazyRegion::new(free * (2 << 20), PageSize::Huge2M, Sharing::Private).unwrap();
    // If someone else took pages meanwhile, this fails part-way with the pool empty all the
    // same, which is all the test needs.
    let _ = hog.populate(0, hog.len());
    assert_eq!(free_2m(), 0);
    let e = r.deflate(0, 4 * MIB, true).unwrap_err();
    assert!(
        matches!(e, Error::Sys { call, .. } if call.contains("POPULATE")),
        "{e}"
    );
    assert_eq!(r.inflated_bytes(), 4 * MIB as u64, "nothing was deflated");
    drop(hog);
    r.deflate(0, 4 * MIB, true).unwrap();
    assert_eq!(r.inflated_bytes(), 0);
    assert_eq!(r.resident_bytes().unwrap(), r.len() as u64);
}
