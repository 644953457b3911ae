//! Reservations checked from the kernel's side: page size and residency in /proc/self/smaps,
//! locked bytes, node of every page (move_pages), per-node pool counters before, during and
//! after, worker affinity, and every user-caused error path leaving nothing behind.

mod common;

use common::{free_pages, is_root, need, pools_exclusive, pools_shared};
use numapin::smaps::vma_info;
use numapin::{Error, LockKind, NodeId, PageSize, Reservation, Topology};

fn node0() -> NodeId {
    Topology::from_sysfs().unwrap().nodes[0].id
}

fn node_cpus(node: NodeId) -> Vec<u32> {
    Topology::from_sysfs()
        .unwrap()
        .node(node)
        .unwrap()
        .cpus
        .clone()
}

/// Total free pages of a size over all nodes.
fn free_all(kib: u64) -> u64 {
    Topology::from_sysfs()
        .unwrap()
        .nodes
        .iter()
        .map(|n| free_pages(n.id.0, kib))
        .sum()
}

fn check_common(r: &Reservation, node: NodeId) {
    let rep = r.report();
    assert_eq!(rep.size_bytes as usize, r.len());
    assert_eq!(
        rep.placement.get(&node).copied(),
        Some(rep.size_bytes),
        "every byte on node {node}: {rep:?}"
    );
    assert_eq!(rep.placement.len(), 1);
    assert!(rep.verified_all);
    assert_eq!(rep.verified_pages, rep.total_pages);
    // Workers ran only where they were pinned: the node's CPUs.
    let cpus = node_cpus(node);
    if !cpus.is_empty() {
        assert_eq!(rep.pinned_cpus, cpus);
        for c in &rep.worker_cpus {
            assert!(
                cpus.contains(c),
                "worker ran on cpu {c}, not on node {node} {cpus:?}"
            );
        }
    }
    let vma = vma_info(r.as_ptr() as usize)
        .unwrap()
        .expect("mapping present");
    assert_eq!(vma.start, r.as_ptr() as usize);
    assert_eq!(vma.end - vma.start, r.len());
    // Guest memory stays out of core dumps and children.
    assert!(
        vma.flags.iter().any(|f| f == "dd"),
        "no MADV_DONTDUMP: {:?}",
        vma.flags
    );
    assert!(
        vma.flags.iter().any(|f| f == "dc"),
        "no MADV_DONTFORK: {:?}",
        vma.flags
    );
}

#[test]
fn base_pages_are_resident_locked_and_on_the_node() {
    if !need(is_root(), "locking 64 MiB needs root or CAP_IPC_LOCK") {
        return;
    }
    let node = node0();
    let r = Reservation::builder(64 << 20)
        .node(node)
        .page_size(PageSize::Base4K)
        .build()
        .unwrap();
    check_common(&r, node);
    let vma = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    assert_eq!(vma.kernel_page_size, 4096);
    assert_eq!(vma.rss, 64 << 20, "every page resident");
    assert_eq!(vma.locked, 64 << 20, "every page locked");
    assert!(
        vma.flags.iter().any(|f| f == "lo" || f == "lf"),
        "{:?}",
        vma.flags
    );
    assert_eq!(r.report().lock, LockKind::Mlock);
}

#[test]
fn transparent_huge_pages_back_the_region() {
    let t = Topology::from_sysfs().unwrap();
    if !need(
        !matches!(
            t.thp,
            numapin::ThpMode::Never | numapin::ThpMode::Unsupported
        ),
        "THP is disabled on this host",
    ) {
        return;
    }
    let node = node0();
    let r = Reservation::builder(64 << 20)
        .node(node)
        .page_size(PageSize::Transparent)
        .lock(false)
        .build()
        .unwrap();
    check_common(&r, node);
    let vma = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    assert_eq!(r.as_ptr() as usize % (2 << 20), 0, "2 MiB aligned");
    assert_eq!(vma.rss, 64 << 20);
    assert_eq!(r.report().thp_bytes, Some(vma.anon_huge));
    // The kernel may fall back for some 2 MiB blocks when memory is fragmented, but on a
    // machine with free memory most of the region is huge.
    assert!(
        vma.anon_huge >= 32 << 20,
        "only {} bytes huge",
        vma.anon_huge
    );
}

