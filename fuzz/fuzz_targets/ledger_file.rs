//! Defends the ledger file format against a hostile or corrupted file: the bytes are written
//! to a unique file, opened with `Ledger::open_existing` (the mmap path every VMM uses) and
//! with `Ledger::from_image`, and operated on (status, a VM, charges, release, reap, audit,
//! snapshot). Every call must return `Ok` or an `Err` — never panic, read out of bounds (ASan)
//! or hang (libFuzzer's -timeout). The first two bytes steer the operations.
#![no_main]
use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use numapin::ledger::Ledger;

fn exercise(l: Ledger, steer: &[u8]) {
    // Nobody holds the slots' locks of a fresh image: every owned record is a dead one.
    let l = Arc::new(l);
    let _ = l.classes();
    let _ = l.snapshot_no_reap();
    let _ = l.audit();
    if let Ok(mut vm) = l.vm("fuzz") {
        let c = usize::from(steer[0]);
        let bytes = u64::from(steer[1]) << (steer[0] % 53);
        let _ = vm.try_charge_class(c, bytes);
        let _ = vm.release_class(c, bytes / 2);
        vm.set_guest_used(bytes);
        let _ = l.snapshot_no_reap();
    }
    let _ = l.reap();
    let _ = l.classes();
    let _ = l.audit();
}

fuzz_target!(|data: &[u8]| {
    let Some((steer, image)) = data.split_first_chunk::<2>() else {
        return;
    };
    if let Ok(l) = Ledger::from_image(image) {
        exercise(l, steer);
    }
    let path = numapin_fuzz::scratch_file("ledger");
    std::fs::write(&path, image).unwrap();
    if let Ok(l) = Ledger::open_existing(&path) {
        exercise(l, steer);
    }
});
