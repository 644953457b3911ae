//! Reservations as vm-memory guest memory: bytes written through `Bytes` land in the reserved
//! pages, regions keep their memory alive after every other handle is gone, the mapping goes
//! exactly when the last region does, and a region still being populated is usable at once.

mod common;

use common::{free_pages, need, pools_exclusive};
use numapin::vmm::{self, Layout, NumaGuestMemory};
use numapin::{Error, FaultGuarantee, NodeId, PageSize, Reservation, Topology};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryRegion, VolatileMemory};

const M2: u64 = 2 << 20;

fn node0() -> NodeId {
    Topology::from_sysfs().unwrap().nodes[0].id
}

/// Whether a mapping starts at `addr` in /proc/self/maps.
/// The tests of this file check that addresses are (un)mapped, which a concurrent test of the
/// same process could map again right after: they run one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn mapped_at(addr: *const u8) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let want = format!("{:x}-", addr as usize);
    maps.lines().any(|l| l.starts_with(&want))
}

/// Reads one byte of host memory through the owner's pointer, bypassing vm-memory.
fn host_byte(mem: &NumaGuestMemory, at: GuestAddress) -> u8 {
    let region = mem.find_region(at).expect("address inside the guest");
    let owner = vmm::owner(region);
    let off = (at.0 - region.start_addr().0) as usize;
    assert!(off < owner.len());
    // SAFETY: `off` is inside the owner's mapping, which lives while `mem` holds the region.
    unsafe { owner.as_ptr().add(off).read_volatile() }
}

#[test]
fn two_hugetlb_regions_bytes_land_in_the_reserved_pages() {
    let _serial = serial();
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 16, "node needs 16 free 2M hugepages") {
        return;
    }
    let regions = Reservation::build_many([
        Reservation::builder(8 * M2)
            .node(node)
            .page_size(PageSize::Huge2M),
        Reservation::builder(8 * M2)
            .node(node)
            .page_size(PageSize::Huge2M),
    ])
    .unwrap();
    let ptrs: Vec<*mut u8> = regions.iter().map(|r| r.as_ptr()).collect();
    let mut it = regions.into_iter();
    let (low, high) = (it.next().unwrap(), it.next().unwrap());
    // Added out of order: the layout sorts.
    let mem = Layout::new()
        .region(GuestAddress(4 << 30), high)
        .region(GuestAddress(0), low)
        .build()
        .unwrap();
    assert_eq!(mem.num_regions(), 2);
    assert_eq!(free_pages(node.0, 2048), before - 16);
    for r in mem.iter() {
        assert_eq!(r.is_hugetlbfs(), Some(true));
        assert_eq!(r.len(), 8 * M2);
        let owner = vmm::owner(r);
        assert_eq!(owner.page_size(), PageSize::Huge2M);
        assert_eq!(owner.guest_addr(), r.start_addr());
        assert_eq!(
            r.get_host_address(vm_memory::MemoryRegionAddress(0))
                .unwrap(),
            owner.as_ptr()
        );
        let report = owner.report().unwrap();
        assert_eq!(report.placement.get(&node).copied(), Some(8 * M2));
    }
    assert_eq!(vmm::owner(mem.iter().next().unwrap()).as_ptr(), ptrs[0]);
    assert_eq!(vmm::owner(mem.iter().nth(1).unwrap()).as_ptr(), ptrs[1]);

    // Write through Bytes at both regions' edges, read back through the host pointers.
    let spots = [
        0,
        M2 - 1,
        8 * M2 - 8,
        (4 << 30) + 12345,
        (4 << 30) + 8 * M2 - 1,
    ];
    for (i, &a) in spots.iter().enumerate() {
        mem.write_obj(0xa0u8 + i as u8, GuestAddress(a)).unwrap();
    }
    for (i, &a) in spots.iter().enumerate() {
        assert_eq!(host_byte(&mem, GuestAddress(a)), 0xa0 + i as u8, "{a:#x}");
        assert_eq!(mem.read_obj::<u8>(GuestAddress(a)).unwrap(), 0xa0 + i as u8);
    }
    let word = 0x1122_3344_5566_7788u64;
    mem.write_obj(word, GuestAddress((4 << 30) + 4 * M2))
        .unwrap();
    let host = vmm::owner(mem.find_region(GuestAddress(4 << 30)).unwrap()).as_ptr();
    // SAFETY: 4 * 2 MiB is inside the 16 MiB mapping, which `mem` keeps alive.
    let seen = unsafe { host.add(4 * M2 as usize).cast::<u64>().read_volatile() };
    assert_eq!(seen, word);
    // Outside both regions: vm-memory refuses.
    assert!(mem.write_obj(1u8, GuestAddress(8 * M2)).is_err());
    assert!(mem
        .write_obj(1u8, GuestAddress((4 << 30) + 8 * M2))
        .is_err());

    drop(mem);
    assert_eq!(free_pages(node.0, 2048), before, "every page went back");
    assert!(!mapped_at(ptrs[0]) && !mapped_at(ptrs[1]));
}

