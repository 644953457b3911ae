//! A structure-aware sysfs + procfs tree for `Topology::from_roots`. Every file is
//! [`File::Good`] (what the kernel writes, consistent with the rest of the tree), raw bytes, or
//! absent; arbitrary's first variant is what an exhausted input decodes to, so short inputs
//! give well-formed multi-node trees and the fuzzer spends its time on the interesting
//! mixtures.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use numapin::topology::parse_cpulist;
use numapin::{ThpMode, Topology};

/// One file of the tree.
#[derive(Arbitrary, Debug)]
pub enum File<T> {
    /// What the kernel writes, built from `T`.
    Good(T),
    /// Raw bytes.
    Raw(Vec<u8>),
    /// No such file.
    Missing,
}

/// A list of ids (reduced modulo the kind's limit), written comma-separated in this order.
pub type Ids = Vec<u8>;

/// A meminfo field name.
#[derive(Arbitrary, Debug)]
pub enum Field {
    /// `MemTotal`.
    MemTotal,
    /// `MemFree`.
    MemFree,
    /// `Active(file)`.
    ActiveFile,
    /// `SReclaimable`.
    SReclaimable,
    /// `HugePages_Total` (no kB).
    HugePagesTotal,
    /// Any other name.
    Other(String),
}

/// A node's `meminfo`: `MemTotal`, `MemFree`, `Inactive(file)`, then more lines.
#[derive(Arbitrary, Debug)]
pub struct Meminfo {
    /// `MemTotal` in kB.
    pub total: u64,
    /// `MemFree` in kB.
    pub free: u64,
    /// `Inactive(file)` in kB.
    pub inactive_file: u64,
    /// More lines: name, value, whether `kB` follows.
    pub extra: Vec<(Field, u64, bool)>,
}

/// A pool directory's name.
#[derive(Arbitrary, Debug)]
pub enum PoolName {
    /// `hugepages-2048kB`.
    Huge2M,
    /// `hugepages-1048576kB`.
    Huge1G,
    /// `hugepages-{n}kB`.
    Kib(u64),
    /// Anything (sanitised to one path component).
    Raw(String),
}

/// One `hugepages/hugepages-*` directory.
#[derive(Arbitrary, Debug)]
pub struct Pool {
    /// Directory name.
    pub name: PoolName,
    /// `nr_hugepages`.
    pub nr: File<u64>,
    /// `free_hugepages`.
    pub free: File<u64>,
    /// `surplus_hugepages`.
    pub surplus: File<u64>,
}

/// One `nodeN` directory.
#[derive(Arbitrary, Debug)]
pub struct Node {
    /// N (modulo 8).
    pub id: u8,
    /// `cpulist` (ids modulo 64).
    pub cpulist: File<Ids>,
    /// `meminfo`.
    pub meminfo: File<Meminfo>,
    /// `distance`: `None` for 10 to itself and 20 to every online node, or given numbers.
    pub distance: File<Option<Vec<u8>>>,
    /// `hugepages/` (absent when `Missing`; raw bytes make it a file).
    pub pools: File<Vec<Pool>>,
}

/// One `/proc/zoneinfo` zone: (node, present pages, managed pages).
pub type Zone = (u8, u64, u64);

/// The whole tree.
#[derive(Arbitrary, Debug)]
pub struct Tree {
    /// Node directories.
    pub nodes: Vec<Node>,
    /// `devices/system/node/online`: `None` lists the node directories.
    pub online: File<Option<Ids>>,
    /// `devices/system/node/possible`: `None` is the online list plus node 7.
    pub possible: File<Option<Ids>>,
    /// `devices/system/cpu/online`: `None` is the union of the cpulists.
    pub cpus_online: File<Option<Ids>>,
    /// `kernel/mm/transparent_hugepage/enabled`: the bracketed mode's index.
    pub thp: File<u8>,
    /// `/proc/zoneinfo`.
    pub zoneinfo: File<Vec<Zone>>,
}

const NODE_MOD: u8 = 8;
const CPU_MOD: u8 = 64;

fn scratch() -> PathBuf {
    let base = std::env::var_os("NUMAPIN_FUZZ_TMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"));
    base.join(format!("numapin-fuzz-tree-{}", std::process::id()))
}

