//! NUMA topology read from sysfs: nodes, their CPUs and memory, per-node hugepage pools and
//! the distance matrix.
//!
//! Everything here is parsed by pure functions over strings ([`parse_cpulist`],
//! [`parse_node_meminfo`], [`parse_distances`]) so they can be fuzzed; [`Topology::from_sysfs`]
//! only reads files and calls them. No C library is needed, so VMMs that build static binaries
//! can use it.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::units::{NodeId, PageSize, ParseError};

/// The largest CPU or node id a list may name; guards against a hostile file making us
/// allocate gigabytes (the kernel's own limit, `NR_CPUS`, is 8192 on distribution kernels).
pub const MAX_LIST_ID: u32 = 1 << 16;

/// One per-node hugetlb pool (`/sys/devices/system/node/nodeN/hugepages/hugepages-SIZEkB`).
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HugepagePool {
    /// Page size of this pool in bytes (2 MiB or 1 GiB on x86-64).
    pub page_size_bytes: u64,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not yet faulted in by anyone (`free_hugepages`). Pages reserved by another
    /// process's mapping but not yet faulted still count as free here: the kernel keeps
    /// reservations globally, not per node.
    pub free: u64,
    /// Surplus pages above `nr_hugepages` allocated through overcommit (`surplus_hugepages`).
    pub surplus: u64,
}

impl HugepagePool {
    /// The [`PageSize`] of this pool, if it is one numapin knows.
    pub fn page_size(&self) -> Option<PageSize> {
        PageSize::hugetlb_from_bytes(self.page_size_bytes)
    }

    /// Free bytes in the pool.
    pub fn free_bytes(&self) -> u64 {
        self.free.saturating_mul(self.page_size_bytes)
    }
}

/// One NUMA node.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct NumaNode {
    /// The kernel's id for the node.
    pub id: NodeId,
    /// Online CPUs of this node, ascending. Empty for a CPU-less node.
    pub cpus: Vec<u32>,
    /// `MemTotal` of the node (includes its hugetlb pools). Zero for a memory-less node.
    pub mem_total_bytes: u64,
    /// `MemFree` of the node (excludes its hugetlb pools).
    pub mem_free_bytes: u64,
    /// Memory the kernel could reclaim on this node without swap: file pages and reclaimable
    /// slab (`Active(file) + Inactive(file) + SReclaimable`). An upper bound.
    pub mem_reclaimable_bytes: u64,
    /// Memory present on the node that the page allocator does not manage yet, from
    /// `/proc/zoneinfo` (`present - managed`). Kernels with deferred struct-page
    /// initialisation (common in VMs) hand it to the allocator on demand, so it is available
    /// although `MemFree` does not count it; on other kernels it is memory reserved at boot
    /// (a small overestimate). Pages a memory balloon took back for the hypervisor
    /// (`nr_balloon_pages` in the node's `vmstat`) also leave `managed` but are not available:
    /// they are not counted here.
    pub mem_deferred_bytes: u64,
    /// Hugetlb pools of this node, smallest page size first.
    pub hugepages: Vec<HugepagePool>,
}

impl NumaNode {
    /// Whether the node has memory at all (a memory-less node only has CPUs).
    pub fn has_memory(&self) -> bool {
        self.mem_total_bytes > 0
    }

    /// The pool of the given hugetlb page size, if the kernel offers one on this node.
    pub fn pool(&self, page: PageSize) -> Option<&HugepagePool> {
        let bytes = page.bytes()? as u64;
        self.hugepages.iter().find(|p| p.page_size_bytes == bytes)
    }

    /// Base-page memory this node could hand out now: free, reclaimable and not yet
    /// initialised (deferred) memory. A necessary condition, not a promise: the kernel has the
    /// last word at fault time.
    pub fn mem_available_bytes(&self) -> u64 {
        self.mem_free_bytes
            .saturating_add(self.mem_reclaimable_bytes)
            .saturating_add(self.mem_deferred_bytes)
    }
}

/// The system-wide transparent-hugepage mode (`/sys/kernel/mm/transparent_hugepage/enabled`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum ThpMode {
    /// THP for every anonymous mapping.
    Always,
    /// THP only where the program asks (`MADV_HUGEPAGE`); numapin asks.
    Madvise,
    /// THP disabled: a `Transparent` request would get base pages only.
    Never,
    /// The kernel has no THP support (file absent).
    Unsupported,
}

