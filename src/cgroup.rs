//! The calling process's cgroup limits that bound a reservation: memory (`memory.max`,
//! v1 `memory.limit_in_bytes`), hugetlb (`hugetlb.2MB.max`, v1 `hugetlb.2MB.limit_in_bytes`,
//! and their `rsvd` twins) and the cpuset's memory nodes (`cpuset.mems.effective`).
//!
//! A limit is enforced at every level of the hierarchy, so the room left is the least room of
//! the process's cgroup and its ancestors; [`CgroupFacts`] keeps the level with the least room
//! and names its file, so an error can say which file to raise. The parsers are pure functions
//! over strings; [`CgroupFacts::from_roots`] reads a copy of the files for tests.

use std::fs;
use std::path::{Path, PathBuf};

/// One limit: the file that sets it, the limit and what the cgroup uses now.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CgroupLimit {
    /// The file that sets the limit (`/sys/fs/cgroup/vm/memory.max`).
    pub file: PathBuf,
    /// The limit in bytes.
    pub limit: u64,
    /// Bytes in use at that level, less what the kernel can reclaim without swap (page cache
    /// on the file LRU lists).
    pub usage: u64,
}

impl CgroupLimit {
    /// Bytes still allowed at that level.
    pub fn room(&self) -> u64 {
        self.limit.saturating_sub(self.usage)
    }
}

/// The cgroup limits of the calling process that a reservation can hit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CgroupFacts {
    /// The memory limit with the least room, if any level sets one.
    pub memory: Option<CgroupLimit>,
    /// Whether hugetlb pages count against the memory limit too (cgroup v2 mounted with
    /// `memory_hugetlb_accounting`, Linux 6.6).
    pub memory_counts_hugetlb: bool,
    /// Per hugetlb page size (bytes), the hugetlb limit with the least room, if any level sets
    /// one (the fault-time limit and the reservation-time `rsvd` limit both count).
    pub hugetlb: Vec<(u64, CgroupLimit)>,
    /// The cpuset file that lists the memory nodes this process may use, if there is one
    /// (`cpuset.mems.effective`, v1 `cpuset.effective_mems`).
    pub cpuset_mems_file: Option<PathBuf>,
}

impl CgroupFacts {
    /// The limits of the calling process, read from `/proc/self/cgroup`,
    /// `/proc/self/mountinfo` and the cgroup filesystems. Files that cannot be read are
    /// treated as no limit: the kernel keeps the last word.
    pub fn of_self() -> CgroupFacts {
        let cgroup = fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        CgroupFacts::from_roots(&cgroup, &mountinfo, Path::new("/"))
    }

    /// The limits described by the text of `/proc/self/cgroup` and `/proc/self/mountinfo`,
    /// with the mount points read under `root` (`/` on a live host).
    pub fn from_roots(cgroup: &str, mountinfo: &str, root: &Path) -> CgroupFacts {
        let mut facts = CgroupFacts::default();
        let memberships = parse_proc_cgroup(cgroup);
        for m in parse_mountinfo(mountinfo) {
            let v2 = m.fstype == "cgroup2";
            let path = if v2 {
                memberships.iter().find(|c| c.v2).map(|c| &c.path)
            } else {
                memberships
                    .iter()
                    .find(|c| !c.v2 && c.controllers.iter().any(|k| m.options.contains(k)))
                    .map(|c| &c.path)
            };
            let Some(path) = path else { continue };
            // The process's cgroup relative to this mount's root (a cgroup namespace or a bind
            // mount of a subtree shows only part of the hierarchy).
            let Some(rel) = path.strip_prefix(m.root.as_str()) else {
                continue;
            };
            let mount = root.join(m.mount_point.trim_start_matches('/'));
            let own = mount.join(rel.trim_start_matches('/'));
            let levels: Vec<PathBuf> = own
                .ancestors()
                .take_while(|p| p.starts_with(&mount))
                .map(Path::to_path_buf)
                .collect();
            let has = |k: &str| v2 || m.options.iter().any(|o| o == k);
            if v2 && m.options.iter().any(|o| o == "memory_hugetlb_accounting") {
                facts.memory_counts_hugetlb = true;
            }
            if has("memory") {
                let (max, cur) = if v2 {
                    ("memory.max", "memory.current")
                } else {
                    ("memory.limit_in_bytes", "memory.usage_in_bytes")
                };
                for dir in &levels {
                    if let Some(l) = read_limit(dir, max, cur, Some(v2)) {
                        keep_tightest(&mut facts.memory, l);
                    }
                }
            }
            if has("hugetlb") {
                for (bytes, name) in [(2u64 << 20, "2MB"), (1u64 << 30, "1GB")] {
                    let mut tightest = None;
                    for dir in &levels {
                        let pairs: [(String, String); 2] = if v2 {
                            [
                                (
                                    format!("hugetlb.{name}.max"),
                                    format!("hugetlb.{name}.current"),
                                ),
                                (
                                    format!("hugetlb.{name}.rsvd.max"),
                                    format!("hugetlb.{name}.rsvd.current"),
                                ),
                            ]
                        } else {
                            [
                                (
                                    format!("hugetlb.{name}.limit_in_bytes"),
                                    format!("hugetlb.{name}.usage_in_bytes"),
                                ),
                                (
                                    format!("hugetlb.{name}.rsvd.limit_in_bytes"),
                                    format!("hugetlb.{name}.rsvd.usage_in_bytes"),
                                ),
                            ]
                        };
                        for (max, cur) in &pairs {
                            if let Some(l) = read_limit(dir, max, cur, None) {
                                keep_tightest(&mut tightest, l);
                            }
                        }
                    }
                    if let Some(l) = tightest {
                        facts.hugetlb.push((bytes, l));
                    }
                }
            }
            if has("cpuset") && facts.cpuset_mems_file.is_none() {
                let f = own.join(if v2 {
                    "cpuset.mems.effective"
                } else {
                    "cpuset.effective_mems"
                });
                if f.exists() {
                    facts.cpuset_mems_file = Some(f);
                }
            }
        }
        facts
    }