fn put(path: &Path, bytes: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn first_per_id(nodes: &[Node]) -> impl Iterator<Item = &Node> {
    let mut seen = BTreeSet::new();
    nodes.iter().filter(move |n| seen.insert(n.id % NODE_MOD))
}

fn write_file<T>(path: &Path, f: &File<T>, good: impl FnOnce(&T) -> String) {
    match f {
        File::Good(t) => put(path, good(t).as_bytes()),
        File::Raw(r) => put(path, r),
        File::Missing => {}
    }
}

fn list(ids: impl IntoIterator<Item = u8>, modulus: u8) -> String {
    let v: Vec<String> = ids.into_iter().map(|i| (i % modulus).to_string()).collect();
    format!("{}\n", v.join(","))
}

impl Tree {
    /// Writes the tree under a per-process scratch directory (on tmpfs: `/dev/shm`, or
    /// `$NUMAPIN_FUZZ_TMP`), replacing the previous one; returns (sys root, proc root).
    pub fn write(&self) -> (PathBuf, PathBuf) {
        let root = scratch();
        let _ = fs::remove_dir_all(&root);
        let (sys, proc) = (root.join("sys"), root.join("proc"));
        let nd = sys.join("devices/system/node");
        fs::create_dir_all(&nd).unwrap();
        fs::create_dir_all(&proc).unwrap();

        let dirs: BTreeSet<u8> = self.nodes.iter().map(|n| n.id % NODE_MOD).collect();
        let online: BTreeSet<u8> = match &self.online {
            File::Good(Some(ids)) => ids.iter().map(|i| i % NODE_MOD).collect(),
            _ => dirs.clone(),
        };
        write_file(&nd.join("online"), &self.online, |o| match o {
            Some(ids) => list(ids.iter().copied(), NODE_MOD),
            None => list(dirs.iter().copied(), NODE_MOD),
        });
        write_file(&nd.join("possible"), &self.possible, |p| match p {
            Some(ids) => list(ids.iter().copied(), NODE_MOD),
            None => list(online.iter().copied().chain([NODE_MOD - 1]), NODE_MOD),
        });
        let all_cpus: Vec<u8> = first_per_id(&self.nodes)
            .flat_map(|n| match &n.cpulist {
                File::Good(c) => c.clone(),
                _ => Vec::new(),
            })
            .collect();
        write_file(
            &sys.join("devices/system/cpu/online"),
            &self.cpus_online,
            |c| match c {
                Some(ids) => list(ids.iter().copied(), CPU_MOD),
                None => list(all_cpus.iter().copied(), CPU_MOD),
            },
        );

        // One directory per id: the first entry wins.
        for n in first_per_id(&self.nodes) {
            let id = n.id % NODE_MOD;
            let dir = nd.join(format!("node{id}"));
            fs::create_dir_all(&dir).unwrap();
            write_file(&dir.join("cpulist"), &n.cpulist, |c| {
                list(c.iter().copied(), CPU_MOD)
            });
            write_file(&dir.join("meminfo"), &n.meminfo, |m| {
                let mut s = format!(
                    "Node {id} MemTotal:  {} kB\nNode {id} MemFree:  {} kB\nNode {id} Inactive(file):  {} kB\n",
                    m.total, m.free, m.inactive_file
                );
                for (field, v, kb) in &m.extra {
                    let name = match field {
                        Field::MemTotal => "MemTotal",
                        Field::MemFree => "MemFree",
                        Field::ActiveFile => "Active(file)",
                        Field::SReclaimable => "SReclaimable",
                        Field::HugePagesTotal => "HugePages_Total",
                        Field::Other(o) => o,
                    };
                    let unit = if *kb { " kB" } else { "" };
                    s.push_str(&format!("Node {id} {name}:  {v}{unit}\n"));
                }
                s
            });
            write_file(&dir.join("distance"), &n.distance, |d| {
                let row: Vec<String> = match d {
                    Some(d) => d.iter().map(u8::to_string).collect(),
                    None => online
                        .iter()
                        .map(|&j| if j == id { "10" } else { "20" }.to_string())
                        .collect(),
                };
                format!("{}\n", row.join(" "))
            });
            match &n.pools {
                File::Good(pools) => {
                    let hp = dir.join("hugepages");
                    fs::create_dir_all(&hp).unwrap();
                    for p in pools {
                        let name = match &p.name {
                            PoolName::Huge2M => "hugepages-2048kB".to_string(),
                            PoolName::Huge1G => "hugepages-1048576kB".to_string(),
                            PoolName::Kib(k) => format!("hugepages-{k}kB"),
                            PoolName::Raw(r) => r.replace(['/', '\0'], "_"),
                        };
                        if name.is_empty() || name == "." || name == ".." || name.len() > 200 {
                            continue;
                        }
                        let pd = hp.join(name);
                        if fs::create_dir_all(&pd).is_err() {
                            continue; // a file of that name exists already
                        }
                        for (file, v) in [
                            ("nr_hugepages", &p.nr),
                            ("free_hugepages", &p.free),
                            ("surplus_hugepages", &p.surplus),
                        ] {
                            write_file(&pd.join(file), v, |v| format!("{v}\n"));
                        }
                    }
                }
                File::Raw(r) => put(&dir.join("hugepages"), r),
                File::Missing => {}
            }
        }
        write_file(
            &sys.join("kernel/mm/transparent_hugepage/enabled"),
            &self.thp,
            |sel| {
                let t: Vec<String> = ["always", "madvise", "never"]
                    .iter()
                    .enumerate()
                    .map(|(i, m)| {
                        if i == usize::from(*sel % 3) {
                            format!("[{m}]")
                        } else {
                            m.to_string()
                        }
                    })
                    .collect();
                format!("{}\n", t.join(" "))
            },
        );
        write_file(&proc.join("zoneinfo"), &self.zoneinfo, |zones| {
            let mut s = String::new();
            for (n, present, managed) in zones {
                s.push_str(&format!(
                    "Node {}, zone   Normal\n  pages free     1\n        present  {present}\n        managed  {managed}\n",
                    n % NODE_MOD
                ));
            }
            s
        });
        (sys, proc)
    }
}

fn read_list(path: &Path) -> Vec<u32> {
    parse_cpulist(&fs::read_to_string(path).unwrap()).unwrap()
}

/// The invariants of a topology that `from_roots` accepted, checked against the files it read.
pub fn check_topology(t: &Topology, tree: &Tree, sys: &Path) {
    let n = t.nodes.len();
    let ids: Vec<u32> = t.nodes.iter().map(|n| n.id.0).collect();
    assert_eq!(
        ids,
        read_list(&sys.join("devices/system/node/online")),
        "node ids"
    );
    assert_eq!(t.distances.len(), n, "distance rows");
    assert!(
        t.distances.iter().all(|r| r.len() == n),
        "distance matrix not square"
    );
    let online_cpus = read_list(&sys.join("devices/system/cpu/online"));
    let mut seen = BTreeSet::new();
    for node in &t.nodes {
        assert!(
            node.cpus.windows(2).all(|w| w[0] < w[1]),
            "cpus not ascending"
        );
        for &c in &node.cpus {
            assert!(
                online_cpus.contains(&c),
                "offline cpu {c} in node {}",
                node.id
            );
            assert!(seen.insert(c), "cpu {c} in two nodes: {t:?}");
            assert_eq!(t.node_of_cpu(c), Some(node.id));
        }
        assert!(
            node.hugepages
                .windows(2)
                .all(|w| w[0].page_size_bytes < w[1].page_size_bytes),
            "node {}: pools not strictly ascending: {:?}",
            node.id,
            node.hugepages
        );
        for p in &node.hugepages {
            assert!(
                p.page_size_bytes > 0 && p.page_size_bytes % 1024 == 0,
                "{p:?}"
            );
            let _ = p.free_bytes();
        }
        let _ = node.mem_available_bytes();
        for page in numapin::PageSize::CONCRETE_LARGEST_FIRST {
            let _ = t.free_hugepages_elsewhere(page, &[node.id]);
        }
    }
    if matches!(tree.thp, File::Missing) {
        assert_eq!(t.thp, ThpMode::Unsupported);
    }
}
