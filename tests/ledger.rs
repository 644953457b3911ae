//! The ledger in one process: semantics, refusals, the file home, hostile files, and a
//! sequential model (proptest). Simulated deaths (crash points) are in-crate tests
//! (`src/ledger/tests.rs`): they use test seams that are not public API.

mod common;
use common::TempPath;
use std::collections::HashMap;
use std::sync::{Arc, Barrier};

use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::{Error, NodeId};
use proptest::prelude::*;

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

/// Owner word of a fake process (pid in bits 41.., start time 1).
fn fake(pid: u64) -> u64 {
    (pid << 41) | 1
}

fn two_classes() -> Vec<ClassSpec> {
    vec![
        ClassSpec {
            headroom_ppm: 0,
            ..ClassSpec::new(NodeId(0), M2, 100 * M2)
        },
        ClassSpec::new(NodeId(1), G1, 10 * G1),
    ]
}

fn mem(slots: u32) -> Arc<Ledger> {
    Arc::new(Ledger::in_memory(&two_classes(), slots).unwrap())
}

fn reserved(l: &Ledger, c: usize) -> u64 {
    l.classes().unwrap()[c].reserved_bytes
}

#[test]
fn limits_follow_capacity_reserve_and_headroom() {
    let c = ClassSpec {
        host_reserve_bytes: 4 * M2,
        ..ClassSpec::new(NodeId(0), M2, 100 * M2)
    };
    assert_eq!(c.headroom_bytes(), 10 * M2);
    assert_eq!(c.limit_bytes(), 86 * M2);
    let l = Ledger::in_memory(&[c], 4).unwrap();
    let s = &l.classes().unwrap()[0];
    assert_eq!(
        (s.capacity_bytes, s.limit_bytes, s.reserved_bytes),
        (100 * M2, 86 * M2, 0)
    );
}

#[test]
fn charge_release_and_drop() {
    let l = mem(4);
    let mut a = l.vm("a").unwrap();
    a.try_charge(NodeId(0), M2, 60 * M2).unwrap();
    assert_eq!(reserved(&l, 0), 60 * M2);
    let mut b = l.vm("b").unwrap();
    b.try_charge(NodeId(0), M2, 40 * M2).unwrap();
    assert_eq!(reserved(&l, 0), 100 * M2);
    l.audit().unwrap();
    a.release(NodeId(0), M2, 10 * M2).unwrap();
    assert_eq!(a.charged(NodeId(0), M2), 50 * M2);
    assert!(matches!(
        a.release(NodeId(0), M2, 51 * M2),
        Err(Error::InvalidSize { .. })
    ));
    drop(a);
    assert_eq!(reserved(&l, 0), 40 * M2);
    drop(b);
    assert_eq!(reserved(&l, 0), 0);
    l.audit().unwrap();
}

#[test]
fn refusal_carries_the_numbers() {
    let l = mem(4);
    let _a = l.try_charge("a", NodeId(1), G1, 8 * G1).unwrap();
    let e = l.try_charge("b", NodeId(1), G1, 2 * G1).unwrap_err();
    match &e {
        Error::AdmissionRefused {
            node,
            page_size_bytes,
            requested,
            available,
            limit,
            reserved,
            capacity,
            headroom,
            ..
        } => {
            assert_eq!(*node, NodeId(1));
            assert_eq!(*page_size_bytes, G1);
            assert_eq!(*requested, 2 * G1);
            assert_eq!(*reserved, 8 * G1);
            assert_eq!(*limit, 9 * G1);
            assert_eq!(*available, G1);
            assert_eq!(*capacity, 10 * G1);
            assert_eq!(*headroom, G1);
        }
        other => panic!("{other:?}"),
    }
    let m = e.to_string();
    assert!(m.contains("over the admission limit by 1 GiB"), "{m}");
    assert!(m.contains("numapin status"), "{m}");
    // The refused request left nothing behind.
    assert_eq!(reserved(&l, 1), 8 * G1);
    // Bigger than the class itself.
    let m = l
        .try_charge("c", NodeId(1), G1, 11 * G1)
        .unwrap_err()
        .to_string();
    assert!(m.contains("whole capacity by 1 GiB"), "{m}");
    // Larger than a ledger can count: still a refusal with the numbers.
    assert!(matches!(
        l.try_charge("e", NodeId(1), G1, 1 << 62),
        Err(Error::AdmissionRefused { .. })
    ));
    // Unknown class.
    assert!(matches!(
        l.try_charge("d", NodeId(7), M2, M2),
        Err(Error::LedgerNoClass { .. })
    ));
}