    /// The hugetlb limit for a page size in bytes, if one is set.
    pub fn hugetlb(&self, page_size_bytes: u64) -> Option<&CgroupLimit> {
        self.hugetlb
            .iter()
            .find(|(b, _)| *b == page_size_bytes)
            .map(|(_, l)| l)
    }
}

fn keep_tightest(slot: &mut Option<CgroupLimit>, l: CgroupLimit) {
    if slot.as_ref().is_none_or(|s| l.room() < s.room()) {
        *slot = Some(l);
    }
}

/// Reads `dir/max` and `dir/cur`; `None` when absent or unlimited. For a memory controller
/// (`memory`: `Some(v2)`), the reclaimable page cache of `memory.stat` is taken off the usage.
fn read_limit(dir: &Path, max: &str, cur: &str, memory: Option<bool>) -> Option<CgroupLimit> {
    let file = dir.join(max);
    let limit = parse_limit(&fs::read_to_string(&file).ok()?)?;
    let usage = fs::read_to_string(dir.join(cur))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let reclaimable = match memory {
        Some(v2) => fs::read_to_string(dir.join("memory.stat"))
            .map(|s| file_lru_bytes(&s, v2))
            .unwrap_or(0),
        None => 0,
    };
    Some(CgroupLimit {
        file,
        limit,
        usage: usage.saturating_sub(reclaimable),
    })
}

/// A limit file's value in bytes; `None` for no limit (`max`, or v1's "unlimited", a value
/// near `i64::MAX` rounded down to a page).
pub fn parse_limit(s: &str) -> Option<u64> {
    let s = s.trim();
    if s == "max" {
        return None;
    }
    let v: u64 = s.parse().ok()?;
    (v < 1 << 62).then_some(v)
}

/// Bytes on the file LRU lists of a `memory.stat` (v2 `active_file + inactive_file`, v1 the
/// hierarchical `total_active_file + total_inactive_file`): page cache the kernel can drop
/// before it would have to swap or kill.
pub fn file_lru_bytes(stat: &str, v2: bool) -> u64 {
    let keys: [&str; 2] = if v2 {
        ["active_file", "inactive_file"]
    } else {
        ["total_active_file", "total_inactive_file"]
    };
    stat.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(k, _)| keys.contains(k))
        .filter_map(|(_, v)| v.trim().parse::<u64>().ok())
        .fold(0u64, u64::saturating_add)
}

/// One line of `/proc/self/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Membership {
    v2: bool,
    controllers: Vec<String>,
    path: String,
}

fn parse_proc_cgroup(s: &str) -> Vec<Membership> {
    s.lines()
        .filter_map(|l| {
            let mut it = l.splitn(3, ':');
            let id = it.next()?;
            let ctl = it.next()?;
            let path = it.next()?.to_string();
            Some(Membership {
                v2: id == "0" && ctl.is_empty(),
                controllers: ctl
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(|c| c.trim_start_matches("name=").to_string())
                    .collect(),
                path,
            })
        })
        .collect()
}

/// One cgroup mount of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct CgroupMount {
    root: String,
    mount_point: String,
    fstype: String,
    /// Mount and super options together (v1 names its controllers there).
    options: Vec<String>,
}