/// The host's NUMA topology at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Topology {
    /// Online nodes, ascending by id.
    pub nodes: Vec<NumaNode>,
    /// `distances[i][j]`: the kernel's distance from `nodes[i]` to `nodes[j]` (10 = local).
    pub distances: Vec<Vec<u32>>,
    /// Transparent-hugepage mode.
    pub thp: ThpMode,
}

impl Topology {
    /// Reads the topology of this host from `/sys`.
    ///
    /// # Errors
    /// [`Error::Sysfs`] names a file that could not be read, [`Error::Parse`] one whose contents
    /// were not what the kernel writes.
    pub fn from_sysfs() -> Result<Topology> {
        Topology::from_roots(Path::new("/sys"), Path::new("/proc"))
    }

    /// Reads the topology from a sysfs tree rooted at `root` (normally `/sys`) and a procfs
    /// rooted at `proc` (normally `/proc`; only `zoneinfo` is read, and may be absent). Useful
    /// to read a copy of another host's files.
    ///
    /// # Errors
    /// As [`Topology::from_sysfs`].
    pub fn from_roots(root: &Path, proc: &Path) -> Result<Topology> {
        let zones = match fs::read_to_string(proc.join("zoneinfo")) {
            Ok(s) => parse_zoneinfo(&s).map_err(|e| Error::parsed(proc.join("zoneinfo"), e))?,
            Err(_) => BTreeMap::new(),
        };
        let node_dir = root.join("devices/system/node");
        let online_nodes = parse_cpulist(&read(&node_dir.join("online"))?)
            .map_err(|e| Error::parsed(node_dir.join("online"), e))?;
        let online_cpus_path = root.join("devices/system/cpu/online");
        let online_cpus = parse_cpulist(&read(&online_cpus_path)?)
            .map_err(|e| Error::parsed(online_cpus_path.clone(), e))?;

        let mut nodes = Vec::with_capacity(online_nodes.len());
        let mut raw_distances = Vec::with_capacity(online_nodes.len());
        for id in online_nodes.iter().copied() {
            let dir = node_dir.join(format!("node{id}"));
            let cpulist = dir.join("cpulist");
            let mut cpus =
                parse_cpulist(&read(&cpulist)?).map_err(|e| Error::parsed(cpulist, e))?;
            cpus.retain(|c| online_cpus.binary_search(c).is_ok());

            let meminfo_path = dir.join("meminfo");
            let meminfo = parse_node_meminfo(&read(&meminfo_path)?)
                .map_err(|e| Error::parsed(meminfo_path.clone(), e))?;
            let field = |k: &str| meminfo.get(k).copied().unwrap_or(0);
            let mem_total_bytes = meminfo
                .get("MemTotal")
                .copied()
                .ok_or_else(|| Error::parse(meminfo_path.clone(), "no MemTotal line".into()))?;

            let hugepages = read_pools(&dir.join("hugepages"))?;
            let dist_path = dir.join("distance");
            raw_distances.push(
                parse_distances(&read(&dist_path)?).map_err(|e| Error::parsed(dist_path, e))?,
            );

            nodes.push(NumaNode {
                id: NodeId(id),
                cpus,
                mem_total_bytes,
                mem_free_bytes: field("MemFree"),
                mem_reclaimable_bytes: field("Active(file)")
                    .saturating_add(field("Inactive(file)"))
                    .saturating_add(field("SReclaimable")),
                mem_deferred_bytes: zones.get(&id).map_or(0, |z| {
                    z.present_pages
                        .saturating_sub(z.managed_pages)
                        .saturating_sub(balloon_pages(&dir))
                        .saturating_mul(crate::units::base_page_size() as u64)
                }),
                hugepages,
            });
        }

        // A CPU belongs to one node; a tree that says otherwise (a bad copy of another host's
        // files) would make `node_of_cpu` answer with whichever node comes first.
        let mut owner: BTreeMap<u32, NodeId> = BTreeMap::new();
        for node in &nodes {
            for &c in &node.cpus {
                if let Some(first) = owner.insert(c, node.id) {
                    return Err(Error::parse(
                        node_dir.join(format!("node{}/cpulist", node.id)),
                        format!(
                            "cpu {c} is also in node {first}'s cpulist; a CPU belongs to one node"
                        ),
                    ));
                }
            }
        }

        // The kernel prints one distance per *possible* node in id order; keep the columns of
        // online nodes. Where the row is as long as the online list, it is already that.
        let possible = match fs::read_to_string(node_dir.join("possible")) {
            Ok(s) => parse_cpulist(&s).unwrap_or_else(|_| online_nodes.clone()),
            Err(_) => online_nodes.clone(),
        };
        let distances = raw_distances
            .into_iter()
            .enumerate()
            .map(|(i, row)| select_distance_columns(&row, &online_nodes, &possible, i))
            .collect::<std::result::Result<Vec<_>, String>>()
            .map_err(|e| Error::parse(node_dir.join("node*/distance"), e))?;

        let thp_path = root.join("kernel/mm/transparent_hugepage/enabled");
        let thp = match fs::read_to_string(&thp_path) {
            Ok(s) => parse_thp_mode(&s).map_err(|e| Error::parsed(thp_path, e))?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => ThpMode::Unsupported,
            Err(source) => {
                return Err(Error::Sysfs {
                    path: thp_path,
                    source,
                })
            }
        };

        Ok(Topology {
            nodes,
            distances,
            thp,
        })
    }

