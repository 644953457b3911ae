//! Ledger admission: charge + release of one 2 MiB page, lock-free ledger vs a `Mutex`
//! equivalent (in memory) and a process-shared pthread mutex, plain and robust, or a bare spin
//! lock (in a shared file), each doing the same bookkeeping (class counter with limit check + the VM's own
//! per-class charge), single-threaded and contended, in memory and in a shared file, and with a
//! frozen (SIGSTOPped) process that was hammering the same class.
//!
//! `cargo bench --bench ledger` (figures and the machine in docs/ledger.md).
//!
//! The bench binary doubles as the hammering child process: with `NUMAPIN_BENCH_HAMMER=PATH`
//! it charges and releases on the ledger file at PATH until killed.
#![allow(missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::NodeId;

const M2: u64 = 2 << 20;

fn classes() -> Vec<ClassSpec> {
    vec![ClassSpec::new(NodeId(0), M2, 1 << 40)]
}

/// The in-process baseline: one lock around the counters and the per-VM records.
struct MutexLedger {
    inner: Mutex<MState>,
}
struct MState {
    limit: Vec<u64>,
    reserved: Vec<u64>,
    per_vm: Vec<Vec<u64>>,
}
impl MutexLedger {
    fn new(vms: usize) -> Self {
        MutexLedger {
            inner: Mutex::new(MState {
                limit: vec![classes()[0].limit_bytes()],
                reserved: vec![0],
                per_vm: vec![vec![0]; vms],
            }),
        }
    }
    fn try_charge(&self, vm: usize, c: usize, b: u64) -> bool {
        let mut g = self.inner.lock().unwrap();
        if g.reserved[c] + b > g.limit[c] {
            return false;
        }
        g.reserved[c] += b;
        g.per_vm[vm][c] += b;
        true
    }
    fn release(&self, vm: usize, c: usize, b: u64) {
        let mut g = self.inner.lock().unwrap();
        g.reserved[c] -= b;
        g.per_vm[vm][c] -= b;
    }
}

/// The bookkeeping of the shared-file baselines, the same for every lock: the class's limit,
/// reserved bytes and the VMs' charges at fixed offsets of a shared mapping, touched only with
/// the lock held.
trait LockedFile {
    const LIMIT: usize = 64;
    const RESERVED: usize = 128;
    const PER_VM: usize = 192;
    fn w(&self, off: usize) -> &AtomicU64;
    fn lock(&self);
    fn unlock(&self);
    fn try_charge(&self, vm: usize, b: u64) -> bool {
        self.lock();
        let r = self.w(Self::RESERVED).load(Ordering::Relaxed);
        let ok = r + b <= self.w(Self::LIMIT).load(Ordering::Relaxed);
        if ok {
            self.w(Self::RESERVED).store(r + b, Ordering::Relaxed);
            let v = self.w(Self::PER_VM + 8 * vm);
            v.store(v.load(Ordering::Relaxed) + b, Ordering::Relaxed);
        }
        self.unlock();
        ok
    }
    fn release(&self, vm: usize, b: u64) {
        self.lock();
        let r = self.w(Self::RESERVED);
        r.store(r.load(Ordering::Relaxed) - b, Ordering::Relaxed);
        let v = self.w(Self::PER_VM + 8 * vm);
        v.store(v.load(Ordering::Relaxed) - b, Ordering::Relaxed);
        self.unlock();
    }
}

/// The shared-file baseline: the same bookkeeping behind a spin lock in a shared mapping of a
/// file (what a process-shared mutex amounts to when uncontended; unlike the ledger, a holder
/// stopped with the lock held stops everyone).
struct SpinLedger {
    map: FileMap,
    _file: std::fs::File,
}

/// A shared read-write mapping of the first `len` bytes of a file, unmapped on drop.
struct FileMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: plain shared memory, touched only through atomics.
unsafe impl Send for FileMap {}
// SAFETY: as for Send.
unsafe impl Sync for FileMap {}

