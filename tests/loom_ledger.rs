//! loom models of the ledger's charge / release / reap races: the real `Table` code, with loom's
//! atomics swapped in through `src/sync.rs`.
//!
//! `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 cargo test --release --no-default-features --test loom_ledger`
//! (`.ci/steps/20-ledger.sh`).
#![cfg(loom)]

use std::sync::Arc;

use loom::thread;
use numapin::ledger::{ClassSpec, Crash, Ledger};
use numapin::NodeId;

const G: u64 = 2 << 20;

fn ledger(limit_grains: u64, slots: u32) -> Arc<Ledger> {
    let c = ClassSpec {
        headroom_ppm: 0,
        ..ClassSpec::new(NodeId(0), G, limit_grains * G)
    };
    Arc::new(Ledger::in_memory(&[c], slots).unwrap())
}

fn reserved(l: &Ledger) -> u64 {
    l.classes().unwrap()[0].reserved_bytes
}

/// A request that fits is never refused because of a concurrent one that failed.
#[test]
fn no_false_refusal() {
    loom::model(|| {
        let l = ledger(2, 2);
        let a = Arc::clone(&l);
        let t = thread::spawn(move || {
            let mut v = a.vm("big").unwrap();
            // Never fits: limit is 2 grains.
            assert!(v.try_charge_class(0, 3 * G).is_err());
        });
        let mut w = l.vm("fits").unwrap();
        w.try_charge_class(0, 2 * G)
            .expect("a fitting request was refused");
        t.join().unwrap();
        assert_eq!(reserved(&l), 2 * G);
        l.audit().unwrap();
    });
}

/// Three racers for two grains: exactly two are admitted, never more than the limit.
#[test]
fn admitted_exactly_up_to_the_limit() {
    loom::model(|| {
        let l = ledger(2, 3);
        let hs: Vec<_> = (0..2)
            .map(|_| {
                let a = Arc::clone(&l);
                thread::spawn(move || {
                    let mut v = a.vm("r").unwrap();
                    let ok = v.try_charge_class(0, G).is_ok();
                    assert!(reserved(&a) <= 2 * G);
                    (ok, v)
                })
            })
            .collect();
        let mut v = l.vm("r").unwrap();
        let mut n = u64::from(v.try_charge_class(0, G).is_ok());
        let mut keep = Vec::new();
        for h in hs {
            let (ok, v) = h.join().unwrap();
            n += u64::from(ok);
            keep.push(v);
        }
        assert_eq!(n, 2);
        assert_eq!(reserved(&l), 2 * G);
        l.audit().unwrap();
        v.release_all().unwrap();
        drop(keep);
        assert_eq!(reserved(&l), 0);
    });
}

/// A process dies at each step of a charge or a release while another process charges and
/// releases on the same class (replacing the dead operation's tag, helping it); the reaper then
/// races that process. Afterwards the ledger holds exactly the live process's charges.
fn crash_model(at: Crash, delta: i64) {
    loom::model(move || {
        let l = ledger(8, 3);
        let mut dead = l.vm("dead").unwrap();
        dead.try_charge_class(0, 2 * G).unwrap();
        let a = Arc::clone(&l);
        let dying = thread::spawn(move || dead.crash_during(0, delta, at).unwrap());
        let b = Arc::clone(&l);
        let live = thread::spawn(move || {
            let mut v = b.vm("live").unwrap();
            v.try_charge_class(0, G).unwrap();
            v.release_class(0, G).unwrap();
            v.try_charge_class(0, G).unwrap();
            v
        });
        dying.join().unwrap();
        // The process is gone: reap it while `live` may still be running.
        assert_eq!(a.reap().unwrap(), 1);
        let v = live.join().unwrap();
        assert_eq!(reserved(&l), G);
        l.audit().unwrap();
        drop(v);
        assert_eq!(reserved(&l), 0);
    });
}

#[test]
fn crash_after_intent_of_a_charge() {
    crash_model(Crash::AfterIntent, G as i64);
}

#[test]
fn crash_after_counter_of_a_charge() {
    crash_model(Crash::AfterCounter, G as i64);
}

#[test]
fn crash_after_charge_stored() {
    crash_model(Crash::AfterCharge, G as i64);
}

#[test]
fn crash_after_intent_of_a_release() {
    crash_model(Crash::AfterIntent, -(G as i64));
}

#[test]
fn crash_after_counter_of_a_release() {
    crash_model(Crash::AfterCounter, -(G as i64));
}

#[test]
fn crash_after_release_stored() {
    crash_model(Crash::AfterCharge, -(G as i64));
}

/// A new VM claims a record while a reaper settles the only other, dead, one: the claimer
/// gets the slot only once it is free (the lock is the fence; `vm` reaps by itself when every
/// record is taken) — or is told the ledger is full while the other reaper still holds the
/// slot — and the ledger ends holding exactly the claimer's charge.
#[test]
fn claim_races_reaper() {
    loom::model(|| {
        let l = ledger(4, 1);
        let mut dead = l.vm("dead").unwrap();
        dead.try_charge_class(0, 3 * G).unwrap();
        dead.crash_during(0, -(G as i64), Crash::AfterIntent)
            .unwrap();
        let a = Arc::clone(&l);
        let reaper = thread::spawn(move || a.reap().unwrap());
        let v = match l.vm("new") {
            Ok(mut v) => {
                v.try_charge_class(0, 4 * G).unwrap();
                Some(v)
            }
            Err(numapin::Error::LedgerFull { .. }) => None,
            Err(e) => panic!("{e}"),
        };
        let n = reaper.join().unwrap();
        assert!(n <= 1);
        assert_eq!(reserved(&l), if v.is_some() { 4 * G } else { 0 });
        l.audit().unwrap();
        drop(v);
        assert_eq!(reserved(&l), 0);
    });
}

/// Two reapers race for the same dead record: it is released exactly once.
#[test]
fn reapers_race() {
    loom::model(|| {
        let l = ledger(8, 2);
        let mut dead = l.vm("dead").unwrap();
        dead.try_charge_class(0, 3 * G).unwrap();
        dead.crash_during(0, G as i64, Crash::AfterCounter).unwrap();
        let a = Arc::clone(&l);
        let r1 = thread::spawn(move || a.reap().unwrap());
        let n2 = l.reap().unwrap();
        let n1 = r1.join().unwrap();
        assert_eq!(n1 + n2, 1);
        assert_eq!(reserved(&l), 0);
        l.audit().unwrap();
    });
}
