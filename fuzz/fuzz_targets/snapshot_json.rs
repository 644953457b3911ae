//! Defends `snapshot::Snapshot` JSON (`numapin status --json`, the planner's input from other
//! hosts): deserialising any bytes never panics, the derived totals never overflow, and a
//! snapshot that parsed serialises and re-parses to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin::snapshot::Snapshot;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = serde_json::from_slice::<Snapshot>(data) {
        for vm in &s.vms {
            let total = vm.reserved_bytes();
            assert!(vm.reservations.iter().all(|r| r.bytes <= total));
        }
        let json = serde_json::to_string(&s).expect("a parsed snapshot serialises");
        assert_eq!(
            serde_json::from_str::<Snapshot>(&json).expect("re-parses"),
            s
        );
    }
});