fn parse_mountinfo(s: &str) -> Vec<CgroupMount> {
    s.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let p: Vec<&str> = post.split(' ').collect();
            let fstype = *p.first()?;
            if fstype != "cgroup" && fstype != "cgroup2" {
                return None;
            }
            let mut options: Vec<String> = f.get(5)?.split(',').map(String::from).collect();
            options.extend(p.get(2).unwrap_or(&"").split(',').map(String::from));
            Some(CgroupMount {
                root: unescape(f.get(3)?),
                mount_point: unescape(f.get(4)?),
                fstype: fstype.to_string(),
                options,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let d = |k: usize| u32::from(b[i + k] - b'0');
            // Three octal digits can exceed a byte; the kernel never writes such an escape.
            out.push((d(1) * 64 + d(2) * 8 + d(3)) as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO_V2: &str = "35 24 0:30 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";

    fn tree(files: &[(&str, &str)]) -> PathBuf {
        let root = std::env::temp_dir().join(format!(
            "numapin-cgroup-test-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&root);
        for (p, v) in files {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, v).unwrap();
        }
        root
    }

    #[test]
    fn v2_limits_take_the_tightest_level_and_skip_page_cache() {
        let root = tree(&[
            ("sys/fs/cgroup/vms/memory.max", "1073741824\n"),
            ("sys/fs/cgroup/vms/memory.current", "104857600\n"),
            ("sys/fs/cgroup/vms/a/memory.max", "max\n"),
            ("sys/fs/cgroup/vms/a/memory.current", "8388608\n"),
            ("sys/fs/cgroup/vms/a/b/memory.max", "268435456\n"),
            ("sys/fs/cgroup/vms/a/b/memory.current", "67108864\n"),
            (
                "sys/fs/cgroup/vms/a/b/memory.stat",
                "anon 1\nactive_file 16777216\ninactive_file 16777216\n",
            ),
            ("sys/fs/cgroup/vms/a/b/hugetlb.2MB.max", "20971520\n"),
            ("sys/fs/cgroup/vms/a/b/hugetlb.2MB.current", "4194304\n"),
            ("sys/fs/cgroup/vms/a/b/hugetlb.2MB.rsvd.max", "max\n"),
            ("sys/fs/cgroup/vms/a/b/hugetlb.1GB.max", "max\n"),
            ("sys/fs/cgroup/vms/a/b/cpuset.mems.effective", "0\n"),
        ]);
        let f = CgroupFacts::from_roots("0::/vms/a/b\n", MOUNTINFO_V2, &root);
        let m = f.memory.as_ref().expect("memory limit");
        // b: 256 MiB - (64 - 32 MiB page cache) = 224 MiB; vms: 1 GiB - 100 MiB. b is tighter.
        assert_eq!(m.file, root.join("sys/fs/cgroup/vms/a/b/memory.max"));
        assert_eq!(
            (m.limit, m.usage, m.room()),
            (256 << 20, 32 << 20, 224 << 20)
        );
        let h = f.hugetlb(2 << 20).expect("hugetlb 2MB");
        assert_eq!((h.limit, h.usage), (20 << 20, 4 << 20));
        assert!(f.hugetlb(1 << 30).is_none());
        assert_eq!(
            f.cpuset_mems_file,
            Some(root.join("sys/fs/cgroup/vms/a/b/cpuset.mems.effective"))
        );
        assert!(!f.memory_counts_hugetlb);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn v1_limits_and_namespaced_roots() {
        let root = tree(&[
            ("cg/memory/vm/memory.limit_in_bytes", "536870912\n"),
            ("cg/memory/vm/memory.usage_in_bytes", "0\n"),
            ("cg/memory/memory.limit_in_bytes", "9223372036854771712\n"),
            (
                "cg/hugetlb/vm/hugetlb.2MB.limit_in_bytes",
                "9223372036854771712\n",
            ),
            ("cg/hugetlb/vm/hugetlb.1GB.limit_in_bytes", "2147483648\n"),
            ("cg/hugetlb/vm/hugetlb.1GB.usage_in_bytes", "1073741824\n"),
        ]);
        let cgroup = "5:memory:/host/vm\n4:hugetlb:/host/vm\n3:cpu,cpuacct:/host/vm\n";
        let mountinfo = "40 30 0:40 /host /cg/memory rw - cgroup cgroup rw,memory\n\
                         41 30 0:41 /host /cg/hugetlb rw - cgroup cgroup rw,hugetlb\n\
                         42 30 0:42 / /other rw - ext4 /dev/vda rw\n";
        let f = CgroupFacts::from_roots(cgroup, mountinfo, &root);
        let m = f.memory.as_ref().expect("memory");
        assert_eq!((m.limit, m.room()), (512 << 20, 512 << 20));
        assert_eq!(m.file, root.join("cg/memory/vm/memory.limit_in_bytes"));
        assert!(f.hugetlb(2 << 20).is_none(), "v1 unlimited is no limit");
        assert_eq!(f.hugetlb(1 << 30).map(CgroupLimit::room), Some(1 << 30));
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn limits_parse() {
        assert_eq!(parse_limit("max\n"), None);
        assert_eq!(parse_limit("9223372036854771712"), None);
        assert_eq!(parse_limit("4096\n"), Some(4096));
        assert_eq!(parse_limit("x"), None);
        assert_eq!(unescape(r"/a\040b"), "/a b");
        assert_eq!(
            file_lru_bytes(
                "total_active_file 5\ntotal_inactive_file 6\nactive_file 100\n",
                false
            ),
            11
        );
    }
}
