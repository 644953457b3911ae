//! `numapin plan` on fixture snapshots shaped like `numapin status --json` output
//! (tests/data/plan/): verdicts, exit codes, JSON, witnesses, and errors naming file and field.
#![cfg(feature = "cli")]

use std::process::{Command, Output};

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/plan/");

fn plan(args: &[&str]) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.ends_with(".json") {
                format!("{DATA}{a}")
            } else {
                a.to_string()
            }
        })
        .collect();
    Command::new(env!("CARGO_BIN_EXE_numapin"))
        .arg("plan")
        .args(&args)
        .output()
        .expect("run numapin plan")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const RACK: [&str; 3] = ["rack-a.json", "rack-b.json", "rack-c.json"];

#[test]
fn guaranteed_fleet_exits_zero_with_a_row_per_scenario() {
    let o = plan(&RACK);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(t.contains("N+1 failover: 3 scenario(s)"), "{t}");
    for h in ["rack-a", "rack-b", "rack-c"] {
        assert!(
            t.lines()
                .any(|l| l.starts_with(h) && l.contains("guaranteed")),
            "{h}: {t}"
        );
    }
    assert!(t.contains("verdict: N+1 guaranteed (3 guaranteed"), "{t}");
}

#[test]
fn json_witness_places_every_displaced_vm_within_free_capacity() {
    let o = plan(&[RACK[0], RACK[1], RACK[2], "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let f = &v["failover"];
    assert_eq!(f["verdict"], "guaranteed");
    assert_eq!(f["total_scenarios"], 3);
    let s = &f["scenarios"][0];
    assert_eq!(s["failed"], serde_json::json!(["rack-a"]));
    let displaced = s["displaced"].as_array().unwrap();
    let moves = s["moves"].as_array().unwrap();
    assert_eq!(displaced.len(), 5);
    assert_eq!(moves.len(), 5);
    // db-1 is 16 GiB of 1G pages: it must land in a 1G class on another host.
    let db = moves.iter().find(|m| m["vm"] == "db-1").unwrap();
    for p in db["parts"].as_array().unwrap() {
        assert_eq!(p["page_size_bytes"], 1u64 << 30);
        assert_ne!(p["host"], "rack-a");
    }
}

#[test]
fn impossible_fleet_exits_three_with_a_proof() {
    let o = plan(&["tight-a.json", "tight-b.json"]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let t = stdout(&o);
    assert!(
        t.contains("VM big needs 24 GiB 2M and fits on no surviving node"),
        "{t}"
    );
    assert!(t.contains("verdict: N+1 impossible"), "{t}");
}

#[test]
fn exact_search_settles_and_a_tiny_budget_is_not_proven() {
    let trap = ["trap-a.json", "trap-b.json", "trap-c.json"];
    let o = plan(&trap);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("placed by exact search"));
    let mut args = trap.to_vec();
    args.extend(["--search-budget", "1"]);
    let o = plan(&args);
    assert_eq!(o.status.code(), Some(4), "{}", stdout(&o));
    assert!(stdout(&o).contains("not proven"));
}

#[test]
fn two_failures_fail_everything_on_two_hosts() {
    let o = plan(&["tight-a.json", "tight-b.json", "--failures", "2"]);
    assert_eq!(o.status.code(), Some(3));
    assert!(stdout(&o).contains("no host survives"), "{}", stdout(&o));
}

#[test]
fn bad_snapshots_name_file_and_field() {
    for (file, field, what) in [
        (
            "bad-reserved-over-limit.json",
            "nodes[0].classes[1].reserved_bytes",
            "exceeds limit",
        ),
        (
            "bad-charges-mismatch.json",
            "nodes[0].classes[1].reserved_bytes",
            "charges sum to 6 GiB",
        ),
        ("bad-duplicate-node.json", "nodes[1].id", "listed twice"),
        (
            "bad-unknown-class.json",
            "vms[1].reservations[0].page_size_bytes",
            "does not offer",
        ),
        ("bad-malformed.json", "line 18", "control character"),
        (
            "bad-missing-field.json",
            "line 12",
            "missing field `limit_bytes`",
        ),
    ] {
        let o = plan(&["rack-a.json", file]);
        assert_eq!(o.status.code(), Some(1), "{file}");
        let e = stderr(&o);
        assert!(e.contains(file), "{file}: {e}");
        assert!(e.contains(field), "{file}: {e}");
        assert!(e.contains(what), "{file}: {e}");
        assert!(stdout(&o).is_empty());
    }
    let o = plan(&["no-such-file.json"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("no-such-file.json"));
}

#[test]
fn headroom_rightsize_ha_and_placement_sections() {
    let o = plan(&[
        RACK[0],
        RACK[1],
        RACK[2],
        "--headroom",
        "2m",
        "--rightsize",
        "--ha",
        "--place",
        "16GiB:2m",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let h = &v["headroom"];
    let adm = h["admissible_bytes"].as_u64().unwrap();
    let ub = h["upper_bound_bytes"].as_u64().unwrap();
    assert!(adm > 0 && adm <= ub && adm % (2 << 20) == 0, "{h}");
    // web-3 peaks at 2 GiB of 8: suggested 2.5 GiB, 5.5 GiB freed.
    let r = &v["rightsize"]["candidates"];
    let web3 = r
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["vm"] == "web-3")
        .unwrap();
    assert_eq!(web3["freed_bytes"], 11u64 << 29);
    assert_eq!(v["ha"]["exact"], "guaranteed");
    let pols = v["placement"]["policies"].as_array().unwrap();
    assert_eq!(pols.len(), 4);
    for p in pols {
        assert!(p["target"].is_string(), "{p}");
    }
    // The text form has the same sections.
    let o = plan(&[RACK[0], RACK[1], RACK[2], "--headroom", "1g", "--ha"]);
    let t = stdout(&o);
    assert!(t.contains("headroom (1G pages, one node)"), "{t}");
    assert!(t.contains("slot policy"), "{t}");
}

/// `real-status-*.json` were printed by `numapin status --json` (the ledger's command) on the
/// development VM: host a with two VMs of base pages (one reporting guest use), host b with an
/// empty ledger. Both hosts are named `vm`.
#[test]
fn real_status_snapshots() {
    let o = plan(&[
        "real-status-a.json",
        "real-status-b.json",
        "--headroom",
        "4k",
        "--rightsize",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let s = &v["failover"]["scenarios"];
    assert_eq!(s[0]["failed"], serde_json::json!(["vm"]));
    assert_eq!(s[1]["failed"], serde_json::json!(["vm#1"]));
    for m in s[0]["moves"].as_array().unwrap() {
        assert_eq!(m["parts"][0]["host"], "vm#1");
    }
    // A VM on b must fit into a's free 4K class if b fails: a has 11.04 GiB available.
    let a: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{DATA}real-status-a.json")).unwrap(),
    )
    .unwrap();
    let a_free = a["nodes"][0]["classes"][0]["available_bytes"]
        .as_u64()
        .unwrap();
    let h = v["headroom"]["admissible_bytes"].as_u64().unwrap();
    assert!(h > 0 && h <= a_free, "{h} vs {a_free}");
    assert_eq!(v["rightsize"]["candidates"][0]["vm"], "web-1");
}

#[test]
fn bad_options_are_refused() {
    let o = plan(&["tight-a.json", "--headroom", "1g"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no host offers 1G pages"),
        "{}",
        stderr(&o)
    );
    let o = plan(&["tight-a.json", "--place", "8GiB:1g"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("no host offers 1G pages"),
        "{}",
        stderr(&o)
    );
    let o = plan(&["tight-a.json", "--rightsize", "2"]);
    assert_eq!(o.status.code(), Some(2));
    let o = plan(&["tight-a.json", "--place", "lots"]);
    assert_eq!(o.status.code(), Some(2));
}

/// A device is not a snapshot: the read stops at the size limit instead of filling memory.
#[test]
fn endless_input_is_refused_without_reading_it_all() {
    let o = plan(&["/dev/zero"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(e.contains("/dev/zero") && e.contains("larger than"), "{e}");
}

/// The same host twice would count its capacity twice: refused, naming the host and both
/// inputs.
#[test]
fn one_host_given_twice_is_refused() {
    let o = plan(&[RACK[0], RACK[1], RACK[0]]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let e = stderr(&o);
    assert!(e.contains("rack-a") && e.contains("already given"), "{e}");
    assert!(stdout(&o).is_empty());
    // Two snapshots with one host_id and hostname are one host even if their contents differ.
    let dir = std::env::temp_dir().join(format!("numapin-dup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{DATA}{}", RACK[1])).unwrap())
            .unwrap();
    v["host_id"] = "abc123".into();
    let a = dir.join("a.snap");
    std::fs::write(&a, v.to_string()).unwrap();
    v["vms"] = serde_json::json!([]);
    for n in v["nodes"].as_array_mut().unwrap() {
        for c in n["classes"].as_array_mut().unwrap() {
            c["reserved_bytes"] = 0.into();
            c["available_bytes"] = c["limit_bytes"].clone();
        }
    }
    let b = dir.join("b.snap");
    std::fs::write(&b, v.to_string()).unwrap();
    let o = plan(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("abc123"), "{}", stderr(&o));
    // Another id on the same name is another host.
    v["host_id"] = "def456".into();
    std::fs::write(&b, v.to_string()).unwrap();
    let o = plan(&[a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--format placement` and `--format prometheus` publish the hold-back: Placement's
/// `reserved` is the hold-back in MiB (rounded up), the metric carries it in bytes.
#[test]
fn placement_and_holdback_metric_carry_the_holdback() {
    let o = plan(&[RACK[0], RACK[1], RACK[2], "--holdback", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let hold = v["holdback"]["nodes"].as_array().unwrap().clone();
    assert!(
        hold.iter()
            .any(|e| e["holdback_bytes"].as_u64().unwrap() > 0),
        "some node must hold back for N+1: {hold:?}"
    );
    let o = plan(&[RACK[0], RACK[1], RACK[2], "--format", "placement"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let inv: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = plan(&[RACK[0], RACK[1], RACK[2], "--format", "prometheus"]);
    let metrics = stdout(&o);
    assert!(
        metrics.contains("# TYPE numapin_failover_holdback_bytes gauge"),
        "{metrics}"
    );
    for e in &hold {
        let page = e["page_size_bytes"].as_u64().unwrap();
        let class = match page {
            4096 => "MEMORY_MB".to_string(),
            2097152 => "CUSTOM_MEMORY_PAGE_2M".to_string(),
            _ => "CUSTOM_MEMORY_PAGE_1G".to_string(),
        };
        let rp = format!("{}_NUMA_{}", e["host"].as_str().unwrap(), e["node"]);
        let r = inv["resource_providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == rp.as_str())
            .unwrap_or_else(|| panic!("{rp} missing"));
        let bytes = e["holdback_bytes"].as_u64().unwrap();
        assert_eq!(
            r["inventories"][&class]["reserved"],
            bytes.div_ceil(1 << 20),
            "{rp} {class}"
        );
        assert!(
            metrics.contains(&format!(
                "node=\"{}\",page_size_bytes=\"{page}\"}} {bytes}",
                e["node"]
            )),
            "{rp} {page}: {metrics}"
        );
    }
}

/// A Prometheus that is not there is an error that says what to check, not a hang or an empty
/// fleet.
#[test]
fn unreachable_prometheus_is_an_error_with_the_fix() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let o = plan(&["--prometheus", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("is Prometheus running there"), "{e}");
    assert!(stdout(&o).is_empty());
}