    /// The node with this id, if it is online.
    pub fn node(&self, id: NodeId) -> Option<&NumaNode> {
        self.nodes.iter().find(|n| n.id == id)
    }

    /// The ids of all online nodes.
    pub fn node_ids(&self) -> Vec<NodeId> {
        self.nodes.iter().map(|n| n.id).collect()
    }

    /// The node that owns a CPU, if any.
    pub fn node_of_cpu(&self, cpu: u32) -> Option<NodeId> {
        self.nodes
            .iter()
            .find(|n| n.cpus.binary_search(&cpu).is_ok())
            .map(|n| n.id)
    }

    /// Distance between two online nodes.
    pub fn distance(&self, from: NodeId, to: NodeId) -> Option<u32> {
        let i = self.nodes.iter().position(|n| n.id == from)?;
        let j = self.nodes.iter().position(|n| n.id == to)?;
        self.distances.get(i)?.get(j).copied()
    }

    /// Free pages of a hugetlb size summed over every node except those in `except`.
    pub fn free_hugepages_elsewhere(&self, page: PageSize, except: &[NodeId]) -> u64 {
        self.nodes
            .iter()
            .filter(|n| !except.contains(&n.id))
            .filter_map(|n| n.pool(page))
            .map(|p| p.free)
            .sum()
    }
}

fn select_distance_columns(
    row: &[u32],
    online: &[u32],
    possible: &[u32],
    i: usize,
) -> std::result::Result<Vec<u32>, String> {
    if row.len() == online.len() {
        return Ok(row.to_vec());
    }
    if row.len() == possible.len() {
        return online
            .iter()
            .map(|id| {
                possible
                    .iter()
                    .position(|p| p == id)
                    .map(|k| row[k])
                    .ok_or_else(|| format!("online node {id} is not in the possible list"))
            })
            .collect();
    }
    Err(format!(
        "distance row of node index {i} has {} entries, expected {} (online) or {} (possible)",
        row.len(),
        online.len(),
        possible.len()
    ))
}

/// Pages of a node a memory balloon holds for the hypervisor (`nr_balloon_pages` in the node's
/// `vmstat`; 0 where the kernel does not count them).
fn balloon_pages(node_dir: &Path) -> u64 {
    fs::read_to_string(node_dir.join("vmstat"))
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                let (k, v) = l.split_once(' ')?;
                (k == "nr_balloon_pages").then(|| v.trim().parse().ok())?
            })
        })
        .unwrap_or(0)
}

