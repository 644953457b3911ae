//! Defends `topology::parse_cpulist` / `format_cpulist` (node `online`/`possible`, CPU
//! `online`, every node's `cpulist`): no panic, no huge allocation, sorted unique bounded
//! output, and format → parse is the identity on both sides.
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin::topology::{format_cpulist, parse_cpulist, MAX_LIST_ID};

fuzz_target!(|data: &[u8]| {
    // The bytes as a list text.
    if let Ok(ids) = parse_cpulist(&String::from_utf8_lossy(data)) {
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "not sorted/unique: {ids:?}"
        );
        assert!(ids.iter().all(|&i| i <= MAX_LIST_ID));
        assert_eq!(parse_cpulist(&format_cpulist(&ids)).as_ref(), Ok(&ids));
    }
    // The bytes as ids (any u32, near u32::MAX included) for format_cpulist.
    let mut ids: Vec<u32> = data
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    ids.sort_unstable();
    ids.dedup();
    numapin_fuzz::check_formatted_list(&format_cpulist(&ids), &ids);
});