#[test]
fn the_mapping_goes_exactly_when_the_last_region_does() {
    let _serial = serial();
    let r = Reservation::builder(4 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .threads(1)
        .build()
        .unwrap();
    let ptr = r.as_ptr();
    let mem = Layout::new()
        .region(GuestAddress(1 << 20), r)
        .build()
        .unwrap();
    assert_eq!(
        mem.iter().next().unwrap().is_hugetlbfs(),
        Some(false),
        "base pages are not hugetlbfs"
    );
    mem.write_slice(b"still here", GuestAddress((1 << 20) + 100))
        .unwrap();
    // Keep one region (vm-memory's Arc of its mapping) and one owner; drop the guest memory.
    let keep = mem.iter().next().unwrap().get_mmap();
    let owner = vmm::owner(mem.iter().next().unwrap()).clone();
    let clone = mem.clone();
    drop(mem);
    assert!(mapped_at(ptr));
    drop(clone);
    assert!(mapped_at(ptr), "the kept region still holds the memory");
    let mut buf = [0u8; 10];
    keep.get_slice(100, 10).unwrap().copy_to(&mut buf[..]);
    assert_eq!(&buf, b"still here");
    drop(keep);
    assert!(mapped_at(ptr), "the owner handle still holds the memory");
    assert_eq!(owner.as_ptr(), ptr);
    drop(owner);
    assert!(!mapped_at(ptr), "unmapped with the last handle");
}

#[test]
fn a_refused_layout_releases_its_reservations() {
    let _serial = serial();
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 4, "node needs 4 free 2M hugepages") {
        return;
    }
    let a = Reservation::builder(2 * M2)
        .node(node)
        .page_size(PageSize::Huge2M)
        .build()
        .unwrap();
    let b = Reservation::builder(2 * M2)
        .node(node)
        .page_size(PageSize::Huge2M)
        .build_background()
        .unwrap();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    // `b` may still be populating: only `a`'s pages are surely taken.
    assert!(free_pages(node.0, 2048) <= before - 2);
    // 1 MiB is 4K-aligned but not 2M-aligned: KVM could not map it with huge pages.
    let e = Layout::new()
        .region(GuestAddress(0), a)
        .region(GuestAddress(1 << 30 | 1 << 20), b)
        .build()
        .unwrap_err();
    match &e {
        Error::GuestLayout {
            index, guest_addr, ..
        } => assert_eq!((*index, *guest_addr), (1, 1 << 30 | 1 << 20)),
        other => panic!("{other}"),
    }
    let m = e.to_string();
    assert!(m.contains("0x40000000") && m.contains("0x40200000"), "{m}");
    assert_eq!(free_pages(node.0, 2048), before);
    assert!(!mapped_at(pa) && !mapped_at(pb));
}

