//! Every input the fuzz targets (`fuzz/`, see docs/fuzzing.md) found to break the library,
//! minimised, as a plain test: each names its target and what went wrong before the fix.

use std::fs;
use std::path::PathBuf;

use numapin::ledger::{ClassSpec, Ledger, LedgerConfig};
use numapin::smaps::parse_smaps;
use numapin::snapshot::{VmReservation, VmSnapshot};
use numapin::topology::parse_hugepage_dir_name;
use numapin::{parse_size, Error, NodeId, Topology};

/// node_files: `hugepages-+049kB` parsed as 49 KiB (Rust's integer parser takes a sign), and
/// `hugepages-02048kB` as 2 MiB: two directories could claim one pool size.
#[test]
fn hugepage_dir_name_only_the_kernels_spelling() {
    assert_eq!(parse_hugepage_dir_name("hugepages-2048kB"), Some(2048));
    assert_eq!(
        parse_hugepage_dir_name("hugepages-1048576kB"),
        Some(1 << 20)
    );
    for bad in [
        "hugepages-+049kB",
        "hugepages-02048kB",
        "hugepages- 2048kB",
        "hugepages-0kB",
        "hugepages--2048kB",
    ] {
        assert_eq!(parse_hugepage_dir_name(bad), None, "{bad:?}");
    }
}

/// node_files: a size whose byte count does not fit a u64 (2^54 KiB) was accepted and then
/// saturated to a page size of u64::MAX bytes.
#[test]
fn hugepage_dir_name_byte_count_fits() {
    assert_eq!(
        parse_hugepage_dir_name("hugepages-18014398509481984kB"),
        None
    );
    assert_eq!(
        parse_hugepage_dir_name("hugepages-18014398509481983kB"),
        Some((1 << 54) - 1)
    );
}

/// size: `.` (and `_.`, `._`) parsed as 0 bytes: a size with no digit at all.
#[test]
fn size_needs_a_digit() {
    for bad in [".", "._", "_.", ". KiB", ".G"] {
        assert!(parse_size(bad).is_err(), "{bad:?} parsed");
    }
    assert_eq!(parse_size(".5KiB"), Ok(512));
    assert_eq!(parse_size("1.KiB"), Ok(1024));
}

const HUGETLB_VMA: &str = "7f0000000000-7f0040000000 rw-p 00000000 00:00 0\n";

/// smaps: a field of more than 2^54 kB saturated to u64::MAX bytes instead of failing
/// (fuzz input: `KernelPageSize: 00000000004031136538624808576 kB`).
#[test]
fn smaps_field_overflow_is_an_error() {
    let text = format!("{HUGETLB_VMA}KernelPageSize:     00000000004031136538624808576 kB\n");
    assert!(parse_smaps(&text, 0x7f00_0000_1000).is_err());
    let text = format!("{HUGETLB_VMA}Rss: 18014398509481984 kB\n");
    assert!(parse_smaps(&text, 0x7f00_0000_1000).is_err());
    let text = format!("{HUGETLB_VMA}Rss: 18014398509481983 kB\n");
    let v = parse_smaps(&text, 0x7f00_0000_1000).unwrap().unwrap();
    assert_eq!(v.rss, ((1u64 << 54) - 1) * 1024);
}

/// smaps: `Private_Hugetlb + Shared_Hugetlb` were added with `+=`, an overflow panic in debug
/// builds (and a wrong sum in release ones).
#[test]
fn smaps_hugetlb_sum_overflow_is_an_error() {
    let text = format!(
        "{HUGETLB_VMA}Private_Hugetlb: 18014398509481983 kB\nShared_Hugetlb: 18014398509481983 kB\n"
    );
    assert!(parse_smaps(&text, 0x7f00_0000_1000).is_err());
}

/// smaps: `5kBkB`, `kB`-less and signed values were accepted (`trim_end_matches` strips every
/// trailing `kB`, `u64::from_str` takes a `+`).
#[test]
fn smaps_fields_are_n_kb() {
    for bad in ["5kBkB", "5", "+5 kB", "kB", " kB", "5 kB kB", "5 mB"] {
        let text = format!("{HUGETLB_VMA}Rss: {bad}\n");
        assert!(
            parse_smaps(&text, 0x7f00_0000_1000).is_err(),
            "Rss: {bad:?} parsed"
        );
    }
    let text = format!("{HUGETLB_VMA}Rss:   5 kB\nLocked:5kB\n");
    let v = parse_smaps(&text, 0x7f00_0000_1000).unwrap().unwrap();
    assert_eq!((v.rss, v.locked), (5120, 5120));
}

/// snapshot_json: `VmSnapshot::reserved_bytes` summed with `Iterator::sum`, an overflow panic
/// on a snapshot from another host that carries huge charges.
#[test]
fn snapshot_reserved_bytes_saturates() {
    let r = |bytes| VmReservation {
        node: NodeId(0),
        page_size_bytes: 4096,
        bytes,
    };
    let vm = VmSnapshot {
        name: "vm".into(),
        pid: 1,
        reservations: vec![r(u64::MAX - 1), r(2)],
        ..VmSnapshot::default()
    };
    assert_eq!(vm.reserved_bytes(), u64::MAX);
}

/// A scratch sysfs/procfs tree, removed on drop (also when the test fails).
struct Scratch(PathBuf);

