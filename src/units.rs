//! Newtypes for the units numapin speaks: NUMA node ids, page sizes and byte sizes.

use std::fmt;
use std::str::FromStr;

/// A NUMA node id as the kernel numbers it (`/sys/devices/system/node/nodeN`).
///
/// Node ids may be sparse: a host can have nodes 0 and 2 but no node 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(transparent))]
pub struct NodeId(pub u32);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(&self.0.to_string())
    }
}

/// The page size a region is backed with.
///
/// `Base4K` and `Transparent` come from the buddy allocator (node memory); `Huge2M` and
/// `Huge1G` come from the kernel's persistent hugetlb pools, which an operator sizes per
/// node in `/sys/devices/system/node/nodeN/hugepages/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PageSize {
    /// Base pages (4 KiB on x86-64).
    Base4K,
    /// Transparent huge pages: base-page memory the kernel backs with 2 MiB pages where it
    /// can (`madvise(MADV_HUGEPAGE)`), falling back to base pages where it cannot.
    Transparent,
    /// 2 MiB hugetlb pages from the node's persistent pool.
    Huge2M,
    /// 1 GiB hugetlb pages from the node's persistent pool.
    Huge1G,
    /// The largest page size the target node(s) can hold right now; the reason for any
    /// fallback is recorded in the report.
    Auto,
}

impl PageSize {
    /// Concrete page sizes, largest first (the order [`PageSize::Auto`] tries them in).
    pub const CONCRETE_LARGEST_FIRST: [PageSize; 4] = [
        PageSize::Huge1G,
        PageSize::Huge2M,
        PageSize::Transparent,
        PageSize::Base4K,
    ];

    /// The granule in bytes: the size of one page of this kind, the unit a region's size must
    /// be a multiple of. `Transparent` counts as base pages (the kernel may fall back to them).
    /// `None` for [`PageSize::Auto`].
    pub fn bytes(self) -> Option<usize> {
        match self {
            PageSize::Base4K | PageSize::Transparent => Some(base_page_size()),
            PageSize::Huge2M => Some(2 << 20),
            PageSize::Huge1G => Some(1 << 30),
            PageSize::Auto => None,
        }
    }

    /// The size of the pages actually used when the kernel gets its way: 2 MiB for
    /// `Transparent`, otherwise the same as [`PageSize::bytes`].
    pub fn native_bytes(self) -> Option<usize> {
        match self {
            PageSize::Transparent => Some(2 << 20),
            other => other.bytes(),
        }
    }

    /// Whether pages come from a hugetlb pool.
    pub fn is_hugetlb(self) -> bool {
        matches!(self, PageSize::Huge2M | PageSize::Huge1G)
    }

    /// The hugetlb page size for a size in bytes (2 MiB or 1 GiB).
    pub fn hugetlb_from_bytes(bytes: u64) -> Option<PageSize> {
        match bytes {
            0x20_0000 => Some(PageSize::Huge2M),
            0x4000_0000 => Some(PageSize::Huge1G),
            _ => None,
        }
    }

    /// The short name used on the command line and in reports (`4k`, `thp`, `2m`, `1g`, `auto`).
    pub fn name(self) -> &'static str {
        match self {
            PageSize::Base4K => "4k",
            PageSize::Transparent => "thp",
            PageSize::Huge2M => "2m",
            PageSize::Huge1G => "1g",
            PageSize::Auto => "auto",
        }
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a text could not be parsed. The public parsers return it: [`parse_size`],
/// `PageSize::from_str`, `MemPolicy::from_str` and the kernel-file parsers of
/// [`crate::topology`]. Each variant names what was being parsed and the offending text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// Nothing to parse where something is required.
    #[error("empty {what}: expected {expected}")]
    Empty {
        /// What was being parsed (`size`, `page size`, ...).
        what: &'static str,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A word that is not one of the accepted ones.
    #[error("unknown {what} {input:?}: expected {expected}")]
    Unknown {
        /// What was being parsed.
        what: &'static str,
        /// The word found.
        input: String,
        /// What would have been accepted.
        expected: &'static str,
    },
    /// A number that is not a number.
    #[error("{what}: {input:?} is not a number")]
    NotANumber {
        /// What was being parsed.
        what: &'static str,
        /// The text found.
        input: String,
    },
    /// A value beyond what can be represented or is allowed.
    #[error("{what} {input:?} is too large (the limit is {limit})")]
    TooLarge {
        /// What was being parsed.
        what: &'static str,
        /// The text found.
        input: String,
        /// The largest value allowed.
        limit: u64,
    },
    /// Text whose shape is wrong.
    #[error("{}", malformed(what, input, problem))]
    Malformed {
        /// What was being parsed.
        what: &'static str,
        /// The text found (empty when the problem is about the whole text).
        input: String,
        /// What is wrong with it.
        problem: String,
    },
}

fn malformed(what: &str, input: &str, problem: &str) -> String {
    if input.is_empty() {
        format!("{what}: {problem}")
    } else {
        format!("{what} {input:?}: {problem}")
    }
}

impl From<String> for ParseError {
    /// A problem with a file's contents as a whole, described in words.
    fn from(problem: String) -> Self {
        ParseError::Malformed {
            what: "contents",
            input: String::new(),
            problem,
        }
    }
}

impl ParseError {
    pub(crate) fn malformed(what: &'static str, input: &str, problem: impl Into<String>) -> Self {
        ParseError::Malformed {
            what,
            input: input.to_string(),
            problem: problem.into(),
        }
    }
}

impl FromStr for PageSize {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "4k" | "4kib" | "base" => Ok(PageSize::Base4K),
            "thp" | "transparent" => Ok(PageSize::Transparent),
            "2m" | "2mib" | "2mb" => Ok(PageSize::Huge2M),
            "1g" | "1gib" | "1gb" => Ok(PageSize::Huge1G),
            "auto" => Ok(PageSize::Auto),
            other => Err(ParseError::Unknown {
                what: "page size",
                input: other.to_string(),
                expected: "one of 4k, thp, 2m, 1g, auto",
            }),
        }
    }
}