#[test]
fn a_guest_runs_on_regions_still_being_populated() {
    let _serial = serial();
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 256, "node needs 256 free 2M hugepages") {
        return;
    }
    let pending: Vec<_> = (0..2)
        .map(|_| {
            Reservation::builder(128 * M2)
                .node(node)
                .page_size(PageSize::Huge2M)
                .threads(1)
                .build_background()
                .unwrap()
        })
        .collect();
    let mut it = pending.into_iter();
    let mem = Layout::new()
        .region(GuestAddress(0), it.next().unwrap())
        .region(GuestAddress(1 << 30), it.next().unwrap())
        .build()
        .unwrap();
    for r in mem.iter() {
        assert_eq!(
            vmm::owner(r).fault_guarantee(),
            FaultGuarantee::HugetlbReserved
        );
        assert_eq!(r.is_hugetlbfs(), Some(true));
    }
    // The "guest" writes the last byte of every page, from the end, racing the workers.
    for base in [0u64, 1 << 30] {
        for i in (0..128u64).rev() {
            mem.write_obj(i as u8, GuestAddress(base + (i + 1) * M2 - 1))
                .unwrap();
        }
    }
    let p = vmm::progress(&mem);
    assert_eq!(p.total_bytes, 256 * M2);
    let reports = vmm::wait_populated(&mem).unwrap();
    assert_eq!(reports.len(), 2);
    for r in &reports {
        assert_eq!(r.placement.get(&node).copied(), Some(128 * M2));
    }
    assert_eq!(vmm::progress(&mem).done_bytes, 256 * M2);
    for base in [0u64, 1 << 30] {
        for i in 0..128u64 {
            let a = GuestAddress(base + (i + 1) * M2 - 1);
            assert_eq!(host_byte(&mem, a), i as u8, "population kept guest writes");
        }
    }
    // Waiting again is cheap and gives the same answer.
    assert_eq!(vmm::wait_populated(&mem).unwrap().len(), 2);
    assert_eq!(free_pages(node.0, 2048), before - 256);
    drop(mem);
    assert_eq!(free_pages(node.0, 2048), before);
}

/// A population that fails (pool short under MAP_NORESERVE, past a lying preflight) is
/// reported to the waiter, but the memory stays mapped while the guest region exists — the
/// guest may already use it — and goes with the region.
#[test]
fn a_failed_population_keeps_the_memory_until_the_region_goes() {
    let _serial = serial();
    let node = node0();
    let _lock = pools_exclusive();
    let free = free_pages(node.0, 2048);
    if !need(free >= 4, "node needs 4 free 2M hugepages") {
        return;
    }
    let t = common::lying_facts(1 << 20);
    let pages = free + 4;
    let pending = Reservation::builder(pages * M2)
        .node(node)
        .page_size(PageSize::Huge2M)
        .noreserve(true)
        .facts(t)
        .threads(1)
        .build_background()
        .unwrap();
    let ptr = pending.as_ptr();
    let mem = Layout::new()
        .region(GuestAddress(0), pending)
        .build()
        .unwrap();
    let owner = vmm::owner(mem.iter().next().unwrap()).clone();
    assert_eq!(owner.fault_guarantee(), FaultGuarantee::None);
    let e = owner.wait().unwrap_err();
    assert!(matches!(e, Error::Populate { .. }), "{e}");
    let again = owner.wait().unwrap_err();
    assert!(
        matches!(&again, Error::GuestPopulation { guest_addr: 0, source } if source.to_string() == e.to_string() && matches!(**source, Error::Populate { .. })),
        "{again}"
    );
    assert!(!owner.is_populated());
    assert!(mapped_at(ptr), "still mapped: the guest may hold it");
    // The pages populated before the failure are still readable through the guest memory.
    assert_eq!(mem.read_obj::<u8>(GuestAddress(0)).unwrap(), 0);
    drop(owner);
    drop(mem);
    assert!(!mapped_at(ptr));
    assert_eq!(free_pages(node.0, 2048), free, "every page went back");
}

/// Hot-plug: regions built on their own join an existing guest memory with vm-memory's
/// `insert_region`, and stay owned the same way.
#[test]
fn regions_can_be_hot_plugged() {
    let _serial = serial();
    let base = |size| {
        Reservation::builder(size)
            .page_size(PageSize::Base4K)
            .lock(false)
            .threads(1)
            .build()
            .unwrap()
    };
    let mem = Layout::new()
        .region(GuestAddress(0), base(2 << 20))
        .build()
        .unwrap();
    let plug = Layout::new()
        .region(GuestAddress(1 << 30), base(4 << 20))
        .build_regions()
        .unwrap();
    assert_eq!(plug.len(), 1);
    let ptr = vmm::owner(&plug[0]).as_ptr();
    let region = std::sync::Arc::new(plug.into_iter().next().unwrap());
    let bigger = mem.insert_region(region).unwrap();
    drop(mem);
    assert_eq!(bigger.num_regions(), 2);
    bigger
        .write_obj(0x55aa_u16, GuestAddress((1 << 30) + 4094))
        .unwrap();
    // SAFETY: inside the plugged 4 MiB mapping, which `bigger` keeps alive.
    let seen = unsafe { ptr.add(4094).cast::<u16>().read_unaligned() };
    assert_eq!(seen, 0x55aa);
    drop(bigger);
    assert!(!mapped_at(ptr));
}

