//! The ballooning baseline, checked from the kernel's side: a lazy region has nothing resident
//! until touched, inflating the balloon really frees memory (smaps `Rss`/`*_Hugetlb`, `mincore`,
//! the hugetlb pool's free count), and deflate + touch faults it back in.

mod common;

use numapin::baseline::{Discard, LazyRegion, Sharing};
use numapin::smaps::vma_info;
use numapin::{Error, PageSize};

const MIB: usize = 1 << 20;

/// Resident bytes of the region's VMA as smaps counts them (hugetlb pages are counted apart).
fn smaps_resident(r: &LazyRegion) -> u64 {
    let v = vma_info(r.as_ptr() as usize)
        .expect("read smaps")
        .expect("the region is a VMA");
    v.rss.max(v.hugetlb_bytes)
}

/// Checks the cycle on one region: lazy → touched → quarter inflated → deflated and touched.
fn cycle(mut r: LazyRegion) {
    let len = r.len();
    let q = len / 4;
    assert_eq!(r.resident_bytes().unwrap(), 0, "lazy: nothing resident yet");
    assert_eq!(smaps_resident(&r), 0);

    r.as_mut_slice().fill(0xa5);
    assert_eq!(
        r.resident_bytes().unwrap(),
        len as u64,
        "touched: all resident"
    );
    assert_eq!(smaps_resident(&r), len as u64);

    r.inflate(q, q).unwrap();
    assert_eq!(r.inflated_bytes(), q as u64);
    assert_eq!(
        r.resident_bytes().unwrap(),
        (len - q) as u64,
        "inflate freed the quarter ({:?})",
        r.discard_method()
    );
    assert_eq!(smaps_resident(&r), (len - q) as u64);
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
    assert_eq!(smaps_resident(&r), len as u64);
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
    let mut r = LazyRegion::new(16 << 20, PageSize::Transparent, Sharing::Private).unwrap();
    assert_eq!(r.balloon_granule(), 2 * MIB);
    assert_eq!(r.as_ptr() as usize % (2 * MIB), 0, "2 MiB aligned");
    r.touch(0, r.len());
    let before = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    r.inflate(0, 8 * MIB).unwrap();
    let after = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    assert_eq!(after.rss, before.rss - 8 * MIB as u64);
    if before.anon_huge == 16 * MIB as u64 {
        assert_eq!(
            after.anon_huge,
            8 * MIB as u64,
            "four huge pages went back whole"
        );
    } else {
        eprintln!(
            "note: only {} bytes were THP-backed; huge-page count not checked",
            before.anon_huge
        );
    }
    assert_eq!(r.resident_bytes().unwrap(), 8 * MIB as u64);
}

fn hugetlb_cycle(sharing: Sharing, method: Discard) {
    let _lock = common::pools_exclusive();
    let pages = 8u64;
    if !common::need(
        common::free_pages(0, 2048) >= pages,
        "needs 8 free 2 MiB hugepages on node 0",
    ) {
        return;
    }
    let free0 = common::free_pages(0, 2048);
    let mut r = LazyRegion::new(pages * (2 << 20), PageSize::Huge2M, sharing).unwrap();
    assert_eq!(r.discard_method(), method);
    assert_eq!(
        common::free_pages(0, 2048),
        free0,
        "MAP_NORESERVE: no page taken or reserved at map time"
    );
    r.touch(0, r.len());
    assert_eq!(
        common::free_pages(0, 2048),
        free0 - pages,
        "touch faulted all"
    );
    r.inflate(0, 4 * MIB).unwrap();
    assert_eq!(
        common::free_pages(0, 2048),
        free0 - pages + 2,
        "inflate returned two pages to the pool"
    );
    assert_eq!(
        r.resident_bytes().unwrap(),
        (pages as usize - 2) as u64 * 2 * MIB as u64
    );
    r.deflate(0, 4 * MIB, true).unwrap();
    assert_eq!(common::free_pages(0, 2048), free0 - pages, "refaulted");
    drop(r);
    assert_eq!(
        common::free_pages(0, 2048),
        free0,
        "drop returned every page"
    );
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
