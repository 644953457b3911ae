//! Shared reservations: a sealed memfd built by the same pipeline as a private reservation,
//! adopted by another process without allocating a page, and bad descriptors refused with
//! typed errors. Checked from the kernel's side: pool free counts, seals, smaps, move_pages.

mod common;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::process::{Child, Command};
use std::time::Instant;

use common::{free_pages, need, pool_eq, pools_exclusive, pools_shared, retry_pool, TempPath};
use numapin::shared::{self, AdoptProblem, FileBacking, Seals};
use numapin::{Error, NodeId, PageSize, Reservation, Topology};

fn node0() -> NodeId {
    Topology::from_sysfs()
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.has_memory())
        .unwrap()
        .id
}

const CHILD_ENV: &str = "NUMAPIN_SHARED_CHILD";

/// Runs this test binary's test `name` in a child process that connects to `socket`.
fn spawn_child(name: &str, socket: &std::path::Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, socket)
        .spawn()
        .unwrap()
}

fn pattern(i: usize) -> u8 {
    (i as u8).wrapping_mul(31).wrapping_add(7)
}

/// A 2M shared reservation is a sealed hugetlbfs memfd whose pages come from the node's pool
/// (exactly as many as the size), and nobody holding the descriptor can resize it.
#[test]
fn a_2m_shared_reservation_is_a_sealed_populated_hugetlb_memfd() {
    retry_pool(
        "a_2m_shared_reservation_is_a_sealed_populated_hugetlb_memfd",
        a_2m_shared_reservation_is_a_sealed_populated_hugetlb_memfd_body,
    );
}

fn a_2m_shared_reservation_is_a_sealed_populated_hugetlb_memfd_body() -> Result<(), String> {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 32, "node needs 32 free 2M hugepages") {
        return Ok(());
    }
    let r = Reservation::builder(32 << 20)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .unwrap();
    pool_eq!(free_pages(node.0, 2048), before - 16);
    assert!(r.report().shared);
    assert_eq!(r.report().placement.get(&node), Some(&(32 << 20)));
    let fd = r.as_fd().expect("a shared reservation has a file");
    let f = shared::inspect(fd).unwrap();
    assert_eq!(f.backing, FileBacking::Hugetlbfs(PageSize::Huge2M));
    assert_eq!(f.size, 32 << 20);
    assert_eq!(f.allocated, 32 << 20, "every page exists");
    assert_eq!(f.seals, Seals::REQUIRED);
    for len in [0, 16 << 20, 64 << 20] {
        assert_eq!(
            rustix::fs::ftruncate(fd, len),
            Err(rustix::io::Errno::PERM),
            "resize to {len} must be refused by the seals"
        );
    }
    assert_eq!(
        rustix::fs::fcntl_add_seals(fd, rustix::fs::SealFlags::WRITE),
        Err(rustix::io::Errno::PERM),
        "F_SEAL_SEAL: no seal can be added (or removed)"
    );
    // The mapping is shared and hugetlb in smaps.
    let vma = numapin::smaps::vma_info(r.as_ptr() as usize)
        .unwrap()
        .unwrap();
    assert_eq!(vma.kernel_page_size, 2 << 20);
    assert!(vma.flags.iter().any(|f| f == "sh"), "{:?}", vma.flags);
    drop(r);
    pool_eq!(free_pages(node.0, 2048), before, "the pages went back");
    Ok(())
}

/// `into_fd` unmaps this process's view but the memory (and what was written) lives on in the
/// file; adopting it again finds the data and moves no pool page.
#[test]
fn into_fd_keeps_the_memory_and_adopt_finds_it() {
    retry_pool(
        "into_fd_keeps_the_memory_and_adopt_finds_it",
        into_fd_keeps_the_memory_and_adopt_finds_it_body,
    );
}

