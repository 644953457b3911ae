//! Simulated deaths, with the test seams (`VmRecord::kill`, `VmRecord::crash_during`) that are
//! not public API: a record abandoned at any step of an operation is settled exactly by the
//! reaper, a live holder is never reaped, and a record never writes a slot it no longer owns.

use std::sync::Arc;

use super::table::Crash;
use super::{ClassSpec, Ledger};
use crate::units::NodeId;

const M2: u64 = 2 << 20;
const G1: u64 = 1 << 30;

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
fn reaping_frees_exactly_the_dead_owners_charges() {
    let l = mem(8);
    let mut a = l.vm("a").unwrap();
    let mut b = l.vm("b").unwrap();
    a.try_charge(NodeId(0), M2, 30 * M2).unwrap();
    a.try_charge(NodeId(1), G1, 2 * G1).unwrap();
    b.try_charge(NodeId(0), M2, 50 * M2).unwrap();
    // Live holders (this process holds their locks) are never reaped.
    assert_eq!(l.reap().unwrap(), 0);
    a.kill();
    assert_eq!(l.reap().unwrap(), 1);
    assert_eq!(reserved(&l, 0), 50 * M2);
    assert_eq!(reserved(&l, 1), 0);
    l.audit().unwrap();
    // A refused admission reaps by itself: b dies, c then fits.
    let mut c = l.vm("c").unwrap();
    c.try_charge(NodeId(0), M2, 50 * M2).unwrap();
    assert!(c.try_charge(NodeId(0), M2, M2).is_err());
    b.kill();
    c.try_charge(NodeId(0), M2, 50 * M2).unwrap();
    assert_eq!(reserved(&l, 0), 100 * M2);
    drop(c);
    l.audit().unwrap();
    assert_eq!(reserved(&l, 0), 0);
}

#[test]
fn a_crash_at_any_step_is_settled_exactly() {
    for at in [
        Crash::AfterIntent,
        Crash::AfterCounter,
        Crash::AfterCharge,
        Crash::Never,
    ] {
        for delta in [4 * M2 as i64, -4 * M2 as i64, 200 * M2 as i64] {
            for overwritten in [false, true] {
                let l = mem(8);
                let mut other = l.vm("other").unwrap();
                other.try_charge(NodeId(0), M2, 20 * M2).unwrap();
                let mut v = l.vm("v").unwrap();
                v.try_charge(NodeId(0), M2, 10 * M2).unwrap();
                v.try_charge(NodeId(1), G1, G1).unwrap();
                v.crash_during(0, delta, at).unwrap();
                if overwritten {
                    // Someone else moves the counter, replacing the dead operation's tag.
                    other.try_charge(NodeId(0), M2, M2).unwrap();
                    other.release(NodeId(0), M2, M2).unwrap();
                }
                assert_eq!(l.reap().unwrap(), 1);
                assert_eq!(
                    (reserved(&l, 0), reserved(&l, 1)),
                    (20 * M2, 0),
                    "crash {at:?}, delta {delta}, overwritten {overwritten}"
                );
                l.audit().unwrap();
                drop(other);
                assert_eq!(reserved(&l, 0), 0);
            }
        }
    }
}

/// A record whose slot was taken from it (here: a writer that ignores the locks rewrites the
/// owner word) never writes that slot again: its drop leaves the new holder's charges alone.
#[test]
fn a_record_never_writes_a_slot_it_lost() {
    let l = mem(2);
    let mut a = l.vm("a").unwrap();
    a.try_charge(NodeId(0), M2, 10 * M2).unwrap();
    let s = a.slot;
    let intruder = a.owner ^ 1;
    assert!(l.table.claim(s, a.owner, intruder).unwrap());
    drop(a);
    // Nothing was released through the lost slot: its charge and the counter stay.
    assert_eq!(reserved(&l, 0), 10 * M2);
    assert_eq!(l.table.charged(s, 0).unwrap(), 10 * M2);
    assert_eq!(l.table.owner(s).unwrap(), intruder);
}

/// The lock, not the owner word, decides: a slot whose lock is held is never reaped, whatever
/// its owner word says (a pid that does not exist, start time 0).
#[test]
fn a_held_lock_is_alive_whatever_the_owner_word_says() {
    let l = mem(2);
    let mut a = l.vm("a").unwrap();
    a.try_charge(NodeId(0), M2, 4 * M2).unwrap();
    let fake = super::table::owner_word(4_000_000, 0).unwrap();
    assert!(l.table.claim(a.slot, a.owner, fake).unwrap());
    assert_eq!(l.reap().unwrap(), 0);
    assert_eq!(reserved(&l, 0), 4 * M2);
    // Put the word back so that the record releases normally.
    assert!(l.table.claim(a.slot, fake, a.owner).unwrap());
    drop(a);
    assert_eq!(reserved(&l, 0), 0);
}