/// One host-wide hugetlb pool (`/sys/kernel/mm/hugepages/hugepages-SIZEkB`): the node pools
/// summed, plus what only the host-wide view has, the pages reserved by mappings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct HostPool {
    /// Page size in bytes.
    pub page_size_bytes: u64,
    /// Pages in the pool (`nr_hugepages`).
    pub total: u64,
    /// Pages not faulted in by anyone (`free_hugepages`), including reserved ones.
    pub free: u64,
    /// Free pages that mappings have reserved but not faulted in yet (`resv_hugepages`,
    /// `HugePages_Rsvd`): nobody else can have them. The kernel keeps this count per host only.
    pub reserved: u64,
    /// Surplus pages (`surplus_hugepages`).
    pub surplus: u64,
}

impl HostPool {
    /// Free pages no mapping has reserved: what a new mapping can get at most.
    pub fn unreserved(&self) -> u64 {
        self.free.saturating_sub(self.reserved)
    }
}

/// Reads the host-wide hugetlb pools under `root` (normally `/sys`), smallest page first;
/// none on a kernel without hugetlbfs.
///
/// # Errors
/// [`Error::Sysfs`] or [`Error::Parse`] naming the file.
pub fn read_host_pools(root: &Path) -> Result<Vec<HostPool>> {
    let dir = root.join("kernel/mm/hugepages");
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(Error::Sysfs { path: dir, source }),
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Sysfs {
            path: dir.clone(),
            source,
        })?;
        let Some(kib) = parse_hugepage_dir_name(&entry.file_name().to_string_lossy()) else {
            continue;
        };
        let p = entry.path();
        pools.push(HostPool {
            page_size_bytes: kib * 1024,
            total: read_u64(&p.join("nr_hugepages"))?,
            free: read_u64(&p.join("free_hugepages"))?,
            reserved: read_u64(&p.join("resv_hugepages"))?,
            surplus: read_u64(&p.join("surplus_hugepages"))?,
        });
    }
    pools.sort_by_key(|p| p.page_size_bytes);
    Ok(pools)
}

fn read(path: &Path) -> Result<String> {
    fs::read_to_string(path).map_err(|source| Error::Sysfs {
        path: path.to_path_buf(),
        source,
    })
}

fn read_u64(path: &Path) -> Result<u64> {
    let s = read(path)?;
    s.trim().parse().map_err(|_| {
        Error::parse(
            path.to_path_buf(),
            format!("{:?} is not a number", s.trim()),
        )
    })
}

fn read_pools(dir: &Path) -> Result<Vec<HugepagePool>> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        // A kernel without hugetlbfs has no such directory: no pools, not an error.
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(Error::Sysfs {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut pools = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| Error::Sysfs {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        let Some(kib) = parse_hugepage_dir_name(&name.to_string_lossy()) else {
            continue;
        };
        let p = entry.path();
        pools.push(HugepagePool {
            page_size_bytes: kib * 1024, // cannot overflow: checked by the parser
            total: read_u64(&p.join("nr_hugepages"))?,
            free: read_u64(&p.join("free_hugepages"))?,
            surplus: read_u64(&p.join("surplus_hugepages"))?,
        });
    }
    pools.sort_by_key(|p| p.page_size_bytes);
    Ok(pools)
}

/// Parses a hugepage pool directory name (`hugepages-2048kB`) into its page size in KiB.
///
/// Only the kernel's spelling is accepted (decimal digits, no sign or leading zero, a page size
/// whose byte count fits a `u64`), so two directories can never name the same pool.
pub fn parse_hugepage_dir_name(name: &str) -> Option<u64> {
    let digits = name.strip_prefix("hugepages-")?.strip_suffix("kB")?;
    if digits.starts_with('0') || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse()
        .ok()
        .filter(|&k: &u64| k > 0 && k.checked_mul(1024).is_some())
}

/// Parses a kernel cpulist / nodelist (`0-3,8,10-11`, empty for none) into sorted, unique ids.
///
/// # Errors
/// A [`ParseError`] naming the bad element. Ids above [`MAX_LIST_ID`] are refused.
pub fn parse_cpulist(s: &str) -> std::result::Result<Vec<u32>, ParseError> {
    let mut out = Vec::new();
    let s = s.trim();
    if s.is_empty() {
        return Ok(out);
    }
    for part in s.split(',') {
        let part = part.trim();
        let num = |x: &str| -> std::result::Result<u32, ParseError> {
            let x = x.trim();
            if !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit()) {
                return match x.parse::<u32>() {
                    Ok(v) if v <= MAX_LIST_ID => Ok(v),
                    _ => Err(ParseError::TooLarge {
                        what: "list id",
                        input: x.to_string(),
                        limit: MAX_LIST_ID.into(),
                    }),
                };
            }
            Err(ParseError::NotANumber {
                what: "list element",
                input: part.to_string(),
            })
        };
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b) = (num(a)?, num(b)?);
                if a > b {
                    return Err(ParseError::malformed("list range", part, "runs backwards"));
                }
                out.extend(a..=b);
            }
            None => out.push(num(part)?),
        }
        if out.len() > MAX_LIST_ID as usize + 1 {
            return Err(ParseError::TooLarge {
                what: "list",
                input: s.chars().take(64).collect(),
                limit: u64::from(MAX_LIST_ID) + 1,
            });
        }
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

