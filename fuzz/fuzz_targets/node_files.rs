//! Defends the per-node sysfs/procfs file parsers: `parse_node_meminfo`, `parse_zoneinfo`,
//! `parse_distances`, `parse_thp_mode`, `parse_hugepage_dir_name`. The first byte picks the
//! parser, the rest is the file's contents.
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin::topology as t;

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let s = String::from_utf8_lossy(rest);
    match which % 5 {
        0 => drop(t::parse_node_meminfo(&s)),
        1 => {
            if let Ok(z) = t::parse_zoneinfo(&s) {
                assert!(z.keys().all(|&n| n <= t::MAX_LIST_ID));
            }
        }
        2 => {
            if let Ok(d) = t::parse_distances(&s) {
                let text: Vec<String> = d.iter().map(u32::to_string).collect();
                assert_eq!(t::parse_distances(&text.join(" ")), Ok(d));
            }
        }
        3 => drop(t::parse_thp_mode(&s)),
        _ => {
            if let Some(kib) = t::parse_hugepage_dir_name(&s) {
                numapin_fuzz::check_hugepage_dir_name(&s, kib);
            }
        }
    }
});
