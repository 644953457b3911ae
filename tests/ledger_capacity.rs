//! Limits that follow the pools and node memory: a ledger whose file says something else than
//! the host (made while a pool was empty, or before a pool shrank) is brought to what the host
//! has on open, on `status` and on admission; what no longer fits shows as over-commit.
#![cfg(feature = "cli")]

mod common;

use std::process::Command;
use std::sync::Arc;

use common::{is_root, need, pool_dir, pools_exclusive, pools_shared, read_u64, TempPath};
use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::{NodeId, Topology};

const M2: u64 = 2 << 20;

fn pool_total_bytes(node: u32) -> u64 {
    read_u64(format!("{}/nr_hugepages", pool_dir(node, 2048))) * M2
}

/// The host's classes, with node 0's 2M class changed by `f` (a file out of date).
fn stale_file(p: &TempPath, f: impl Fn(&mut ClassSpec)) {
    let topo = Topology::from_sysfs().unwrap();
    let mut classes = ClassSpec::from_topology(&topo, 1 << 30, 100_000);
    let c = classes
        .iter_mut()
        .find(|c| c.node == NodeId(0) && c.page_size_bytes == M2)
        .expect("node 0 has a 2M pool directory");
    f(c);
    let cfg = LedgerConfig {
        slots: 8,
        ..LedgerConfig::default()
    };
    drop(Ledger::create(&p.0, &classes, &cfg).unwrap());
}

fn class_2m(l: &Ledger) -> numapin::ledger::ClassStatus {
    l.classes()
        .unwrap()
        .into_iter()
        .find(|c| c.node == NodeId(0) && c.page_size_bytes == M2)
        .unwrap()
}

/// A ledger made while the pool was empty used to refuse forever after the pool grew.
#[test]
fn a_ledger_made_while_the_pool_was_empty_admits_once_it_has_pages() {
    // Shared: the pool's size must not change under this test (the last test resizes it).
    let _lock = pools_shared();
    let pool = pool_total_bytes(0);
    if !need(pool >= 8 * M2, "node 0 needs a 2M pool of 8 pages or more") {
        return;
    }
    let p = TempPath::new("cap-empty");
    stale_file(&p, |c| c.capacity_bytes = 0);
    assert_eq!(
        class_2m(&Ledger::open_existing(&p.0).unwrap()).limit_bytes,
        0
    );
    let l = Arc::new(Ledger::open(&p.0).unwrap());
    let c = class_2m(&l);
    assert_eq!(c.capacity_bytes, pool, "capacity follows the pool on open");
    assert_eq!(c.limit_bytes, pool - pool / 10, "10% headroom");
    let rec = l
        .try_charge_parts("vm", &[(NodeId(0), M2, 4 * M2)])
        .expect("the pool has pages now");
    drop(rec);
}

/// A file that advertises more than the pool has: the charges it admitted stay, the limit
/// comes down to the pool, and `status` says the class is over-committed.
#[test]
fn a_pool_smaller_than_what_is_reserved_shows_as_overcommit() {
    let _lock = pools_shared();
    let pool = pool_total_bytes(0);
    let p = TempPath::new("cap-shrunk");
    stale_file(&p, |c| c.capacity_bytes = 2 * pool + 1000 * M2);
    // A VMM that opened the file before the pool shrank admitted more than the pool holds.
    let old = Arc::new(Ledger::open_existing(&p.0).unwrap());
    let mut vm = old.vm("big").unwrap();
    vm.try_charge(NodeId(0), M2, pool + 100 * M2).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .args(["status", "--ledger", p.0.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("OVER-COMMITTED: node 0 2M"), "{text}");
    let c = class_2m(&old);
    assert_eq!(
        c.capacity_bytes, pool,
        "status brought the capacity to the pool"
    );
    assert_eq!(c.reserved_bytes, pool + 100 * M2, "admitted charges stay");
    assert_eq!(c.overcommitted_bytes(), c.reserved_bytes - c.limit_bytes);
    assert!(c.overcommitted_bytes() > 0);
    // New admissions are refused while over-committed.
    let l = Arc::new(Ledger::open(&p.0).unwrap());
    assert!(l.try_charge_parts("more", &[(NodeId(0), M2, M2)]).is_err());
    drop(vm);
    assert_eq!(class_2m(&l).overcommitted_bytes(), 0);
}

/// The real pool grows and shrinks back: `status` follows it both ways.
#[test]
fn capacity_follows_the_pool_as_it_changes() {
    if !need(is_root(), "needs root to resize the 2M pool") {
        return;
    }
    let _lock = pools_exclusive();
    let nr = format!("{}/nr_hugepages", pool_dir(0, 2048));
    let before = read_u64(&nr);
    struct Restore(String, u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = std::fs::write(&self.0, self.1.to_string());
        }
    }
    let _restore = Restore(nr.clone(), before);
    let p = TempPath::new("cap-follow");
    let l = Arc::new(Ledger::open(&p.0).unwrap());
    assert_eq!(class_2m(&l).capacity_bytes, before * M2);
    std::fs::write(&nr, (before + 8).to_string()).unwrap();
    let grown = read_u64(&nr);
    if !need(
        grown > before,
        "the kernel found no memory to grow the 2M pool",
    ) {
        return;
    }
    let _ = l.snapshot().unwrap();
    assert_eq!(class_2m(&l).capacity_bytes, grown * M2);
    std::fs::write(&nr, before.to_string()).unwrap();
    let _ = l.snapshot().unwrap();
    assert_eq!(class_2m(&l).capacity_bytes, before * M2);
}
