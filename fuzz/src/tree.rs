//! A structure-aware sysfs + procfs tree for `Topology::from_roots`: mostly what the kernel
//! writes (so the fuzzer gets deep), with raw bytes anywhere a file can hold junk.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use arbitrary::Arbitrary;
use numapin::topology::parse_cpulist;
use numapin::{ThpMode, Topology};

/// A node or CPU list file.
#[derive(Arbitrary, Debug)]
pub enum List {
    /// Ids (reduced modulo the kind's limit), comma-separated, in the given order.
    Ids(Vec<u8>),
    /// `a-b`.
    Range(u8, u8),
    /// Raw bytes.
    Raw(Vec<u8>),
}

impl List {
    fn text(&self, modulus: u8) -> Vec<u8> {
        match self {
            List::Ids(ids) => ids
                .iter()
                .map(|i| (i % modulus).to_string())
                .collect::<Vec<_>>()
                .join(",")
                .into_bytes(),
            List::Range(a, b) => format!("{}-{}\n", a % modulus, b % modulus).into_bytes(),
            List::Raw(r) => r.clone(),
        }
    }
}

/// A meminfo field name.
#[derive(Arbitrary, Debug)]
pub enum Field {
    /// `MemTotal`.
    MemTotal,
    /// `MemFree`.
    MemFree,
    /// `Active(file)`.
    ActiveFile,
    /// `Inactive(file)`.
    InactiveFile,
    /// `SReclaimable`.
    SReclaimable,
    /// `HugePages_Total` (no kB).
    HugePagesTotal,
    /// Any other name.
    Other(String),
}

