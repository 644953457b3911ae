//! Defends `units::parse_size` (every size a user types: `--size`, config files) and
//! `format_bytes` (every size we print): no panic or overflow, a size needs a digit, a parsed
//! size prints and re-parses to itself, and a printed size re-parses to within rounding.
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin::parse_size;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(n) = parse_size(s) {
            assert!(
                s.bytes().any(|b| b.is_ascii_digit()),
                "{s:?} parsed to {n} without a digit"
            );
            assert_eq!(parse_size(&n.to_string()), Ok(n));
            numapin_fuzz::check_format_bytes(n);
        }
    }
    if let Some(b) = data.get(..8) {
        numapin_fuzz::check_format_bytes(u64::from_le_bytes(b.try_into().unwrap()));
    }
});