/// Formats ids as a compact cpulist (`0-3,8`), the inverse of [`parse_cpulist`].
pub fn format_cpulist(ids: &[u32]) -> String {
    crate::units::format_id_list(ids)
}

/// Parses a per-node meminfo file (`Node 0 MemTotal:   24576000 kB` per line) into a map
/// from field name to bytes. Lines without a `kB` suffix (the `HugePages_*` counts) are kept
/// as plain numbers.
///
/// # Errors
/// A [`ParseError`] naming the first line that does not have the kernel's shape.
pub fn parse_node_meminfo(s: &str) -> std::result::Result<BTreeMap<String, u64>, ParseError> {
    let mut out = BTreeMap::new();
    for (no, line) in s.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let bad = || {
            ParseError::malformed(
                "node meminfo line",
                line,
                format!("line {} is not `Node N Field: value [kB]`", no + 1),
            )
        };
        let rest = line.trim().strip_prefix("Node").ok_or_else(bad)?;
        let rest = rest.trim_start();
        let (_node, rest) = rest.split_once(char::is_whitespace).ok_or_else(bad)?;
        let (key, value) = rest.split_once(':').ok_or_else(bad)?;
        let mut words = value.split_whitespace();
        let n: u64 = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
        let bytes = match words.next() {
            Some("kB") => n.checked_mul(1024).ok_or_else(bad)?,
            None => n,
            Some(_) => return Err(bad()),
        };
        if words.next().is_some() {
            return Err(bad());
        }
        out.insert(key.trim().to_string(), bytes);
    }
    Ok(out)
}

/// Page counts of one node, summed over its zones, from `/proc/zoneinfo`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ZonePages {
    /// Physical pages present.
    pub present_pages: u64,
    /// Pages managed by the page allocator.
    pub managed_pages: u64,
}

/// Parses `/proc/zoneinfo` into per-node sums of present and managed pages.
///
/// # Errors
/// A [`ParseError`] naming a malformed `present`/`managed` line or zone header.
pub fn parse_zoneinfo(s: &str) -> std::result::Result<BTreeMap<u32, ZonePages>, ParseError> {
    let mut out: BTreeMap<u32, ZonePages> = BTreeMap::new();
    let mut node = None;
    for line in s.lines() {
        if let Some(rest) = line.strip_prefix("Node ") {
            let id = rest
                .split(',')
                .next()
                .and_then(|n| n.trim().parse::<u32>().ok())
                .filter(|&n| n <= MAX_LIST_ID)
                .ok_or_else(|| ParseError::malformed("zone header", line, "has no node id"))?;
            node = Some(id);
            continue;
        }
        let mut words = line.split_whitespace();
        let (Some(key @ ("present" | "managed")), Some(v), None) =
            (words.next(), words.next(), words.next())
        else {
            continue;
        };
        let v: u64 = v.parse().map_err(|_| ParseError::NotANumber {
            what: "zoneinfo page count",
            input: v.to_string(),
        })?;
        let n = node.ok_or_else(|| {
            ParseError::malformed("zoneinfo line", line, "comes before any zone header")
        })?;
        let z = out.entry(n).or_default();
        if key == "present" {
            z.present_pages = z.present_pages.saturating_add(v);
        } else {
            z.managed_pages = z.managed_pages.saturating_add(v);
        }
    }
    Ok(out)
}