fn into_fd_keeps_the_memory_and_adopt_finds_it_body() -> Result<(), String> {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 8, "node needs 8 free 2M hugepages") {
        return Ok(());
    }
    let mut r = Reservation::builder(16 << 20)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .unwrap();
    for (i, b) in r.as_mut_slice().iter_mut().enumerate().step_by(4093) {
        *b = pattern(i);
    }
    let (fd, charge) = r.into_fd().unwrap();
    assert!(charge.is_none());
    pool_eq!(free_pages(node.0, 2048), before - 8, "the file holds them");
    let a = Reservation::adopt(fd)
        .size(16 << 20)
        .page_size(PageSize::Huge2M)
        .node(node)
        .build()
        .unwrap();
    pool_eq!(free_pages(node.0, 2048), before - 8, "adopting took none");
    for (i, b) in a.as_slice().iter().enumerate().step_by(4093) {
        assert_eq!(*b, pattern(i), "byte {i}");
    }
    assert!(a.report().verified_all);
    assert_eq!(a.report().placement.get(&node), Some(&(16 << 20)));
    drop(a);
    pool_eq!(free_pages(node.0, 2048), before);
    Ok(())
}

/// The check: another process adopts 1 GiB of 2M pages; the pool's free count does
/// not move, the data written by the first is there, and adopting takes a small fraction of
/// the time populating took.
#[test]
fn another_process_adopts_1g_without_a_new_page_and_fast() {
    if let Some(sock) = std::env::var_os(CHILD_ENV) {
        let mut s = UnixStream::connect(sock).unwrap();
        let mut buf = [0u8; 64];
        let (n, fd) = shared::recv_fd(&s, &mut buf).unwrap();
        let text = std::str::from_utf8(&buf[..n]).unwrap().to_string();
        let mut it = text.split_whitespace().map(|v| v.parse::<u64>().unwrap());
        let (node, free_before) = (NodeId(it.next().unwrap() as u32), it.next().unwrap());
        let t0 = Instant::now();
        let a = Reservation::adopt(fd.expect("a descriptor"))
            .size(1 << 30)
            .page_size(PageSize::Huge2M)
            .node(node)
            .build()
            .unwrap();
        let adopt_s = t0.elapsed().as_secs_f64();
        let free_now = free_pages(node.0, 2048);
        let mut bad = 0;
        for (i, b) in a.as_slice().iter().enumerate().step_by(1 << 20) {
            bad += usize::from(*b != pattern(i));
        }
        writeln!(s, "{adopt_s} {free_before} {free_now} {bad}").unwrap();
        return;
    }
    retry_pool(
        "another_process_adopts_1g_without_a_new_page_and_fast",
        another_process_adopts_1g_without_a_new_page_and_fast_body,
    );
}

fn another_process_adopts_1g_without_a_new_page_and_fast_body() -> Result<(), String> {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 512, "node needs 512 free 2M hugepages (1 GiB)") {
        return Ok(());
    }
    let t0 = Instant::now();
    let mut r = Reservation::builder(1 << 30)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .unwrap();
    let build_s = t0.elapsed().as_secs_f64();
    let populate_s = r.report().populate_seconds;
    for (i, b) in r.as_mut_slice().iter_mut().enumerate().step_by(1 << 20) {
        *b = pattern(i);
    }
    let held = free_pages(node.0, 2048);
    pool_eq!(held, before - 512);
    let path = TempPath::new("adopt.sock");
    let listener = UnixListener::bind(&path.0).unwrap();
    let mut child = spawn_child(
        "another_process_adopts_1g_without_a_new_page_and_fast",
        &path.0,
    );
    let mut s = common::accept_from(&listener, &mut child);
    shared::send_fd(
        &s,
        r.as_fd().unwrap(),
        format!("{} {held}", node.0).as_bytes(),
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(child.wait().unwrap().success(), "child failed: {reply}");
    let v: Vec<f64> = reply
        .split_whitespace()
        .map(|x| x.parse().unwrap())
        .collect();
    let (adopt_s, free_before, free_now, bad) = (v[0], v[1], v[2], v[3]);
    eprintln!(
        "1 GiB of 2M: build {build_s:.3}s (populate {populate_s:.3}s), adopt in another process {adopt_s:.4}s: {:.0}x",
        populate_s / adopt_s
    );
    pool_eq!(free_now, free_before, "adopting moved the pool");
    assert_eq!(bad, 0.0, "the child read other bytes than the parent wrote");
    assert!(
        adopt_s * 5.0 < populate_s,
        "adopting ({adopt_s:.4}s) should take a small fraction of populating ({populate_s:.4}s)"
    );
    pool_eq!(
        free_pages(node.0, 2048),
        held,
        "the child's exit freed nothing"
    );
    drop(r);
    pool_eq!(free_pages(node.0, 2048), before);
    Ok(())
}