/// The system's base page size in bytes.
pub fn base_page_size() -> usize {
    use std::sync::OnceLock;
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // `sysconf` is a safe libc query; wrapped in `sys`.
        crate::sys::page_size()
    })
}

/// Parses a byte size: plain bytes (`1048576`), or a number with a binary unit (`512MiB`,
/// `8GiB`, `8G`, `4k`, `1.5GiB`). `K`, `M`, `G`, `T` and their `KiB`/`KB` spellings are all
/// powers of 1024, as memory is sized. Fractions must come out to a whole number of bytes.
///
/// # Errors
/// A [`ParseError`] naming what was wrong with the string.
pub fn parse_size(s: &str) -> Result<u64, ParseError> {
    const WHAT: &str = "size";
    let bad = |problem: &str| ParseError::malformed(WHAT, s, problem);
    let too_large = || ParseError::TooLarge {
        what: WHAT,
        input: s.to_string(),
        limit: u64::MAX,
    };
    let t = s.trim();
    if t.is_empty() {
        return Err(ParseError::Empty {
            what: WHAT,
            expected: "e.g. 512MiB, 8GiB or a number of bytes",
        });
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '_'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: String = num.chars().filter(|&c| c != '_').collect();
    if !num.bytes().any(|b| b.is_ascii_digit()) {
        return Err(bad("has no number"));
    }
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(ParseError::Unknown {
                what: "unit",
                input: other.to_string(),
                expected: "B, KiB, MiB, GiB or TiB",
            })
        }
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) => (i, f),
        None => (num.as_str(), ""),
    };
    if frac.contains('.') {
        return Err(bad("has more than one decimal point"));
    }
    let int: u64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| too_large())?
    };
    let whole = int.checked_mul(1u64 << shift).ok_or_else(too_large)?;
    if frac.is_empty() {
        return Ok(whole);
    }
    // Exact decimal fraction: frac / 10^len * 2^shift must be an integer.
    if frac.len() > 18 {
        return Err(bad("has too many decimals"));
    }
    let denom = 10u128.pow(frac.len() as u32);
    let f: u128 = frac.parse().map_err(|_| ParseError::NotANumber {
        what: WHAT,
        input: frac.to_string(),
    })?;
    let scaled = f * (1u128 << shift);
    if scaled % denom != 0 {
        return Err(bad("is not a whole number of bytes"));
    }
    let part = u64::try_from(scaled / denom).map_err(|_| too_large())?;
    whole.checked_add(part).ok_or_else(too_large)
}

/// Formats sorted ids as a compact kernel list (`0-3,8`); `topology::format_cpulist` is this.
pub fn format_id_list(ids: &[u32]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < ids.len() {
        let start = ids[i];
        let mut end = start;
        while i + 1 < ids.len() && ids[i + 1] == end + 1 {
            i += 1;
            end = ids[i];
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
        i += 1;
    }
    out
}

/// Formats a byte count with the largest binary unit that keeps it readable (`8 GiB`,
/// `1.5 GiB`, `4 KiB`, `17 B`).
pub fn format_bytes(b: u64) -> String {
    const UNITS: [(&str, u32); 4] = [("TiB", 40), ("GiB", 30), ("MiB", 20), ("KiB", 10)];
    for (name, shift) in UNITS {
        let unit = 1u64 << shift;
        if b >= unit {
            if b % unit == 0 {
                return format!("{} {name}", b >> shift);
            }
            return format!("{:.2} {name}", b as f64 / unit as f64);
        }
    }
    format!("{b} B")
}

/// The name of a page-size class, one spelling everywhere (tables, JSON, errors): `4K` (base
/// pages and THP, one class), `2M`, `1G`; other sizes as `<n>K`/`<n>M`/`<n>G`, or `<n>B`.
/// Inputs (`--page-size`, `--headroom`) accept these case-insensitively.
pub fn class_name(page_size_bytes: u64) -> String {
    match page_size_bytes {
        b if b >= 1 << 30 && b % (1 << 30) == 0 => format!("{}G", b >> 30),
        b if b >= 1 << 20 && b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b >= 1 << 10 && b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => format!("{b}B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("8GiB"), Ok(8 << 30));
        assert_eq!(parse_size("8G"), Ok(8 << 30));
        assert_eq!(parse_size("8 gb"), Ok(8 << 30));
        assert_eq!(parse_size("1.5GiB"), Ok(3 << 29));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("1_024"), Ok(1024));
        assert!(parse_size("").is_err());
        assert!(parse_size("GiB").is_err());
        assert!(parse_size("1.1B").is_err());
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("99999999999999999999").is_err());
        assert!(parse_size("16777216TiB").is_err());
        assert!(parse_size("1.2.3G").is_err());
    }

    #[test]
    fn bytes_format() {
        assert_eq!(format_bytes(8 << 30), "8 GiB");
        assert_eq!(format_bytes(3 << 29), "1.50 GiB");
        assert_eq!(format_bytes(17), "17 B");
    }

    #[test]
    fn page_sizes_round_trip() {
        for p in PageSize::CONCRETE_LARGEST_FIRST {
            assert_eq!(p.name().parse::<PageSize>(), Ok(p));
        }
        assert!("3m".parse::<PageSize>().is_err());
    }
}