/// Parses a node's `distance` file (`10 21 21`).
///
/// # Errors
/// A [`ParseError`] naming the first entry that is not a number.
pub fn parse_distances(s: &str) -> std::result::Result<Vec<u32>, ParseError> {
    let v = s
        .split_whitespace()
        .map(|w| {
            w.parse().map_err(|_| ParseError::NotANumber {
                what: "distance",
                input: w.to_string(),
            })
        })
        .collect::<std::result::Result<Vec<u32>, _>>()?;
    if v.len() > MAX_LIST_ID as usize {
        return Err(ParseError::TooLarge {
            what: "distance row length",
            input: v.len().to_string(),
            limit: MAX_LIST_ID.into(),
        });
    }
    Ok(v)
}

/// Parses `/sys/kernel/mm/transparent_hugepage/enabled` (`always [madvise] never`).
///
/// # Errors
/// A [`ParseError`] when no mode is bracketed or it is unknown.
pub fn parse_thp_mode(s: &str) -> std::result::Result<ThpMode, ParseError> {
    let sel = s
        .split_whitespace()
        .find_map(|w| w.strip_prefix('[').and_then(|w| w.strip_suffix(']')))
        .ok_or_else(|| ParseError::malformed("THP mode file", s.trim(), "no [selected] mode"))?;
    match sel {
        "always" => Ok(ThpMode::Always),
        "madvise" => Ok(ThpMode::Madvise),
        "never" => Ok(ThpMode::Never),
        other => Err(ParseError::Unknown {
            what: "THP mode",
            input: other.to_string(),
            expected: "always, madvise or never",
        }),
    }
}