/// A shmem (4k) shared reservation: locked, and writes through one mapping are seen through
/// the other (adopted) one; the adopter locks its own mapping too.
#[test]
fn a_4k_shared_reservation_is_shmem_and_adopted_locked() {
    let _lock = pools_exclusive();
    let lim = numapin::process::memlock_limit();
    if !need(
        lim >= 64 << 20 || numapin::process::has_cap_ipc_lock(),
        "RLIMIT_MEMLOCK below 64 MiB and no CAP_IPC_LOCK",
    ) {
        return;
    }
    let mut r = Reservation::builder(8 << 20)
        .node(node0())
        .page_size(PageSize::Base4K)
        .shared(true)
        .build()
        .unwrap();
    let f = shared::inspect(r.as_fd().unwrap()).unwrap();
    assert_eq!(f.backing, FileBacking::Shmem);
    assert_eq!(f.allocated, 8 << 20);
    let dup: OwnedFd = r.as_fd().unwrap().try_clone_to_owned().unwrap();
    let a = Reservation::adopt(dup)
        .page_size(PageSize::Base4K)
        .build()
        .unwrap();
    assert_eq!(a.report().lock, numapin::LockKind::Mlock);
    let vma = numapin::smaps::vma_info(a.as_ptr() as usize)
        .unwrap()
        .unwrap();
    // `Locked` in smaps is proportional (the pages are mapped twice here); the flag and the
    // resident size say it all.
    assert!(vma.flags.iter().any(|f| f == "lo"), "{:?}", vma.flags);
    assert_eq!(vma.rss, 8 << 20, "every page mapped, none faulted anew");
    r.as_mut_slice()[5000] = 0xa5;
    assert_eq!(a.as_slice()[5000], 0xa5);
}

fn problem(e: Error) -> AdoptProblem {
    match e {
        Error::NotAdoptable { problem, .. } => problem,
        other => panic!("expected NotAdoptable, got {other:?}"),
    }
}

