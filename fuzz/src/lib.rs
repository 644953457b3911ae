//! Shared checks and generators of the numapin fuzz targets.

pub mod tree;

use std::path::PathBuf;

use numapin::topology::parse_hugepage_dir_name;
use numapin::{format_bytes, parse_size};

/// `text` (from `format_cpulist(ids)`) names exactly `ids`, as ascending, non-touching ranges.
/// Expands lazily, so a wrong `0-4294967295` fails at its first mismatch, not after 16 GiB.
pub fn check_formatted_list(text: &str, ids: &[u32]) {
    if ids.is_empty() {
        assert_eq!(text, "");
        return;
    }
    let ranges: Vec<(u32, u32)> = text
        .split(',')
        .map(|part| match part.split_once('-') {
            Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
            None => (part.parse().unwrap(), part.parse().unwrap()),
        })
        .collect();
    for w in ranges.windows(2) {
        assert!(
            u64::from(w[0].1) + 1 < u64::from(w[1].0),
            "{text:?}: ranges touch"
        );
    }
    let expanded = ranges.iter().flat_map(|&(a, b)| a..=b);
    assert!(expanded.eq(ids.iter().copied()), "{text:?} != {ids:?}");
}

/// A hugepage directory name that parsed: the page size in bytes fits a `u64`, and the name is
/// the kernel's canonical spelling, so two directories can never claim the same pool size.
pub fn check_hugepage_dir_name(name: &str, kib: u64) {
    assert!(kib > 0);
    assert!(
        kib.checked_mul(1024).is_some(),
        "{name:?}: {kib} KiB overflows"
    );
    assert_eq!(
        name,
        format!("hugepages-{kib}kB"),
        "non-canonical name accepted"
    );
    assert_eq!(parse_hugepage_dir_name(name), Some(kib));
}

/// `format_bytes(n)` re-parses: exactly when printed without decimals, else within 1% of the
/// unit (or not at all: `1.37 KiB` is not a whole number of bytes).
pub fn check_format_bytes(n: u64) {
    let text = format_bytes(n);
    let parsed = parse_size(&text);
    if !text.contains('.') {
        assert_eq!(parsed, Ok(n), "{text:?}");
        return;
    }
    if let Ok(m) = parsed {
        let unit = [40u32, 30, 20, 10]
            .into_iter()
            .map(|s| 1u64 << s)
            .find(|&u| n >= u)
            .unwrap();
        assert!(
            m.abs_diff(n) <= unit / 100,
            "{n} printed as {text:?} re-parses to {m}"
        );
    }
}

/// A scratch file path unique to this process (`$NUMAPIN_FUZZ_TMP`, which `fuzz/run.sh` points
/// at a private directory on tmpfs, else `/dev/shm`), reused by every input.
pub fn scratch_file(what: &str) -> PathBuf {
    let base = std::env::var_os("NUMAPIN_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    base.join(format!("numapin-fuzz-{what}-{}", std::process::id()))
}