impl FileMap {
    fn new(f: &std::fs::File, len: usize) -> FileMap {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of a file at least `len` bytes long (fresh_file sized
        // it); nothing else refers to the address range.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "{}", std::io::Error::last_os_error());
        FileMap { ptr: p.cast(), len }
    }

    /// The 8-aligned word at `off`, if inside the mapping.
    fn u64_at(&self, off: usize) -> Option<&AtomicU64> {
        (off % 8 == 0 && off + 8 <= self.len).then(|| {
            // SAFETY: in bounds and 8-aligned (the mapping is page-aligned); the memory lives
            // as long as `self` and is only accessed atomically.
            unsafe { &*self.ptr.add(off).cast::<AtomicU64>() }
        })
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, no longer borrowed.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}
impl SpinLedger {
    const LOCK: usize = 0;
    fn new(p: &PathBuf) -> Self {
        let f = fresh_file(p, 4096);
        let map = FileMap::new(&f, 4096);
        map.u64_at(<Self as LockedFile>::LIMIT)
            .unwrap()
            .store(classes()[0].limit_bytes(), Ordering::Relaxed);
        SpinLedger { map, _file: f }
    }
}
impl LockedFile for SpinLedger {
    fn w(&self, off: usize) -> &AtomicU64 {
        self.map.u64_at(off).unwrap()
    }
    fn lock(&self) {
        while self
            .w(Self::LOCK)
            .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::hint::spin_loop();
        }
    }
    fn unlock(&self) {
        self.w(Self::LOCK).store(0, Ordering::Release);
    }
}

/// The shared-file baseline a C programmer would write: a process-shared pthread mutex in the
/// file around the same bookkeeping; `robust` makes a holder's death visible to the next locker
/// (`EOWNERDEAD`), the property the ledger's crash-safety is compared with. Like every lock, a
/// holder stopped with it held stops everyone.
struct PthreadLedger {
    base: *mut u8,
    len: usize,
    _file: std::fs::File,
}
impl PthreadLedger {
    fn new(p: &PathBuf, robust: bool) -> Self {
        let len = 4096;
        let f = fresh_file(p, len);
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of `len` bytes of a file we just sized to `len`; no
        // Rust reference into it exists yet.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert_ne!(base, libc::MAP_FAILED);
        let l = PthreadLedger {
            base: base.cast(),
            len,
            _file: f,
        };
        // SAFETY: `attr` is initialised before use and destroyed after; the mutex lies at the
        // start of the mapping (page-aligned, 40 bytes < 64), initialised once before any lock.
        unsafe {
            let mut attr: libc::pthread_mutexattr_t = std::mem::zeroed();
            assert_eq!(libc::pthread_mutexattr_init(&mut attr), 0);
            assert_eq!(
                libc::pthread_mutexattr_setpshared(&mut attr, libc::PTHREAD_PROCESS_SHARED),
                0
            );
            if robust {
                assert_eq!(
                    libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST),
                    0
                );
            }
            assert_eq!(libc::pthread_mutex_init(l.mutex(), &attr), 0);
            libc::pthread_mutexattr_destroy(&mut attr);
        }
        l.w(<Self as LockedFile>::LIMIT)
            .store(classes()[0].limit_bytes(), Ordering::Relaxed);
        l
    }
    fn mutex(&self) -> *mut libc::pthread_mutex_t {
        self.base.cast()
    }
}
impl LockedFile for PthreadLedger {
    fn w(&self, off: usize) -> &AtomicU64 {
        assert!(off % 8 == 0 && off + 8 <= self.len && off >= 64);
        // SAFETY: in bounds and 8-aligned (checked), outside the mutex's bytes, accessed only
        // through this atomic; the mapping lives as long as `self`.
        unsafe { &*self.base.add(off).cast::<AtomicU64>() }
    }
    fn lock(&self) {
        // SAFETY: an initialised process-shared mutex in our mapping.
        let r = unsafe { libc::pthread_mutex_lock(self.mutex()) };
        if r == libc::EOWNERDEAD {
            // SAFETY: as above; we hold it (EOWNERDEAD means acquired).
            unsafe { libc::pthread_mutex_consistent(self.mutex()) };
        } else {
            assert_eq!(r, 0);
        }
    }
    fn unlock(&self) {
        // SAFETY: an initialised mutex this thread holds.
        unsafe { libc::pthread_mutex_unlock(self.mutex()) };
    }
}
impl Drop for PthreadLedger {
    fn drop(&mut self) {
        // SAFETY: our mapping; no reference into it outlives `self`.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// A new file of `len` zero bytes at `p` (replacing any), opened for reading and writing.
fn fresh_file(p: &PathBuf, len: usize) -> std::fs::File {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .unwrap();
    f.set_len(len as u64).unwrap();
    f
}

fn path(tag: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/numapin-bench-{}-{tag}",
        std::process::id()
    ))
}

fn file_ledger(tag: &str) -> (Arc<Ledger>, PathBuf) {
    let p = path(tag);
    let _ = std::fs::remove_file(&p);
    let cfg = LedgerConfig {
        slots: 16,
        ..LedgerConfig::default()
    };
    (Arc::new(Ledger::create(&p, &classes(), &cfg).unwrap()), p)
}

fn hammer_child(p: &PathBuf) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .env("NUMAPIN_BENCH_HAMMER", p)
        .spawn()
        .unwrap()
}