/// Bad descriptors: a pipe, a socket, a file on disk, an unsealed memfd, a write-sealed one,
/// an unpopulated one, the wrong size and the wrong page size. Each a typed error.
#[test]
fn a_shared_reservations_memory_file_is_named_after_its_vm() {
    let _lock = pools_shared();
    if !need(
        numapin::process::memlock_limit() >= 4 << 20 || numapin::process::has_cap_ipc_lock(),
        "RLIMIT_MEMLOCK below 4 MiB and no CAP_IPC_LOCK",
    ) {
        return;
    }
    let ledger = std::sync::Arc::new(
        numapin::Ledger::in_memory(&[numapin::ClassSpec::new(node0(), 4096, 1 << 30)], 8).unwrap(),
    );
    let name = |vm: &str| {
        let r = Reservation::builder(2 << 20)
            .node(node0())
            .page_size(PageSize::Base4K)
            .shared(true)
            .ledger(std::sync::Arc::clone(&ledger))
            .vm(vm)
            .build()
            .unwrap();
        let fd = r.as_fd().unwrap().as_raw_fd();
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    assert_eq!(name("web-1"), "/memfd:numapin:web-1 (deleted)");
    assert_eq!(
        name(numapin::snapshot::WARM_VM_NAME),
        "/memfd:numapin:pool (deleted)"
    );
}

#[test]
fn bad_descriptors_are_refused_with_what_is_wrong() {
    let _lock = pools_exclusive();
    let (r, _w) = rustix::pipe::pipe().unwrap();
    assert_eq!(
        problem(Reservation::adopt(r).build().unwrap_err()),
        AdoptProblem::NotAFile { kind: "pipe" }
    );
    let (a, _b) = UnixStream::pair().unwrap();
    assert_eq!(
        problem(Reservation::adopt(a.into()).build().unwrap_err()),
        AdoptProblem::NotAFile { kind: "socket" }
    );
    let tmp = TempPath::new("not-a-memfd");
    std::fs::write(&tmp.0, vec![0u8; 1 << 20]).unwrap();
    let f = std::fs::File::options()
        .read(true)
        .write(true)
        .open(&tmp.0)
        .unwrap();
    let e = Reservation::adopt(f.into()).build().unwrap_err();
    let msg = e.to_string();
    match problem(e) {
        AdoptProblem::NotMemfd { filesystem, path } => {
            assert_eq!(filesystem, "tmpfs");
            assert!(path.contains("not-a-memfd"), "{path}");
        }
        other => panic!("{other:?}"),
    }
    assert!(msg.contains("not a memfd"), "{msg}");

    let unsealed = rustix::fs::memfd_create(
        "unsealed",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&unsealed, 1 << 20).unwrap();
    match problem(Reservation::adopt(unsealed).build().unwrap_err()) {
        AdoptProblem::Unsealed { missing, .. } => {
            assert_eq!(missing, ["F_SEAL_SHRINK", "F_SEAL_GROW", "F_SEAL_SEAL"])
        }
        other => panic!("{other:?}"),
    }
    let ws = rustix::fs::memfd_create(
        "write-sealed",
        rustix::fs::MemfdFlags::CLOEXEC | rustix::fs::MemfdFlags::ALLOW_SEALING,
    )
    .unwrap();
    rustix::fs::ftruncate(&ws, 1 << 20).unwrap();
    rustix::fs::fcntl_add_seals(
        &ws,
        rustix::fs::SealFlags::SHRINK
            | rustix::fs::SealFlags::GROW
            | rustix::fs::SealFlags::WRITE
            | rustix::fs::SealFlags::SEAL,
    )
    .unwrap();
    assert!(matches!(
        problem(Reservation::adopt(ws).build().unwrap_err()),
        AdoptProblem::WriteSealed { .. }
    ));
    // Sealed but never populated: adopting would allocate and zero every page.
    let empty = shared::create_sealed("empty", PageSize::Base4K, 1 << 20).unwrap();
    assert_eq!(
        problem(Reservation::adopt(empty).build().unwrap_err()),
        AdoptProblem::NotPopulated {
            size: 1 << 20,
            allocated: 0
        }
    );
    // A good one, asked for the wrong size and page size.
    let good = Reservation::builder(1 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .shared(true)
        .build()
        .unwrap();
    let dup = || good.as_fd().unwrap().try_clone_to_owned().unwrap();
    assert_eq!(
        problem(Reservation::adopt(dup()).size(2 << 20).build().unwrap_err()),
        AdoptProblem::WrongSize {
            expected: 2 << 20,
            actual: 1 << 20
        }
    );
    assert_eq!(
        problem(
            Reservation::adopt(dup())
                .page_size(PageSize::Huge2M)
                .build()
                .unwrap_err()
        ),
        AdoptProblem::WrongPageSize {
            expected: PageSize::Huge2M,
            actual: PageSize::Base4K
        }
    );
    let e = Reservation::adopt(dup()).size(2 << 20).build().unwrap_err();
    assert!(e.to_string().contains("but 2 MiB"), "{e}");
}

/// A placement refused after mapping unmaps and closes: nothing of the adopted file stays in
/// this process.
#[test]
fn a_refused_placement_leaves_nothing_mapped() {
    let _lock = pools_exclusive();
    let topo = Topology::from_sysfs().unwrap();
    let absent = NodeId(topo.nodes.iter().map(|n| n.id.0).max().unwrap() + 1);
    let good = Reservation::builder(1 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .shared(true)
        .build()
        .unwrap();
    let dup = good.as_fd().unwrap().try_clone_to_owned().unwrap();
    let raw = dup.as_raw_fd();
    let maps = || {
        std::fs::read_to_string("/proc/self/maps")
            .unwrap()
            .lines()
            .filter(|l| l.contains("/memfd:numapin"))
            .count()
    };
    let mapped = maps();
    let e = Reservation::adopt(dup).node(absent).build().unwrap_err();
    assert!(matches!(e, Error::Misplaced { .. }), "{e}");
    assert_eq!(maps(), mapped, "the adopter's mapping was removed");
    // The descriptor was closed (its number is free or reused by something else).
    let still = std::fs::read_link(format!("/proc/self/fd/{raw}"))
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    assert!(!still.starts_with("/memfd:numapin"), "fd {raw} still open");
    let _ = good.as_fd().unwrap().as_fd();
}

/// Puts `/sys/kernel/mm/transparent_hugepage/shmem_enabled` back on drop (also on failure).
struct ShmemThpMode(String);

impl Drop for ShmemThpMode {
    fn drop(&mut self) {
        let _ = std::fs::write(SHMEM_THP, &self.0);
    }
}

const SHMEM_THP: &str = "/sys/kernel/mm/transparent_hugepage/shmem_enabled";

fn selected(text: &str) -> String {
    text.split_whitespace()
        .find(|w| w.starts_with('['))
        .unwrap_or("")
        .trim_matches(['[', ']'])
        .to_string()
}

/// A shared THP reservation is a shmem file, so it follows `shmem_enabled`, not `enabled`:
/// refused with `ShmemThpUnavailable` (naming the mode and the fix) when shmem THP is off, and
/// backed by huge pages (`ShmemPmdMapped`) when it is `advise`. The host's mode is restored.
#[test]
fn shared_thp_follows_shmem_enabled() {
    let Ok(text) = std::fs::read_to_string(SHMEM_THP) else {
        let _ = need(false, "the kernel has no shmem THP (no shmem_enabled)");
        return;
    };
    if !need(common::is_root(), "changing shmem_enabled needs root") {
        return;
    }
    let _lock = pools_exclusive();
    let _restore = ShmemThpMode(selected(&text));
    let per_size = "/sys/kernel/mm/transparent_hugepage/hugepages-2048kB/shmem_enabled";
    let inherits = std::fs::read_to_string(per_size).map_or(true, |t| selected(&t) == "inherit");
    if !need(
        inherits,
        "the 2 MiB size has its own shmem_enabled (not `inherit`)",
    ) {
        return;
    }
    let b = || {
        Reservation::builder(8 << 20)
            .node(node0())
            .page_size(PageSize::Transparent)
            .shared(true)
    };
    std::fs::write(SHMEM_THP, "never").unwrap();
    let e = b().preflight().unwrap_err();
    assert!(
        matches!(&e, Error::ShmemThpUnavailable { mode } if mode == "never"),
        "{e:?}"
    );
    assert!(e.to_string().contains("shmem_enabled"), "{e}");
    // Auto for a shared reservation never lands on THP with shmem THP off.
    let plan = Reservation::builder(8 << 20)
        .node(node0())
        .shared(true)
        .preflight()
        .unwrap();
    assert_ne!(plan.page_size, PageSize::Transparent, "{:?}", plan.notes);

    std::fs::write(SHMEM_THP, "advise").unwrap();
    let r = b().build().unwrap();
    let thp = r.report().thp_bytes.expect("a THP report");
    assert!(
        thp > 0,
        "no huge page backs the shmem file: {:?}",
        r.report().notes
    );
    let vma = numapin::smaps::vma_info(r.as_ptr() as usize)
        .unwrap()
        .unwrap();
    assert_eq!(vma.shmem_pmd_mapped, thp);
}

/// The seals cannot stop a writer from punching a hole (only `F_SEAL_WRITE` could, and guest
/// RAM must stay writable): `adopt` then refuses the file instead of silently allocating
/// (and zeroing) the missing pages in the adopter.
#[test]
fn adopt_refuses_a_file_with_a_punched_hole() {
    let _lock = pools_exclusive();
    let r = Reservation::builder(1 << 20)
        .page_size(PageSize::Base4K)
        .lock(false)
        .shared(true)
        .build()
        .unwrap();
    let fd = r.as_fd().unwrap();
    rustix::fs::fallocate(
        fd,
        rustix::fs::FallocateFlags::PUNCH_HOLE | rustix::fs::FallocateFlags::KEEP_SIZE,
        64 << 10,
        8 << 10,
    )
    .expect("the seals allow punching holes");
    let e = Reservation::adopt(fd.try_clone_to_owned().unwrap())
        .build()
        .unwrap_err();
    assert_eq!(
        problem(e),
        AdoptProblem::NotPopulated {
            size: 1 << 20,
            allocated: (1 << 20) - (8 << 10)
        }
    );
}

/// A shared reservation that fails after its file exists (the kernel's reservation at `mmap`
/// finds the pool short: the topology given to the builder claimed more free pages than
/// there are) leaves no descriptor, no mapping and no pool page behind.
#[test]
fn a_failed_shared_reservation_leaves_no_file_behind() {
    retry_pool(
        "a_failed_shared_reservation_leaves_no_file_behind",
        a_failed_shared_reservation_leaves_no_file_behind_body,
    );
}

fn a_failed_shared_reservation_leaves_no_file_behind_body() -> Result<(), String> {
    let node = node0();
    let _lock = pools_exclusive();
    let free = free_pages(node.0, 2048);
    if !need(free >= 1, "node needs a free 2M hugepage") {
        return Ok(());
    }
    let mut t = Topology::from_sysfs().unwrap();
    for n in &mut t.nodes {
        for p in &mut n.hugepages {
            p.free += 1 << 20;
        }
    }
    let memfds = || {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|e| {
                std::fs::read_link(e.path())
                    .is_ok_and(|t| t.to_string_lossy().starts_with("/memfd:numapin"))
            })
            .count()
    };
    let open_before = memfds();
    let e = Reservation::builder((free + 8) * (2 << 20))
        .node(node)
        .page_size(PageSize::Huge2M)
        .topology(t)
        .shared(true)
        .build()
        .unwrap_err();
    assert!(matches!(e, Error::HugepagesShort { .. }), "{e}");
    assert_eq!(memfds(), open_before, "the memfd was closed");
    pool_eq!(free_pages(node.0, 2048), free);
    Ok(())
}

/// 1 GiB pages: the memfd is `MFD_HUGE_1GB`, `inspect` reads the page size from the file
/// (`st_blksize`), and adopting it takes no page from the 1G pool.
#[test]
fn a_1g_shared_reservation_is_adopted_as_1g() {
    retry_pool(
        "a_1g_shared_reservation_is_adopted_as_1g",
        a_1g_shared_reservation_is_adopted_as_1g_body,
    );
}

fn a_1g_shared_reservation_is_adopted_as_1g_body() -> Result<(), String> {
    let node = node0();
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 1 << 20);
    if !need(before >= 1, "node needs a free 1G hugepage") {
        return Ok(());
    }
    let r = Reservation::builder(1 << 30)
        .node(node)
        .page_size(PageSize::Huge1G)
        .shared(true)
        .build()
        .unwrap();
    let f = shared::inspect(r.as_fd().unwrap()).unwrap();
    assert_eq!(f.backing, FileBacking::Hugetlbfs(PageSize::Huge1G));
    pool_eq!(free_pages(node.0, 1 << 20), before - 1);
    let a = Reservation::adopt(r.as_fd().unwrap().try_clone_to_owned().unwrap())
        .page_size(PageSize::Huge1G)
        .node(node)
        .build()
        .unwrap();
    assert_eq!(a.page_size(), PageSize::Huge1G);
    assert_eq!(a.report().total_pages, 1);
    pool_eq!(
        free_pages(node.0, 1 << 20),
        before - 1,
        "adopting took none"
    );
    assert_eq!(
        problem(
            Reservation::adopt(r.as_fd().unwrap().try_clone_to_owned().unwrap())
                .page_size(PageSize::Huge2M)
                .build()
                .unwrap_err()
        ),
        AdoptProblem::WrongPageSize {
            expected: PageSize::Huge2M,
            actual: PageSize::Huge1G
        }
    );
    drop((a, r));
    pool_eq!(free_pages(node.0, 1 << 20), before);
    Ok(())
}

const NOBODY_ENV: &str = "NUMAPIN_SHARED_NOBODY";

/// The usual deployment: root (or a service) reserves, an unprivileged VMM (uid `nobody`
/// here) receives the memfd. It can adopt and read the memory, and the seals hold against it
/// (truncate and grow refused, no seal can be added); no pool page moves.
#[test]
fn an_unprivileged_process_adopts_and_cannot_resize() {
    if let Some(sock) = std::env::var_os(NOBODY_ENV) {
        let uid = rustix::process::getuid().as_raw();
        let mut s = UnixStream::connect(sock).unwrap();
        let mut buf = [0u8; 16];
        let (_, fd) = shared::recv_fd(&s, &mut buf).unwrap();
        let a = Reservation::adopt(fd.unwrap())
            .size(16 << 20)
            .page_size(PageSize::Huge2M)
            .build()
            .unwrap();
        let pattern_ok = a
            .as_slice()
            .iter()
            .enumerate()
            .step_by(4093)
            .all(|(i, b)| *b == pattern(i));
        let fd = a.as_fd().unwrap();
        let eperm = |r: rustix::io::Result<()>| match r {
            Err(rustix::io::Errno::PERM) => "EPERM".to_string(),
            other => format!("{other:?}"),
        };
        let shrink = eperm(rustix::fs::ftruncate(fd, 2 << 20));
        let grow = eperm(rustix::fs::ftruncate(fd, 32 << 20));
        let seal = eperm(rustix::fs::fcntl_add_seals(
            fd,
            rustix::fs::SealFlags::WRITE,
        ));
        writeln!(
            s,
            "uid={uid} pattern={pattern_ok} shrink={shrink} grow={grow} seal={seal}"
        )
        .unwrap();
        return;
    }
    retry_pool(
        "an_unprivileged_process_adopts_and_cannot_resize",
        an_unprivileged_process_adopts_and_cannot_resize_body,
    );
}

fn an_unprivileged_process_adopts_and_cannot_resize_body() -> Result<(), String> {
    let node = node0();
    if !need(common::is_root(), "switching to uid nobody needs root") {
        return Ok(());
    }
    let _lock = pools_exclusive();
    let before = free_pages(node.0, 2048);
    if !need(before >= 8, "node needs 8 free 2M hugepages") {
        return Ok(());
    }
    let mut r = Reservation::builder(16 << 20)
        .node(node)
        .page_size(PageSize::Huge2M)
        .shared(true)
        .build()
        .unwrap();
    for (i, b) in r.as_mut_slice().iter_mut().enumerate().step_by(4093) {
        *b = pattern(i);
    }
    let path = TempPath::new("nobody.sock");
    let listener = UnixListener::bind(&path.0).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path.0, std::fs::Permissions::from_mode(0o777)).unwrap();
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "an_unprivileged_process_adopts_and_cannot_resize",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(NOBODY_ENV, &path.0)
        .spawn()
        .unwrap();
    let mut s = common::accept_from(&listener, &mut child);
    shared::send_fd(&s, r.as_fd().unwrap(), b"ram").unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(child.wait().unwrap().success(), "child: {reply}");
    assert_eq!(
        reply.trim(),
        "uid=65534 pattern=true shrink=EPERM grow=EPERM seal=EPERM"
    );
    pool_eq!(
        free_pages(node.0, 2048),
        before - 8,
        "the adopter took none"
    );
    drop(r);
    pool_eq!(free_pages(node.0, 2048), before);
    Ok(())
}