/// The sysfs file holding a node's pool size for a hugetlb page size: write a page count to it
/// to resize the pool.
pub fn nr_hugepages_path(node: NodeId, page: PageSize) -> PathBuf {
    let kib = page.bytes().unwrap_or(0) / 1024;
    PathBuf::from(format!(
        "/sys/devices/system/node/node{node}/hugepages/hugepages-{kib}kB/nr_hugepages"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpulists() {
        assert_eq!(
            parse_cpulist("0-3,8,10-11\n").unwrap(),
            vec![0, 1, 2, 3, 8, 10, 11]
        );
        assert_eq!(parse_cpulist("\n").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_cpulist("5").unwrap(), vec![5]);
        assert_eq!(parse_cpulist("3,1,1").unwrap(), vec![1, 3]);
        assert!(parse_cpulist("3-1").is_err());
        assert!(parse_cpulist("a").is_err());
        assert!(parse_cpulist("0-4294967295").is_err());
        assert!(parse_cpulist("1,,2").is_err());
        assert_eq!(format_cpulist(&[0, 1, 2, 3, 8, 10, 11]), "0-3,8,10-11");
        assert_eq!(format_cpulist(&[]), "");
    }

    #[test]
    fn meminfo() {
        let m = parse_node_meminfo(
            "Node 0 MemTotal:       24576000 kB\nNode 0 MemFree:        100 kB\nNode 0 HugePages_Total:     3\n",
        )
        .unwrap();
        assert_eq!(m["MemTotal"], 24_576_000 * 1024);
        assert_eq!(m["MemFree"], 102_400);
        assert_eq!(m["HugePages_Total"], 3);
        assert!(parse_node_meminfo("Node 0 MemTotal 5 kB").is_err());
        assert!(parse_node_meminfo("Node 0 MemTotal: x kB").is_err());
        assert!(parse_node_meminfo("Node 0 MemTotal: 5 MB").is_err());
        assert!(parse_node_meminfo("Node 0 MemTotal: 18446744073709551615 kB").is_err());
    }

    #[test]
    fn zoneinfo() {
        let z = parse_zoneinfo(
            "Node 0, zone      DMA\n  pages free     3840\n        present  3998\n        managed  3840\nNode 0, zone   Normal\n        present  100\n        managed  50\nNode 1, zone Normal\n present 7\n managed 7\n",
        )
        .unwrap();
        assert_eq!(
            z[&0],
            ZonePages {
                present_pages: 4098,
                managed_pages: 3890
            }
        );
        assert_eq!(z[&1].present_pages, 7);
        assert!(parse_zoneinfo("        present  3998\n").is_err());
        assert!(parse_zoneinfo("Node x, zone DMA\n").is_err());
    }

    /// A one-node tree as a VM guest shows it: 24.5 GiB present, 16 GiB managed (`MemTotal`)
    /// after a balloon took 8 GiB back for the hypervisor. `present - managed` alone would
    /// count the ballooned memory as available.
    #[test]
    fn ballooned_memory_is_not_available() {
        const G: u64 = 1 << 30;
        let root =
            std::env::temp_dir().join(format!("numapin-topo-balloon-{}", std::process::id()));
        let _ = fs::remove_dir_all(&root);
        let page = crate::units::base_page_size() as u64;
        let files = [
            ("sys/devices/system/node/online", "0\n".to_string()),
            ("sys/devices/system/cpu/online", "0-1\n".to_string()),
            ("sys/devices/system/node/node0/cpulist", "0-1\n".to_string()),
            ("sys/devices/system/node/node0/distance", "10\n".to_string()),
            (
                "sys/devices/system/node/node0/meminfo",
                format!(
                    "Node 0 MemTotal: {} kB\nNode 0 MemFree: {} kB\nNode 0 Active(file): {} kB\n",
                    16 * G / 1024,
                    10 * G / 1024,
                    2 * G / 1024
                ),
            ),
            (
                "sys/devices/system/node/node0/vmstat",
                format!("nr_free_pages 1\nnr_balloon_pages {}\n", 8 * G / page),
            ),
            (
                "proc/zoneinfo",
                format!(
                    "Node 0, zone Normal\n present {}\n managed {}\n",
                    (24 * G + G / 2) / page,
                    16 * G / page
                ),
            ),
        ];
        for (p, v) in &files {
            let f = root.join(p);
            fs::create_dir_all(f.parent().unwrap()).unwrap();
            fs::write(f, v).unwrap();
        }
        let t = Topology::from_roots(&root.join("sys"), &root.join("proc")).unwrap();
        let n = &t.nodes[0];
        // 8.5 GiB present but not managed: 8 GiB ballooned out, 0.5 GiB not yet initialised.
        assert_eq!(n.mem_deferred_bytes, G / 2);
        assert_eq!(n.mem_available_bytes(), 10 * G + 2 * G + G / 2);
        // Without the balloon count (an older kernel), all of it is taken as deferred.
        fs::write(
            root.join("sys/devices/system/node/node0/vmstat"),
            "nr_free_pages 1\n",
        )
        .unwrap();
        let t = Topology::from_roots(&root.join("sys"), &root.join("proc")).unwrap();
        assert_eq!(t.nodes[0].mem_deferred_bytes, 8 * G + G / 2);
        fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn distances_and_thp() {
        assert_eq!(parse_distances("10 21\n").unwrap(), vec![10, 21]);
        assert!(parse_distances("10 x").is_err());
        assert_eq!(
            parse_thp_mode("always [madvise] never\n").unwrap(),
            ThpMode::Madvise
        );
        assert!(parse_thp_mode("always madvise never").is_err());
        assert_eq!(parse_hugepage_dir_name("hugepages-2048kB"), Some(2048));
        assert_eq!(parse_hugepage_dir_name("hugepages-kB"), None);
        assert_eq!(
            select_distance_columns(&[10, 20, 30], &[0, 2], &[0, 1, 2], 0).unwrap(),
            vec![10, 30]
        );
    }

    #[test]
    fn this_host() {
        // The real kernel's sysfs, whatever shape it has: every online CPU belongs to at most one
        // node, and the distance matrix is square with 10 on the diagonal.
        let t = Topology::from_sysfs().expect("this host's sysfs parses");
        assert!(!t.nodes.is_empty());
        let n = t.nodes.len();
        assert_eq!(t.distances.len(), n);
        for (i, row) in t.distances.iter().enumerate() {
            assert_eq!(row.len(), n);
            assert_eq!(row[i], 10);
        }
        let mut seen = std::collections::HashSet::new();
        for node in &t.nodes {
            for c in &node.cpus {
                assert!(seen.insert(*c), "cpu {c} in two nodes");
            }
        }
    }
}
