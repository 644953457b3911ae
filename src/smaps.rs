//! Reading a mapping's kernel-side facts from `/proc/self/smaps`: page size, resident and locked
//! bytes, huge-page backing. numapin's tests use it to check results from the kernel's side,
//! and a VMM can use it to audit a region it was handed.

use std::path::Path;

use crate::error::{Error, Result};

/// What the kernel reports for one mapping (VMA).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmaInfo {
    /// First address of the VMA.
    pub start: usize,
    /// One past the last address.
    pub end: usize,
    /// `KernelPageSize` in bytes.
    pub kernel_page_size: u64,
    /// `Rss` in bytes (for hugetlb: 0 on most kernels; see `hugetlb_bytes`).
    pub rss: u64,
    /// `AnonHugePages`: bytes backed by transparent huge pages.
    pub anon_huge: u64,
    /// `ShmemPmdMapped`: bytes of a shmem (memfd) mapping mapped with transparent huge pages.
    pub shmem_pmd_mapped: u64,
    /// `Private_Hugetlb` + `Shared_Hugetlb`: bytes of hugetlb pages faulted in.
    pub hugetlb_bytes: u64,
    /// `Locked` in bytes.
    pub locked: u64,
    /// `VmFlags` (e.g. `lo` locked, `ht` hugetlb, `dd` dont-dump, `dc` dont-copy on fork).
    pub flags: Vec<String>,
}

/// Finds the VMA containing `addr` in smaps text.
///
/// # Errors
/// A message when a header or field line is malformed.
pub fn parse_smaps(text: &str, addr: usize) -> std::result::Result<Option<VmaInfo>, String> {
    let mut cur: Option<VmaInfo> = None;
    for line in text.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((a, b)) = first.split_once('-') {
            if let (Ok(start), Ok(end)) =
                (usize::from_str_radix(a, 16), usize::from_str_radix(b, 16))
            {
                if let Some(done) = cur.take() {
                    return Ok(Some(done));
                }
                if (start..end).contains(&addr) {
                    cur = Some(VmaInfo {
                        start,
                        end,
                        ..VmaInfo::default()
                    });
                }
                continue;
            }
        }
        let Some(info) = cur.as_mut() else { continue };
        let Some((key, value)) = line.split_once(':') else {
            return Err(format!("smaps line {line:?} has no colon"));
        };
        if key == "VmFlags" {
            info.flags = value.split_whitespace().map(str::to_string).collect();
            continue;
        }
        let bad = || format!("smaps field {key}: {value:?} is not `N kB`");
        // Exactly the kernel's shape: decimal digits, whitespace, `kB`; bytes fit a u64.
        let kb = || -> std::result::Result<u64, String> {
            let v = value.trim().strip_suffix("kB").ok_or_else(bad)?.trim_end();
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            v.parse::<u64>()
                .ok()
                .and_then(|k| k.checked_mul(1024))
                .ok_or_else(bad)
        };
        match key {
            "KernelPageSize" => info.kernel_page_size = kb()?,
            "Rss" => info.rss = kb()?,
            "AnonHugePages" => info.anon_huge = kb()?,
            "ShmemPmdMapped" => info.shmem_pmd_mapped = kb()?,
            "Private_Hugetlb" | "Shared_Hugetlb" => {
                info.hugetlb_bytes = info.hugetlb_bytes.checked_add(kb()?).ok_or_else(|| {
                    format!("smaps: Private_Hugetlb + Shared_Hugetlb overflow at {value:?}")
                })?;
            }
            "Locked" => info.locked = kb()?,
            _ => {}
        }
    }
    Ok(cur)
}

/// The kernel's view of the mapping containing `addr` in this process.
///
/// # Errors
/// [`Error::Sysfs`] if `/proc/self/smaps` cannot be read, [`Error::Parse`] if it is malformed.
pub fn vma_info(addr: usize) -> Result<Option<VmaInfo>> {
    let path = Path::new("/proc/self/smaps");
    let text = std::fs::read_to_string(path).map_err(|source| Error::Sysfs {
        path: path.to_path_buf(),
        source,
    })?;
    parse_smaps(&text, addr).map_err(|r| Error::Parse {
        path: path.to_path_buf(),
        source: r.into(),
    })
}

/// Bytes of the mapping at `addr` backed by transparent huge pages (anonymous or shmem).
pub(crate) fn huge_backed_bytes(addr: usize) -> Option<u64> {
    vma_info(addr)
        .ok()
        .flatten()
        .map(|v| v.anon_huge + v.shmem_pmd_mapped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_vma() {
        let text = "00400000-00452000 r-xp 00000000 08:02 173521 /usr/bin/dbus-daemon\n\
                    Size:                328 kB\nRss:                 100 kB\nVmFlags: rd ex mr\n\
                    7f0000000000-7f0040000000 rw-p 00000000 00:00 0\n\
                    Size:            1048576 kB\nKernelPageSize:     2048 kB\nRss:  0 kB\n\
                    Private_Hugetlb:  1048576 kB\nLocked: 0 kB\nVmFlags: rd wr mr ht dd dc\n";
        let v = parse_smaps(text, 0x7f0000001000).unwrap().unwrap();
        assert_eq!(v.kernel_page_size, 2 << 20);
        assert_eq!(v.hugetlb_bytes, 1 << 30);
        assert!(v.flags.iter().any(|f| f == "ht"));
        assert_eq!(parse_smaps(text, 0x10).unwrap(), None);
        assert!(parse_smaps("0-ffff rw-p 0 0 0\nbroken\n", 1).is_err());
    }
}
