//! Background population: the region is usable before it is populated, the guest's own
//! faults succeed because the kernel reserved the pages at mmap, the one case where that
//! guarantee does not hold (MAP_NORESERVE) really raises SIGBUS, and dropping or failing
//! leaves nothing behind.

mod common;

use std::process::Command;

use common::{free_pages, need, pools_exclusive};
use numapin::{Error, FaultGuarantee, NodeId, PageSize, Reservation, Topology};

fn node0() -> NodeId {
    Topology::from_sysfs().unwrap().nodes[0].id
}

#[test]
fn the_guest_can_touch_pages_before_the_workers_reach_them() {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 128, "node needs 128 free 2M hugepages") {
        return;
    }
    let pending = Reservation::builder(128 * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .threads(1)
        .build_background()
        .unwrap();
    assert_eq!(pending.fault_guarantee(), FaultGuarantee::HugetlbReserved);
    // Touch every page from the end, racing the worker that starts at the front.
    let base = pending.as_ptr();
    for i in (0..128usize).rev() {
        // SAFETY: inside the pending reservation's mapping, which lives until `wait`; nothing
        // else writes this byte (population never changes present pages).
        unsafe { base.add(i * (2 << 20) + 7).write_volatile(i as u8) };
    }
    let r = pending.wait().unwrap();
    let s = r.as_slice();
    for i in 0..128usize {
        assert_eq!(
            s[i * (2 << 20) + 7],
            i as u8,
            "population must not clobber guest writes"
        );
    }
    assert_eq!(
        r.report().placement.get(&node).copied(),
        Some(128 * (2 << 20))
    );
    assert_eq!(free_pages(node.0, 2048), before - 128);
    drop(r);
    assert_eq!(free_pages(node.0, 2048), before);
}

#[test]
fn progress_reaches_the_total() {
    let pending = Reservation::builder(64 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .build_background()
        .unwrap();
    assert_eq!(pending.fault_guarantee(), FaultGuarantee::OnDemand);
    let p0 = pending.progress();
    assert_eq!(p0.total_bytes, 64 << 20);
    while !pending.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    let p = pending.progress();
    assert_eq!(p.done_bytes, 64 << 20);
    assert!(p.done_bytes >= p0.done_bytes);
    assert!((p.fraction() - 1.0).abs() < 1e-9);
    let r = pending.wait().unwrap();
    assert_eq!(r.report().placement.values().sum::<u64>(), 64 << 20);
}

#[test]
fn dropping_a_pending_reservation_returns_every_page() {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 256, "node needs 256 free 2M hugepages") {
        return;
    }
    let pending = Reservation::builder(256 * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .threads(1)
        .build_background()
        .unwrap();
    drop(pending);
    assert_eq!(free_pages(node.0, 2048), before);
}

#[test]
fn build_many_is_all_or_nothing() {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 16, "node needs 16 free 2M hugepages") {
        return;
    }
    let two = Reservation::build_many([
        Reservation::builder(8 << 20)
            .node(node)
            .page_size(PageSize::Huge2M),
        Reservation::builder(8 << 20)
            .node(node)
            .page_size(PageSize::Huge2M),
    ])
    .unwrap();
    assert_eq!(two.len(), 2);
    assert_eq!(free_pages(node.0, 2048), before - 8);
    drop(two);
    let err = Reservation::build_many([
        Reservation::builder(8 << 20)
            .node(node)
            .page_size(PageSize::Huge2M),
        Reservation::builder((before + 1) * (2 << 20))
            .node(node)
            .page_size(PageSize::Huge2M),
    ])
    .unwrap_err();
    assert!(matches!(err, Error::HugepagesShort { .. }), "{err}");
    assert_eq!(
        free_pages(node.0, 2048),
        before,
        "the first region was released"
    );
}

const CHILD_ENV: &str = "NUMAPIN_SIGBUS_CHILD";

/// Where the guarantee does not hold: with MAP_NORESERVE nothing is set aside, so when the
/// pool is short the workers fail and a guest touching an unpopulated page gets SIGBUS. The
/// child process does exactly that; the parent checks it died of SIGBUS and the pool is whole.
#[test]
fn without_a_reservation_an_unpopulated_page_can_sigbus() {
    if std::env::var_os(CHILD_ENV).is_some() {
        let node = node0();
        let free = free_pages(node.0, 2048);
        // Claim more than the pool has, past the preflight (a topology that lies).
        let t = common::lying_facts(1 << 20);
        let pages = free as usize + 4;
        let pending = Reservation::builder(pages as u64 * (2 << 20))
            .node(node)
            .page_size(PageSize::Huge2M)
            .noreserve(true)
            .facts(t)
            .threads(1)
            .build_background()
            .unwrap();
        assert_eq!(pending.fault_guarantee(), FaultGuarantee::None);
        let base = pending.as_ptr();
        // Wait until the workers gave up (the pool ran dry), then touch every page.
        while !pending.is_finished() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        println!("touching");
        for i in 0..pages {
            // SAFETY: inside the mapping, which is alive; a fault with no page left raises
            // SIGBUS, which is what this child exists to show.
            unsafe { base.add(i * (2 << 20)).write_volatile(1) };
        }
        println!("survived");
        return;
    }
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 4, "node needs 4 free 2M hugepages") {
        return;
    }
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "without_a_reservation_an_unpopulated_page_can_sigbus",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, "1")
        .output()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGBUS),
        "child: {:?}\n{text}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("touching") && !text.contains("survived"),
        "{text}"
    );
    assert_eq!(
        free_pages(node.0, 2048),
        before,
        "the dead child's pages went back"
    );
}