fn kill(child: &Child, sig: &str) {
    let pid = child.id().to_string();
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(&pid)
        .status();
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("charge+release/1 thread");
    let l = Arc::new(Ledger::in_memory(&classes(), 16).unwrap());
    let mut vm = l.vm("bench").unwrap();
    g.bench_function("lock-free, in memory", |b| {
        b.iter(|| {
            vm.try_charge_class(0, black_box(M2)).unwrap();
            vm.release_class(0, black_box(M2)).unwrap();
        })
    });
    let m = MutexLedger::new(2);
    g.bench_function("mutex, in memory", |b| {
        b.iter(|| {
            assert!(m.try_charge(0, 0, black_box(M2)));
            m.release(0, 0, black_box(M2));
        })
    });
    let (fl, p) = file_ledger("single");
    let mut fvm = fl.vm("bench").unwrap();
    g.bench_function("lock-free, shared file", |b| {
        b.iter(|| {
            fvm.try_charge_class(0, black_box(M2)).unwrap();
            fvm.release_class(0, black_box(M2)).unwrap();
        })
    });
    let sp = path("spin");
    let spin = SpinLedger::new(&sp);
    g.bench_function("spin lock, shared file", |b| {
        b.iter(|| {
            assert!(spin.try_charge(0, black_box(M2)));
            spin.release(0, black_box(M2));
        })
    });
    let mut pthread_paths = Vec::new();
    for (robust, name) in [
        (false, "pthread mutex, shared file"),
        (true, "robust pthread mutex, shared file"),
    ] {
        let pp = path(if robust { "robust" } else { "pthread" });
        let m = PthreadLedger::new(&pp, robust);
        g.bench_function(name, |b| {
            b.iter(|| {
                assert!(m.try_charge(0, black_box(M2)));
                m.release(0, black_box(M2));
            })
        });
        pthread_paths.push(pp);
    }
    g.finish();
    drop(fvm);
    let _ = std::fs::remove_file(p);
    let _ = std::fs::remove_file(sp);
    for pp in pthread_paths {
        let _ = std::fs::remove_file(pp);
    }
}

/// Two threads doing charge+release on the same class; the time is per pair per thread.
fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("charge+release/2 threads");
    let l = Arc::new(Ledger::in_memory(&classes(), 16).unwrap());
    g.bench_function("lock-free, in memory", |b| {
        b.iter_custom(|iters| {
            let bar = Arc::new(Barrier::new(2));
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let (l, bar) = (Arc::clone(&l), Arc::clone(&bar));
                    std::thread::spawn(move || {
                        let mut vm = l.vm(&format!("t{i}")).unwrap();
                        bar.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            vm.try_charge_class(0, black_box(M2)).unwrap();
                            vm.release_class(0, black_box(M2)).unwrap();
                        }
                        t.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
        })
    });
    let m = Arc::new(MutexLedger::new(2));
    g.bench_function("mutex, in memory", |b| {
        b.iter_custom(|iters| {
            let bar = Arc::new(Barrier::new(2));
            let hs: Vec<_> = (0..2)
                .map(|i| {
                    let (m, bar) = (Arc::clone(&m), Arc::clone(&bar));
                    std::thread::spawn(move || {
                        bar.wait();
                        let t = Instant::now();
                        for _ in 0..iters {
                            assert!(m.try_charge(i, 0, black_box(M2)));
                            m.release(i, 0, black_box(M2));
                        }
                        t.elapsed()
                    })
                })
                .collect();
            hs.into_iter().map(|h| h.join().unwrap()).max().unwrap()
        })
    });
    g.finish();
}

/// One process measured while another process hammers the same shared file, then while that
/// process is frozen with SIGSTOP (wherever it was, possibly mid-operation).
fn processes(c: &mut Criterion) {
    let mut g = c.benchmark_group("charge+release/shared file, other process");
    let (l, p) = file_ledger("procs");
    let mut vm = l.vm("bench").unwrap();
    let mut child = hammer_child(&p);
    std::thread::sleep(Duration::from_millis(200));
    g.bench_function("other process hammering", |b| {
        b.iter(|| {
            vm.try_charge_class(0, black_box(M2)).unwrap();
            vm.release_class(0, black_box(M2)).unwrap();
        })
    });
    kill(&child, "STOP");
    std::thread::sleep(Duration::from_millis(50));
    g.bench_function("other process frozen (SIGSTOP)", |b| {
        b.iter(|| {
            vm.try_charge_class(0, black_box(M2)).unwrap();
            vm.release_class(0, black_box(M2)).unwrap();
        })
    });
    g.finish();
    kill(&child, "KILL");
    let _ = child.wait();
    drop(vm);
    let _ = std::fs::remove_file(p);
}

criterion_group!(benches, single, contended, processes);

fn main() {
    if let Some(p) = std::env::var_os("NUMAPIN_BENCH_HAMMER") {
        let l = Arc::new(Ledger::open_existing(PathBuf::from(p)).unwrap());
        let mut vm = l.vm("hammer").unwrap();
        loop {
            vm.try_charge_class(0, M2).unwrap();
            vm.release_class(0, M2).unwrap();
        }
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