#[test]
fn full_ledger_is_a_typed_error_and_records_are_reused() {
    let l = mem(2);
    let a = l.vm("a").unwrap();
    let _b = l.vm("b").unwrap();
    assert!(matches!(l.vm("c"), Err(Error::LedgerFull { slots: 2, .. })));
    drop(a);
    let _c = l.vm("c").unwrap();
}

#[test]
fn snapshot_lists_vms_and_classes() {
    let l = mem(8);
    let mut a = l.vm("web-1").unwrap();
    a.try_charge(NodeId(0), M2, 10 * M2).unwrap();
    a.try_charge(NodeId(1), G1, G1).unwrap();
    a.set_guest_used(3 * M2);
    a.set_guest_used(M2);
    a.set_populated(10 * M2);
    let s = l.snapshot().unwrap();
    assert_eq!(s.nodes.len(), 2);
    assert_eq!(s.nodes[0].classes[0].reserved_bytes, 10 * M2);
    assert_eq!(s.nodes[0].classes[0].available_bytes, 90 * M2);
    assert_eq!(s.vms.len(), 1);
    let v = &s.vms[0];
    assert_eq!(v.name, "web-1");
    assert_eq!(v.pid, std::process::id());
    assert_eq!(v.reserved_bytes(), 10 * M2 + G1);
    assert_eq!((v.guest_used_bytes, v.guest_used_peak_bytes), (M2, 3 * M2));
    assert_eq!(v.populated_bytes, Some(10 * M2));
    assert_eq!(v.single_node, Some(false));
}

// ---- reaping with simulated processes ---------------------------------------------------

#[test]
fn threads_race_exactly_up_to_the_limit() {
    for _ in 0..20 {
        let l = mem(16);
        let n = 8;
        let bar = Arc::new(Barrier::new(n));
        let hs: Vec<_> = (0..n)
            .map(|i| {
                let (l, bar) = (Arc::clone(&l), Arc::clone(&bar));
                std::thread::spawn(move || {
                    let mut v = l.vm(&format!("t{i}")).unwrap();
                    bar.wait();
                    let mut got = 0;
                    while v.try_charge(NodeId(0), M2, 3 * M2).is_ok() {
                        got += 3;
                    }
                    bar.wait();
                    (got, v)
                })
            })
            .collect();
        let rs: Vec<_> = hs.into_iter().map(|h| h.join().unwrap()).collect();
        let total: u64 = rs.iter().map(|r| r.0).sum();
        // 100 MiB·2 limit, 3-page grains: exactly 33 grains fit, and all of them are admitted.
        assert_eq!(total, 99);
        assert_eq!(reserved(&l, 0), 99 * M2);
        l.audit().unwrap();
        drop(rs);
        assert_eq!(reserved(&l, 0), 0);
    }
}

// ---- the file home ------------------------------------------------------------------------

#[test]
fn file_is_created_race_free_and_shared() {
    let p = TempPath::new("file_shared");
    let cfg = LedgerConfig {
        slots: 8,
        ..LedgerConfig::default()
    };
    let a = Arc::new(Ledger::create(&p.0, &two_classes(), &cfg).unwrap());
    // Creating again opens the existing one.
    let b = Arc::new(Ledger::create(&p.0, &two_classes(), &cfg).unwrap());
    let mut x = a.vm("x").unwrap();
    x.try_charge(NodeId(0), M2, 7 * M2).unwrap();
    assert_eq!(reserved(&b, 0), 7 * M2);
    use std::os::unix::fs::PermissionsExt;
    let md = std::fs::symlink_metadata(&p.0).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o600);
    // No temporary file is left beside it.
    let dir = std::fs::read_dir("/dev/shm").unwrap();
    let stem = p.0.file_name().unwrap().to_string_lossy().to_string();
    for e in dir.flatten() {
        let n = e.file_name().to_string_lossy().to_string();
        assert!(
            !(n.starts_with(&stem) && n.contains(".tmp.")),
            "{n} left behind"
        );
    }
    drop(x);
    assert_eq!(reserved(&b, 0), 0);
}