/// Dirty-page tracking (for live migration) still works: the owner forwards every bitmap call
/// to the inner `AtomicBitmap`.
#[test]
fn dirty_tracking_goes_through_the_owner() {
    let _serial = serial();
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    let r = Reservation::builder(1 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .threads(1)
        .build()
        .unwrap();
    let mem = Layout::<AtomicBitmap>::default()
        .region(GuestAddress(0), r)
        .build()
        .unwrap();
    let region = mem.iter().next().unwrap();
    let bitmap = region.get_mmap();
    let bitmap = bitmap.bitmap();
    assert!(!bitmap.dirty_at(5 * 4096));
    mem.write_obj(7u8, GuestAddress(5 * 4096 + 1)).unwrap();
    assert!(bitmap.dirty_at(5 * 4096), "the write marked its page dirty");
    assert!(bitmap.inner().dirty_at(5 * 4096));
    assert!(!bitmap.dirty_at(6 * 4096), "and only its page");
}

const SHARED_CHILD_ENV: &str = "NUMAPIN_VMM_SHARED_CHILD";

/// A vhost-user front-end's job: a guest region built from a shared reservation carries its
/// `FileOffset`; a second process receives that descriptor and offset over a UNIX socket
/// (`SCM_RIGHTS`), adopts the file and reads, through vm-memory, what the first process wrote
/// through vm-memory.
#[test]
fn a_shared_region_carries_its_file_offset_to_another_process() {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;
    use std::os::unix::net::{UnixListener, UnixStream};
    if let Some(sock) = std::env::var_os(SHARED_CHILD_ENV) {
        // The back-end: receive (fd, offset, guest address, length), adopt, read.
        let mut s = UnixStream::connect(sock).unwrap();
        let mut buf = [0u8; 128];
        let (n, fd) = numapin::shared::recv_fd(&s, &mut buf).unwrap();
        let msg = std::str::from_utf8(&buf[..n]).unwrap().to_string();
        let v: Vec<u64> = msg.split_whitespace().map(|x| x.parse().unwrap()).collect();
        let (offset, gpa, len) = (v[0], v[1], v[2]);
        assert_eq!(offset, 0, "numapin maps whole files");
        let r = Reservation::adopt(fd.expect("a descriptor"))
            .size(len)
            .build()
            .unwrap();
        let mem = Layout::new().region(GuestAddress(gpa), r).build().unwrap();
        let a: u64 = mem.read_obj(GuestAddress(gpa + 0x1000)).unwrap();
        let b: u32 = mem.read_obj(GuestAddress(gpa + len - 4)).unwrap();
        writeln!(s, "{a:#x} {b:#x}").unwrap();
        return;
    }
    let _serial = serial();
    let node = node0();
    let _lock = pools_exclusive();
    if !need(
        free_pages(node.0, 2048) >= 8,
        "node needs 8 free 2M hugepages",
    ) {
        return;
    }
    let len = 8 * M2;
    let r = Reservation::builder(len)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .unwrap();
    let gpa = 1 << 32;
    let mem = Layout::new().region(GuestAddress(gpa), r).build().unwrap();
    mem.write_obj(0x0123_4567_89ab_cdef_u64, GuestAddress(gpa + 0x1000))
        .unwrap();
    mem.write_obj(0xfeed_f00d_u32, GuestAddress(gpa + len - 4))
        .unwrap();
    let region = mem.find_region(GuestAddress(gpa)).unwrap();
    let fo = region
        .file_offset()
        .expect("a shared region carries its FileOffset");
    let path = common::TempPath::new("vmm-shared.sock");
    let listener = UnixListener::bind(&path.0).unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "a_shared_region_carries_its_file_offset_to_another_process",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SHARED_CHILD_ENV, &path.0)
        .spawn()
        .unwrap();
    let mut s = common::accept_from(&listener, &mut child);
    numapin::shared::send_fd(
        &s,
        fo.file().as_fd(),
        format!("{} {gpa} {len}", fo.start()).as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(child.wait().unwrap().success(), "child failed: {reply}");
    assert_eq!(reply.trim(), "0x123456789abcdef 0xfeedf00d");
    // A private region has none.
    let p = Reservation::builder(M2)
        .page_size(PageSize::Base4K)
        .lock(false)
        .build()
        .unwrap();
    let pm = Layout::new().region(GuestAddress(0), p).build().unwrap();
    assert!(pm
        .find_region(GuestAddress(0))
        .unwrap()
        .file_offset()
        .is_none());
}