fn hugetlb_roundtrip(page: PageSize, kib: u64, pages: u64) {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, kib);
    if !need(
        before >= pages,
        &format!("node {node} needs {pages} free {page} hugepages, has {before}"),
    ) {
        return;
    }
    let size = pages * kib * 1024;
    let mut r = Reservation::builder(size)
        .node(node)
        .page_size(page)
        .build()
        .unwrap();
    check_common(&r, node);
    assert_eq!(r.report().lock, LockKind::Hugetlb);
    assert!(r.report().locked);
    // The pool on that node gave exactly these pages, already faulted in.
    assert_eq!(free_pages(node.0, kib), before - pages);
    let vma = vma_info(r.as_ptr() as usize).unwrap().unwrap();
    assert_eq!(vma.kernel_page_size, kib * 1024);
    assert_eq!(vma.hugetlb_bytes, size, "every hugepage faulted in");
    assert!(vma.flags.iter().any(|f| f == "ht"));
    // Usable memory, zeroed by the kernel.
    let s = r.as_mut_slice();
    assert_eq!(s[0], 0);
    s[s.len() - 1] = 0xa5;
    assert_eq!(s[s.len() - 1], 0xa5);
    drop(r);
    assert_eq!(free_pages(node.0, kib), before, "drop returned every page");
}

#[test]
fn huge_2m_pages_come_from_the_node_pool_and_go_back() {
    hugetlb_roundtrip(PageSize::Huge2M, 2048, 64);
}

#[test]
fn huge_1g_pages_come_from_the_node_pool_and_go_back() {
    hugetlb_roundtrip(PageSize::Huge1G, 1 << 20, 1);
}