/// A node's `meminfo`.
#[derive(Arbitrary, Debug)]
pub enum Meminfo {
    /// Lines `Node N Field: value [kB]`.
    Fields(Vec<(Field, u64, bool)>),
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// A number file (`nr_hugepages`, ...).
#[derive(Arbitrary, Debug)]
pub enum Num {
    /// A number and a newline.
    Value(u64),
    /// No such file.
    Missing,
    /// Raw bytes.
    Raw(Vec<u8>),
}

/// A pool directory's name.
#[derive(Arbitrary, Debug)]
pub enum PoolName {
    /// `hugepages-2048kB` (false) or `hugepages-1048576kB` (true).
    Known(bool),
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
    pub nr: Num,
    /// `free_hugepages`.
    pub free: Num,
    /// `surplus_hugepages`.
    pub surplus: Num,
}

/// One `nodeN` directory.
#[derive(Arbitrary, Debug)]
pub struct Node {
    /// N (modulo 8).
    pub id: u8,
    /// `cpulist`, absent if None.
    pub cpulist: Option<List>,
    /// `meminfo`, absent if None.
    pub meminfo: Option<Meminfo>,
    /// `distance`: numbers, or raw bytes.
    pub distance: Option<Result<Vec<u8>, Vec<u8>>>,
    /// `hugepages/`, absent if None.
    pub pools: Option<Vec<Pool>>,
}

/// One `/proc/zoneinfo` zone: (node, present pages, managed pages).
pub type Zone = (u8, u64, u64);

/// The whole tree.
#[derive(Arbitrary, Debug)]
pub struct Tree {
    /// `devices/system/node/online`.
    pub online: Option<List>,
    /// `devices/system/node/possible`.
    pub possible: Option<List>,
    /// `devices/system/cpu/online`.
    pub cpus_online: Option<List>,
    /// Node directories.
    pub nodes: Vec<Node>,
    /// `kernel/mm/transparent_hugepage/enabled`: the bracketed mode index, or raw bytes.
    pub thp: Option<Result<u8, Vec<u8>>>,
    /// `/proc/zoneinfo`: (node, present, managed) zones, or raw bytes.
    pub zoneinfo: Option<Result<Vec<Zone>, Vec<u8>>>,
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

fn num(path: &Path, n: &Num) {
    match n {
        Num::Value(v) => put(path, format!("{v}\n").as_bytes()),
        Num::Missing => {}
        Num::Raw(r) => put(path, r),
    }
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
        if let Some(l) = &self.online {
            put(&nd.join("online"), &l.text(NODE_MOD));
        }
        if let Some(l) = &self.possible {
            put(&nd.join("possible"), &l.text(NODE_MOD));
        }
        if let Some(l) = &self.cpus_online {
            put(&sys.join("devices/system/cpu/online"), &l.text(CPU_MOD));
        }
        for n in &self.nodes {
            let id = n.id % NODE_MOD;
            let dir = nd.join(format!("node{id}"));
            fs::create_dir_all(&dir).unwrap();
            if let Some(l) = &n.cpulist {
                put(&dir.join("cpulist"), &l.text(CPU_MOD));
            }
            match &n.meminfo {
                Some(Meminfo::Fields(f)) => {
                    let mut s = String::new();
                    for (field, v, kb) in f {
                        let name = match field {
                            Field::MemTotal => "MemTotal",
                            Field::MemFree => "MemFree",
                            Field::ActiveFile => "Active(file)",
                            Field::InactiveFile => "Inactive(file)",
                            Field::SReclaimable => "SReclaimable",
                            Field::HugePagesTotal => "HugePages_Total",
                            Field::Other(o) => o,
                        };
                        let unit = if *kb { " kB" } else { "" };
                        s.push_str(&format!("Node {id} {name}:  {v}{unit}\n"));
                    }
                    put(&dir.join("meminfo"), s.as_bytes());
                }
                Some(Meminfo::Raw(r)) => put(&dir.join("meminfo"), r),
                None => {}
            }
            match &n.distance {
                Some(Ok(d)) => {
                    let t: Vec<String> = d.iter().map(u8::to_string).collect();
                    put(
                        &dir.join("distance"),
                        format!("{}\n", t.join(" ")).as_bytes(),
                    );
                }
                Some(Err(r)) => put(&dir.join("distance"), r),
                None => {}
            }
            if let Some(pools) = &n.pools {
                let hp = dir.join("hugepages");
                fs::create_dir_all(&hp).unwrap();
                for p in pools {
                    let name = match &p.name {
                        PoolName::Known(false) => "hugepages-2048kB".to_string(),
                        PoolName::Known(true) => "hugepages-1048576kB".to_string(),
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
                    num(&pd.join("nr_hugepages"), &p.nr);
                    num(&pd.join("free_hugepages"), &p.free);
                    num(&pd.join("surplus_hugepages"), &p.surplus);
                }
            }
        }
        match &self.thp {
            Some(Ok(sel)) => {
                let modes = ["always", "madvise", "never"];
                let t: Vec<String> = modes
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
                put(
                    &sys.join("kernel/mm/transparent_hugepage/enabled"),
                    format!("{}\n", t.join(" ")).as_bytes(),
                );
            }
            Some(Err(r)) => put(&sys.join("kernel/mm/transparent_hugepage/enabled"), r),
            None => {}
        }
        match &self.zoneinfo {
            Some(Ok(zones)) => {
                let mut s = String::new();
                for (n, present, managed) in zones {
                    s.push_str(&format!(
                        "Node {}, zone   Normal\n  pages free     1\n        present  {present}\n        managed  {managed}\n",
                        n % NODE_MOD
                    ));
                }
                put(&proc.join("zoneinfo"), s.as_bytes());
            }
            Some(Err(r)) => put(&proc.join("zoneinfo"), r),
            None => {}
        }
        (sys, proc)
    }
}

/// The invariants of a topology that `from_roots` accepted, checked against the files.
pub fn check_topology(t: &Topology, tree: &Tree) {
    let n = t.nodes.len();
    assert!(
        t.nodes.windows(2).all(|w| w[0].id < w[1].id),
        "nodes not ascending"
    );
    if let Some(List::Ids(ids)) = &tree.online {
        let want: BTreeSet<u32> = ids.iter().map(|i| u32::from(i % NODE_MOD)).collect();
        let got: Vec<u32> = t.nodes.iter().map(|n| n.id.0).collect();
        assert_eq!(
            got,
            want.into_iter().collect::<Vec<_>>(),
            "node ids != online list"
        );
    }
    assert_eq!(t.distances.len(), n, "distance rows");
    assert!(
        t.distances.iter().all(|r| r.len() == n),
        "distance matrix not square"
    );
    let online_cpus = tree
        .cpus_online
        .as_ref()
        .map(|l| parse_cpulist(&String::from_utf8_lossy(&l.text(CPU_MOD))).unwrap())
        .unwrap();
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
            assert!(seen.insert(c), "cpu {c} in two nodes");
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
    if tree.thp.is_none() {
        assert_eq!(t.thp, ThpMode::Unsupported);
    }
}