#[test]
fn symlinks_are_not_followed() {
    let p = TempPath::new("symlink");
    let target = TempPath::new("symlink-target");
    std::fs::write(&target.0, b"x").unwrap();
    std::os::unix::fs::symlink(&target.0, &p.0).unwrap();
    let e = Ledger::open_existing(&p.0).unwrap_err();
    assert!(
        matches!(
            e,
            Error::LedgerNotAFile {
                kind: "symbolic link",
                ..
            }
        ),
        "{e:?}"
    );
    assert_eq!(std::fs::read(&target.0).unwrap(), b"x");
}

fn image() -> Vec<u8> {
    let p = TempPath::new("image-src");
    let cfg = LedgerConfig {
        slots: 4,
        ..LedgerConfig::default()
    };
    let l = Arc::new(Ledger::create(&p.0, &two_classes(), &cfg).unwrap());
    let mut v = l.vm("v").unwrap();
    v.try_charge(NodeId(0), M2, 5 * M2).unwrap();
    let img = std::fs::read(&p.0).unwrap();
    std::mem::forget(v); // keep the charge in the image
    img
}

fn word(img: &mut [u8], off: usize, v: u64) {
    img[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

fn expect_invalid(img: &[u8], needle: &str) {
    match Ledger::from_image(img) {
        Err(Error::LedgerInvalid { what, .. }) => {
            assert!(what.contains(needle), "{what:?} lacks {needle:?}")
        }
        Err(e) => panic!("wrong error {e:?}"),
        Ok(_) => panic!("accepted a bad image ({needle})"),
    }
}

#[test]
fn hostile_images_give_errors() {
    let good = image();
    let l = Arc::new(Ledger::from_image(&good).unwrap());
    assert_eq!(reserved(&l, 0), 5 * M2);
    expect_invalid(&good[..64], "not a ledger's size");
    expect_invalid(&good[..good.len() - 64], "need");
    let mut b = good.clone();
    word(&mut b, 0, 0x1234);
    expect_invalid(&b, "magic");
    let mut b = good.clone();
    word(&mut b, 8, 99);
    expect_invalid(&b, "version");
    let mut b = good.clone();
    word(&mut b, 16, u64::MAX);
    expect_invalid(&b, "geometry");
    let mut b = good.clone();
    word(&mut b, 24, 3);
    expect_invalid(&b, "need");
    let mut b = good.clone();
    word(&mut b, 128 + 8, 12345); // class 0 page size
    expect_invalid(&b, "page size");
    let mut b = good.clone();
    word(&mut b, 128 + 40, u64::MAX); // class 0 limit
    expect_invalid(&b, "limit");
    // Counter of class 0 (charged: total in 4 KiB pages << 12 | slot + 1) tagged with slot 4000.
    let mut b = good.clone();
    let ctr0 = 128 + 2 * 64;
    word(&mut b, ctr0, ((5 * M2 / 4096) << 12) | 4000);
    expect_invalid(&b, "tagged with slot");
    // Duplicate class.
    let mut b = good.clone();
    word(&mut b, 128 + 64, 0);
    word(&mut b, 128 + 64 + 8, M2);
    expect_invalid(&b, "duplicates");
}

#[test]
fn hostile_records_give_errors_at_use() {
    let good = image();
    let slot0 = 128 + 6 * 64; // header, 2 descriptors, 2 counter lines per class
                              // A name length past the buffer.
    let mut b = good.clone();
    word(&mut b, slot0 + 72, 1000);
    let l = Ledger::from_image(&b).unwrap();
    assert!(matches!(
        l.snapshot_no_reap(),
        Err(Error::LedgerInvalid { .. })
    ));
    // A charge larger than the counter: releasing it (reaping) must not wrap.
    let mut b = good.clone();
    // Owned by someone else, who is dead: nobody holds the slot's lock in an image's ledger.
    word(&mut b, slot0, fake(1001));
    word(&mut b, slot0 + 144 + 8, 50 * M2); // class 1, whose counter is 0
    let l = Ledger::from_image(&b).unwrap();
    assert!(matches!(l.reap(), Err(Error::LedgerInvalid { .. })));
    // An intent naming a class out of range.
    let mut b = good.clone();
    word(&mut b, slot0, fake(1001));
    word(&mut b, slot0 + 8, 99); // intent seq, odd buffer
    word(&mut b, slot0 + 32, (1000 << 52) | 4096); // odd buffer's `what`: class 500
    let l = Ledger::from_image(&b).unwrap();
    assert!(matches!(l.reap(), Err(Error::LedgerInvalid { .. })));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn random_images_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = Ledger::from_image(&bytes);
    }

    #[test]
    fn mutated_images_never_panic(flips in proptest::collection::vec((0usize..4096, any::<u64>()), 1..8)) {
        let mut b = image();
        for (i, v) in flips {
            let off = (i * 8) % b.len();
            word(&mut b, off, v);
        }
        if let Ok(l) = Ledger::from_image(&b) {
            let l = Arc::new(l);
            let _ = l.classes();
            let _ = l.snapshot_no_reap();
            let _ = l.reap();
            let _ = l.audit();
            if let Ok(mut v) = l.vm("x") {
                let _ = v.try_charge(NodeId(0), M2, M2);
            }
        }
    }
}

// ---- the sequential model -------------------------------------------------------------------

#[derive(Debug, Clone)]
enum Op {
    Open(u8),
    Charge(u8, u8, u16),
    Release(u8, u8, u16),
    Drop(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Open),
        (0u8..6, 0u8..2, 1u16..60).prop_map(|(v, c, n)| Op::Charge(v, c, n)),
        (0u8..6, 0u8..2, 1u16..60).prop_map(|(v, c, n)| Op::Release(v, c, n)),
        (0u8..6).prop_map(Op::Drop),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn sequential_semantics_match_a_model(ops in proptest::collection::vec(op(), 1..80)) {
        let classes = two_classes();
        let limits: Vec<u64> = classes.iter().map(|c| c.limit_bytes()).collect();
        let grain = [M2, G1 / 8];
        let l = Arc::new(Ledger::in_memory(&classes, 4).unwrap());
        let mut vms: HashMap<u8, numapin::VmRecord> = HashMap::new();
        let mut model: HashMap<u8, [u64; 2]> = HashMap::new();
        for o in ops {
            match o {
                Op::Open(v) => {
                    if vms.contains_key(&v) { continue; }
                    match l.vm(&format!("vm{v}")) {
                        Ok(ch) => { vms.insert(v, ch); model.insert(v, [0, 0]); }
                        Err(Error::LedgerFull { .. }) => prop_assert!(vms.len() >= 4),
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                }
                Op::Charge(v, c, n) => {
                    let Some(ch) = vms.get_mut(&v) else { continue };
                    let c = c as usize;
                    let b = u64::from(n) * grain[c];
                    let total: u64 = model.values().map(|m| m[c]).sum();
                    let node = classes[c].node;
                    let r = ch.try_charge(node, classes[c].page_size_bytes, b);
                    if total + b <= limits[c] {
                        prop_assert!(r.is_ok(), "{r:?}");
                        model.get_mut(&v).unwrap()[c] += b;
                    } else {
                        let refused = matches!(r, Err(Error::AdmissionRefused { .. }));
                        prop_assert!(refused);
                    }
                }
                Op::Release(v, c, n) => {
                    let Some(ch) = vms.get_mut(&v) else { continue };
                    let c = c as usize;
                    let b = u64::from(n) * grain[c];
                    let have = model[&v][c];
                    let r = ch.release(classes[c].node, classes[c].page_size_bytes, b);
                    if b <= have {
                        prop_assert!(r.is_ok());
                        model.get_mut(&v).unwrap()[c] -= b;
                    } else {
                        prop_assert!(r.is_err());
                    }
                }
                Op::Drop(v) => {
                    vms.remove(&v);
                    model.remove(&v);
                }
            }
            for (c, lim) in limits.iter().enumerate() {
                let total: u64 = model.values().map(|m| m[c]).sum();
                let st = &l.classes().unwrap()[c];
                prop_assert_eq!(st.reserved_bytes, total);
                prop_assert!(st.reserved_bytes <= *lim);
            }
            for (v, ch) in &vms {
                for c in 0..2 {
                    prop_assert_eq!(ch.charged(classes[c].node, classes[c].page_size_bytes), model[v][c]);
                }
            }
            l.audit().unwrap();
        }
    }
}

/// `snapshot()` returns a consistent cut (class totals = sum of VM charges) even while another
/// thread charges and releases without pause.
#[test]
fn snapshots_under_churn_are_consistent_cuts() {
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    let l = mem(8);
    let ops = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let (l, stop, ops) = (l.clone(), stop.clone(), ops.clone());
        std::thread::spawn(move || {
            let mut c = l.vm("churn").unwrap();
            while !stop.load(Relaxed) {
                c.try_charge(NodeId(0), M2, M2).unwrap();
                c.release(NodeId(0), M2, M2).unwrap();
                ops.fetch_add(1, Relaxed);
            }
        })
    };
    let mut steady = l.vm("steady").unwrap();
    steady.try_charge(NodeId(0), M2, 3 * M2).unwrap();
    let mut snaps = 0;
    // At least 300 snapshots, taken while the other thread has done at least 10,000 operations.
    while snaps < 300 || ops.load(Relaxed) < 10_000 {
        let s = l.snapshot().unwrap();
        assert!(numapin::ledger::snapshot_is_consistent(&s), "{s:?}");
        snaps += 1;
    }
    stop.store(true, Relaxed);
    churn.join().unwrap();
    // And a torn picture is recognised as such.
    let mut s = l.snapshot().unwrap();
    s.nodes[0].classes[0].reserved_bytes += M2;
    assert!(!numapin::ledger::snapshot_is_consistent(&s));
}

/// Two charges that each fit a 4 PiB class but together pass what a counter can hold (2^52
/// bytes) are an admission refusal with the numbers, not "the ledger file is corrupt".
#[test]
fn a_total_past_the_counter_width_is_a_refusal() {
    let pib = 1u64 << 50;
    let c = ClassSpec {
        headroom_ppm: 0,
        ..ClassSpec::new(NodeId(0), M2, 4 * pib)
    };
    let l = Arc::new(Ledger::in_memory(&[c], 4).unwrap());
    let limit = l.classes().unwrap()[0].limit_bytes;
    let _a = l.try_charge("a", NodeId(0), M2, 3 * pib).unwrap();
    let e = l.try_charge("b", NodeId(0), M2, 2 * pib).unwrap_err();
    match e {
        Error::AdmissionRefused {
            requested,
            reserved,
            limit: lim,
            ..
        } => assert_eq!((requested, reserved, lim), (2 * pib, 3 * pib, limit)),
        other => panic!("expected a refusal, got: {other}"),
    }
    assert_eq!(l.classes().unwrap()[0].reserved_bytes, 3 * pib);
}

/// What claiming a record costs next to the charge fast path (a measurement, not a check:
/// `cargo test --release --test ledger claim_cost -- --ignored --nocapture`; figures in
/// docs/ledger.md, "Performance").
#[test]
#[ignore]
fn claim_cost() {
    let l = Arc::new(Ledger::in_memory(&[ClassSpec::new(NodeId(0), 4096, 1 << 40)], 64).unwrap());
    for round in 0..3 {
        let n = 20_000;
        let t = std::time::Instant::now();
        for _ in 0..n {
            let mut v = l.vm("x").unwrap();
            v.try_charge(NodeId(0), 4096, 1 << 20).unwrap();
        }
        let claim = t.elapsed().as_nanos() as f64 / f64::from(n);
        let mut v = l.vm("y").unwrap();
        let m = 5_000_000;
        let t = std::time::Instant::now();
        for _ in 0..m {
            v.try_charge_class(0, 2 << 20).unwrap();
            v.release_class(0, 2 << 20).unwrap();
        }
        let fast = t.elapsed().as_nanos() as f64 / f64::from(m);
        println!(
            "round {round}: claim+charge+release+free {claim:.0} ns; charge+release {fast:.1} ns"
        );
    }
}

#[test]
fn a_ledger_of_the_wrong_shape_is_a_matchable_error() {
    let c2 = ClassSpec::new(NodeId(0), 2 << 20, 64 << 20);
    assert!(matches!(
        Ledger::in_memory(&[], 8),
        Err(Error::LedgerShape {
            classes: 0,
            slots: 8,
            ..
        })
    ));
    assert!(matches!(
        Ledger::in_memory(&[c2], 0),
        Err(Error::LedgerShape {
            classes: 1,
            slots: 0,
            max_slots: 4095,
            ..
        })
    ));
    assert!(matches!(
        Ledger::in_memory(&[ClassSpec::new(NodeId(0), 8192, 64 << 20)], 8),
        Err(Error::LedgerClassPageSize {
            page_size_bytes: 8192
        })
    ));
    let Err(e) = Ledger::in_memory(&[c2, c2], 8) else {
        panic!("a class given twice is refused")
    };
    assert!(
        matches!(e, Error::LedgerClassTwice { node: NodeId(0), page_size_bytes } if page_size_bytes == 2 << 20),
        "{e:?}"
    );
    assert!(e.to_string().contains("given twice"), "{e}");
}