#[test]
fn a_short_pool_is_a_typed_error_and_changes_nothing() {
    let node = node0();
    let _lock = pools_exclusive();
    let free = free_pages(node.0, 2048);
    let total_free = free_all(2048);
    let err = Reservation::builder((free + 1) * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .build()
        .unwrap_err();
    match &err {
        Error::HugepagesShort {
            node: n,
            wanted,
            free_on_node,
            page_size,
            ..
        } => {
            assert_eq!(*n, node);
            assert_eq!(*wanted, free + 1);
            assert_eq!(*free_on_node, free);
            assert_eq!(*page_size, PageSize::Huge2M);
        }
        other => panic!("expected HugepagesShort, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("nr_hugepages") && msg.contains("echo"),
        "{msg}"
    );
    assert_eq!(free_all(2048), total_free);
}

/// The kernel, not the preflight, says no: the preflight is fed a topology that claims more
/// free pages than the node has, so the request reaches `mmap`, whose hugetlb reservation
/// (made under MPOL_BIND to the node) fails. The error is still typed, and nothing leaks.
#[test]
fn the_kernel_refusing_at_mmap_is_a_typed_error() {
    let node = node0();
    let _lock = pools_exclusive();
    let free = free_pages(node.0, 2048);
    let t = common::lying_facts(1 << 20);
    let before = free_all(2048);
    let err = Reservation::builder((free + 8) * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .facts(t)
        .build()
        .unwrap_err();
    assert!(
        matches!(err, Error::HugepagesShort { node: n, free_on_node, .. } if n == node && free_on_node == free),
        "{err:?}"
    );
    assert_eq!(free_all(2048), before);
}

/// Pages another mapping has reserved but not faulted (`HugePages_Rsvd`) are free yet not to
/// be had: the gathered facts carry the count, and the preflight counts those pages out (it
/// used to count them as free and report "0 short").
#[test]
fn pages_reserved_by_another_mapping_are_counted_out() {
    let _lock = pools_exclusive();
    if !need(
        free_all(2048) >= 8,
        "needs 8 free 2M pages to reserve them with a mapping",
    ) {
        return;
    }
    let rsvd0 = numapin::HostFacts::gather(None)
        .unwrap()
        .host_pool(PageSize::Huge2M)
        .expect("a 2M pool")
        .reserved;
    let len = 8usize << 21;
    // SAFETY: a fresh anonymous mapping, never touched, unmapped below.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_HUGETLB,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
    let facts = numapin::HostFacts::gather(None).unwrap();
    // SAFETY: the mapping made above, never handed out.
    assert_eq!(unsafe { libc::munmap(p, len) }, 0);
    let pool = facts.host_pool(PageSize::Huge2M).unwrap().clone();
    assert!(
        pool.reserved >= rsvd0 + 8,
        "8 pages reserved by our mapping: {rsvd0} -> {}",
        pool.reserved
    );
    // One page more than no mapping has reserved: one short, under any policy that may use
    // the whole host.
    let want = pool.unreserved() + 1;
    let err = Reservation::builder(want * (2 << 20))
        .page_size(PageSize::Huge2M)
        .node(node0())
        .policy(numapin::MemPolicy::Preferred)
        .preflight_on(&facts)
        .unwrap_err();
    match &err {
        Error::HugepagesShort {
            short, reserved, ..
        } => assert_eq!((*short, *reserved), (1, pool.reserved), "{err}"),
        other => panic!("expected HugepagesShort, got {other:?}"),
    }
    assert!(err.to_string().contains("HugePages_Rsvd"), "{err}");
}

/// With MAP_NORESERVE the kernel sets nothing aside at mmap; the shortage then surfaces while
/// populating. MADV_POPULATE_WRITE turns what would have been a SIGBUS into an error value,
/// and every page faulted before the failure goes back to the pool.
#[test]
fn a_shortage_while_populating_is_an_error_not_sigbus() {
    let node = node0();
    let _lock = pools_exclusive();
    let free = free_pages(node.0, 2048);
    if !need(free >= 8, "node needs at least 8 free 2M hugepages") {
        return;
    }
    let t = common::lying_facts(1 << 20);
    let before = free_all(2048);
    let err = Reservation::builder((free + 8) * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .noreserve(true)
        .facts(t)
        .build()
        .unwrap_err();
    match &err {
        Error::Populate {
            errno, page_size, ..
        } => {
            assert_eq!(*page_size, PageSize::Huge2M);
            assert!(
                *errno == libc::ENOMEM || *errno == libc::EFAULT,
                "errno {errno}"
            );
        }
        other => panic!("expected Populate, got {other:?}"),
    }
    assert!(err.to_string().contains("pool"), "{err}");
    assert_eq!(free_all(2048), before, "every faulted page went back");
}

#[test]
fn absent_and_bad_requests_are_refused_before_mapping() {
    let e = Reservation::builder(2 << 20)
        .node(NodeId(999))
        .build()
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::NodeAbsent {
                node: NodeId(999),
                ..
            }
        ),
        "{e}"
    );
    let e = Reservation::builder((1 << 30) + (2 << 20))
        .page_size(PageSize::Huge1G)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    assert!(e.to_string().contains("1 GiB"), "{e}");
    let e = Reservation::builder(4096 * 3 + 1)
        .page_size(PageSize::Base4K)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::InvalidSize { .. }), "{e}");
    let e = Reservation::builder(4096)
        .threads(0)
        .page_size(PageSize::Base4K)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::ZeroThreads), "{e}");
}

#[test]
fn auto_picks_the_largest_page_that_fits_and_says_why() {
    let node = node0();
    let _lock = pools_shared();
    let free2m = free_pages(node.0, 2048);
    if !need(free2m >= 8, "node needs 8 free 2M hugepages") {
        return;
    }
    // 16 MiB is no multiple of 1 GiB: auto must fall back from 1g, say why, and take 2m.
    let r = Reservation::builder(16 << 20).node(node).build().unwrap();
    let rep = r.report();
    assert_eq!(rep.requested_page_size, PageSize::Auto);
    assert_eq!(rep.page_size, PageSize::Huge2M);
    assert!(
        rep.notes.iter().any(|n| n.contains("not 1g")),
        "{:?}",
        rep.notes
    );
}

#[test]
fn verification_samples_above_the_limit() {
    let node = node0();
    let r = Reservation::builder(16 << 20)
        .node(node)
        .page_size(PageSize::Base4K)
        .lock(false)
        .verify_limit(100)
        .build()
        .unwrap();
    let rep = r.report();
    assert!(!rep.verified_all);
    assert!(
        rep.verified_pages <= 100 && rep.verified_pages >= 50,
        "{rep:?}"
    );
    assert_eq!(rep.total_pages, 4096);
    // The sample's share of the size: all of it, all on the node.
    assert_eq!(rep.placement.get(&node).copied(), Some(16 << 20));
}
