//! Defends `smaps::parse_smaps` (`/proc/self/smaps` text, audited by VMMs and our tests): no
//! panic or overflow; the VMA found contains the address; byte fields are whole KiB. The first
//! 8 bytes are the address looked up, the rest the smaps text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin::smaps::parse_smaps;

fuzz_target!(|data: &[u8]| {
    let Some(addr) = data.get(..8) else { return };
    let addr = u64::from_le_bytes(addr.try_into().unwrap()) as usize;
    if let Ok(Some(v)) = parse_smaps(&String::from_utf8_lossy(&data[8..]), addr) {
        assert!(
            v.start <= addr && addr < v.end,
            "{v:?} does not contain {addr:#x}"
        );
        for f in [
            v.kernel_page_size,
            v.rss,
            v.anon_huge,
            v.hugetlb_bytes,
            v.locked,
        ] {
            assert_eq!(f % 1024, 0, "{v:?}: a field is not whole KiB");
        }
    }
});
