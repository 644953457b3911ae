//! The `numapin` command: JSON shapes, exit codes, and `--hold-secs` keeping the pages while
//! others look.
#![cfg(feature = "cli")]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{free_pages, need, pools_exclusive};

fn numapin(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_numapin"))
        .args(args)
        .output()
        .expect("run numapin")
}

fn json(out: &std::process::Output) -> serde_json::Value {
    assert!(
        out.status.success(),
        "numapin failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("stdout is one JSON object")
}

#[test]
fn topology_json_matches_sysfs() {
    let v = json(&numapin(&["topology", "--json"]));
    let nodes = v["nodes"].as_array().unwrap();
    let online = std::fs::read_to_string("/sys/devices/system/node/online").unwrap();
    let ids = numapin::topology::parse_cpulist(&online).unwrap();
    assert_eq!(nodes.len(), ids.len());
    for (n, id) in nodes.iter().zip(&ids) {
        assert_eq!(n["id"].as_u64(), Some(u64::from(*id)));
        assert!(n["cpus"].is_array());
        assert!(n["mem_total_bytes"].as_u64().unwrap() > 0);
        assert!(n["mem_free_bytes"].is_u64());
        for p in n["hugepages"].as_array().unwrap() {
            for k in ["page_size_bytes", "total", "free", "surplus"] {
                assert!(p[k].is_u64(), "{k} missing in {p}");
            }
            let kib = p["page_size_bytes"].as_u64().unwrap() / 1024;
            let dir = common::pool_dir(*id, kib);
            assert_eq!(
                p["total"].as_u64().unwrap(),
                common::read_u64(format!("{dir}/nr_hugepages"))
            );
        }
    }
    assert_eq!(v["distances"].as_array().unwrap().len(), ids.len());
}

#[test]
fn reserve_json_has_the_documented_fields() {
    let v = json(&numapin(&[
        "reserve",
        "--size",
        "8MiB",
        "--page-size",
        "4k",
        "--no-lock",
        "--json",
    ]));
    assert_eq!(v["size_bytes"], 8 << 20);
    assert_eq!(v["page_size_bytes"], 4096);
    let placement = v["placement"].as_object().unwrap();
    let sum: u64 = placement.values().map(|b| b.as_u64().unwrap()).sum();
    assert_eq!(sum, 8 << 20);
    for k in placement.keys() {
        k.parse::<u32>().expect("node ids as strings");
    }
    assert_eq!(v["locked"], false);
    assert!(v["populate_seconds"].as_f64().unwrap() >= 0.0);
    assert!(v["threads"].as_u64().unwrap() >= 1);
}

#[test]
fn sizes_accept_the_documented_spellings() {
    for s in ["8MiB", "8M", "8388608", "0.0078125GiB"] {
        let v = json(&numapin(&[
            "reserve",
            "--size",
            s,
            "--page-size",
            "4k",
            "--no-lock",
            "--json",
        ]));
        assert_eq!(v["size_bytes"], 8 << 20, "{s}");
    }
    let out = numapin(&["reserve", "--size", "8 parsecs"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown unit"));
}

#[test]
fn a_failed_reservation_exits_non_zero_with_the_reason() {
    let out = numapin(&["reserve", "--size", "2MiB", "--node", "4000"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("node 4000 does not exist"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn hold_prints_first_and_keeps_the_pages_meanwhile() {
    let _lock = pools_exclusive();
    let node = numapin::Topology::from_sysfs().unwrap().nodes[0].id.0;
    let before = free_pages(node, 2048);
    if !need(before >= 4, "node needs 4 free 2M hugepages") {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .args([
            "reserve",
            "--size",
            "8MiB",
            "--page-size",
            "2m",
            "--node",
            &node.to_string(),
            "--json",
            "--hold-secs",
            "3",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["page_size_bytes"], 2 << 20);
    // The report is out while the pages are still held.
    assert_eq!(free_pages(node, 2048), before - 4);
    assert!(child.wait().unwrap().success());
    assert_eq!(free_pages(node, 2048), before);
}

#[test]
fn default_run_demonstrates_and_releases() {
    // The demonstration takes up to 1 GiB of hugepages: keep pool-counting tests out.
    let _lock = pools_exclusive();
    // Checked from the kernel's side, not from what the demo prints: free hugepage bytes over
    // both pools, sampled while it runs, must drop (it reserved and populated) and come back
    // exactly (it released).
    let pool_free = || -> u64 {
        [(2048u64, 2u64 << 20), (1048576, 1 << 30)]
            .iter()
            .map(|&(kib, bytes)| {
                let p = format!("/sys/kernel/mm/hugepages/hugepages-{kib}kB/free_hugepages");
                std::fs::read_to_string(p)
                    .ok()
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .unwrap_or(0)
                    * bytes
            })
            .sum()
    };
    let before = pool_free();
    if !need(
        before >= 64 << 20,
        "needs free hugepages for the demonstration guest",
    ) {
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_numapin"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lowest = before;
    let status = loop {
        lowest = lowest.min(pool_free());
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        std::thread::sleep(std::time::Duration::from_micros(200));
    };
    let out = child.wait_with_output().unwrap();
    assert!(
        status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        lowest < before,
        "the demonstration took no hugepage (free stayed at {before} bytes)"
    );
    assert_eq!(pool_free(), before, "every hugepage went back");
}