impl Scratch {
    fn new(test: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("numapin-fuzzreg-{}-{test}", std::process::id()));
        let _ = fs::remove_dir_all(&p);
        fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
    fn put(&self, rel: &str, text: &str) {
        let p = self.0.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, text).unwrap();
    }
    fn sys(&self) -> PathBuf {
        self.0.join("sys")
    }
    fn proc(&self) -> PathBuf {
        self.0.join("proc")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A one-node tree as the kernel writes it, which tests then spoil.
fn one_node(s: &Scratch) {
    s.put("sys/devices/system/node/online", "0\n");
    s.put("sys/devices/system/cpu/online", "0-1\n");
    s.put("sys/devices/system/node/node0/cpulist", "0-1\n");
    s.put(
        "sys/devices/system/node/node0/meminfo",
        "Node 0 MemTotal: 1024 kB\nNode 0 MemFree: 512 kB\n",
    );
    s.put("sys/devices/system/node/node0/distance", "10\n");
    let pool = "sys/devices/system/node/node0/hugepages/hugepages-2048kB";
    s.put(&format!("{pool}/nr_hugepages"), "4\n");
    s.put(&format!("{pool}/free_hugepages"), "3\n");
    s.put(&format!("{pool}/surplus_hugepages"), "0\n");
    fs::create_dir_all(s.proc()).unwrap();
}

fn read(s: &Scratch) -> numapin::Result<Topology> {
    Topology::from_roots(&s.sys(), &s.proc())
}

#[test]
fn one_node_tree_reads() {
    let s = Scratch::new("one_node_tree_reads");
    one_node(&s);
    let t = read(&s).unwrap();
    assert_eq!(t.nodes.len(), 1);
    assert_eq!(t.nodes[0].hugepages.len(), 1);
    assert_eq!(t.nodes[0].hugepages[0].free, 3);
}

/// sysfs_tree: a second directory spelling the same size (`hugepages-02048kB`) gave the node
/// two 2 MiB pools; `NumaNode::pool` then answered with whichever came first.
#[test]
fn tree_duplicate_pool_spelling_is_ignored() {
    let s = Scratch::new("tree_duplicate_pool_spelling_is_ignored");
    one_node(&s);
    let pool = "sys/devices/system/node/node0/hugepages/hugepages-02048kB";
    s.put(&format!("{pool}/nr_hugepages"), "400\n");
    s.put(&format!("{pool}/free_hugepages"), "400\n");
    s.put(&format!("{pool}/surplus_hugepages"), "0\n");
    let t = read(&s).unwrap();
    assert_eq!(t.nodes[0].hugepages.len(), 1);
    assert_eq!(t.nodes[0].hugepages[0].free, 3);
}

/// sysfs_tree: two nodes' cpulists naming the same CPU were accepted, and `node_of_cpu` then
/// answered with whichever node came first.
#[test]
fn tree_cpu_in_two_nodes_is_an_error() {
    let s = Scratch::new("tree_cpu_in_two_nodes_is_an_error");
    one_node(&s);
    s.put("sys/devices/system/node/online", "0,5\n");
    s.put("sys/devices/system/node/node0/distance", "10 20\n");
    s.put("sys/devices/system/node/node5/cpulist", "1\n");
    s.put(
        "sys/devices/system/node/node5/meminfo",
        "Node 5 MemTotal: 4 kB\n",
    );
    s.put("sys/devices/system/node/node5/distance", "20 10\n");
    let err = read(&s).unwrap_err().to_string();
    assert!(err.contains("cpu 1 is also in node 0"), "{err}");
    s.put("sys/devices/system/node/node5/cpulist", "\n");
    let t = read(&s).unwrap();
    assert_eq!(t.node_of_cpu(1), Some(NodeId(0)));
}

/// ledger_file: a free record whose intent sequence number was `u64::MAX - 1` gave its next
/// holder `seq = u64::MAX`, and the first charge or release overflowed `seq += 1` (a panic in
/// debug builds, a wrap to the "no intent" value 0 in release ones). Now refused as corruption.
#[test]
fn ledger_sequence_number_near_overflow_is_invalid() {
    let s = Scratch::new("ledger_sequence_number_near_overflow_is_invalid");
    let path = s.0.join("ledger");
    let cfg = LedgerConfig {
        slots: 2,
        ..LedgerConfig::default()
    };
    let classes = [ClassSpec::new(NodeId(0), 2 << 20, 1 << 30)];
    drop(Ledger::create(&path, &classes, &cfg).unwrap());
    let mut image = fs::read(&path).unwrap();
    // One class: header (128) + descriptor (64) + two counter lines (128), then slot 0; its intent
    // sequence number is the slot's second word.
    let intent_seq = 128 + 64 + 128 + 8;
    for (seq, ok) in [(u64::MAX - 1, false), ((1 << 63) - 1, false), (41, true)] {
        image[intent_seq..intent_seq + 8].copy_from_slice(&seq.to_le_bytes());
        let l = std::sync::Arc::new(Ledger::from_image(&image).unwrap());
        match l.vm("vm") {
            Ok(mut vm) => {
                assert!(ok, "seq {seq} accepted");
                vm.try_charge(NodeId(0), 2 << 20, 2 << 20).unwrap();
                vm.release(NodeId(0), 2 << 20, 2 << 20).unwrap();
            }
            Err(e) => {
                assert!(!ok, "seq {seq}: {e}");
                assert!(matches!(e, Error::LedgerInvalid { .. }), "{e:?}");
            }
        }
    }
}
