//! `numapin status --format nrt` against the NodeResourceTopology CRD's published OpenAPI
//! schema (tests/data/nrt/crd.yaml, see the README there for where it came from).
//!
//! Kubernetes prunes fields a structural schema does not declare, silently; so the schema is
//! also applied strictly (`additionalProperties: false` on every object that lists its
//! properties), which makes a misspelt or invented field a test failure instead of a field the
//! scheduler never sees.
#![cfg(feature = "cli")]

mod common;

use std::process::Command;

use numapin::fleet::nrt::{node_resource_topology, NrtOptions};
use numapin::plan::holdback::NodeHoldback;
use numapin::snapshot::{ClassSnapshot, NodeSnapshot, Snapshot};
use numapin::{NodeId, Topology};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_numapin");

/// The v1alpha2 `openAPIV3Schema`, made strict.
fn schema() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/data/nrt/crd.yaml"
    ))
    .unwrap();
    let crd: Value = serde_saphyr::from_str(&text).unwrap();
    let v = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1alpha2")
        .expect("the CRD has v1alpha2");
    let mut s = v["schema"]["openAPIV3Schema"].clone();
    strict(&mut s);
    s
}

fn strict(v: &mut Value) {
    match v {
        Value::Object(m) => {
            if m.contains_key("properties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (_, x) in m.iter_mut() {
                strict(x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(strict),
        _ => {}
    }
}

fn errors(schema: &Value, obj: &Value) -> Vec<String> {
    let v = jsonschema::draft4::new(schema).expect("the CRD schema compiles");
    v.iter_errors(obj)
        .map(|e| format!("{} at {}", e, e.instance_path))
        .collect()
}

fn two_nodes() -> (Snapshot, Topology) {
    let class = |page: u64, cap: u64, limit: u64, reserved: u64| ClassSnapshot {
        page_size_bytes: page,
        capacity_bytes: cap,
        limit_bytes: limit,
        reserved_bytes: reserved,
        available_bytes: limit - reserved,
    };
    let g = 1u64 << 30;
    let node = |id: u32| NodeSnapshot {
        id: NodeId(id),
        classes: vec![
            class(4096, 64 * g, 60 * g, 8 * g),
            class(2 << 20, 16 * g, 16 * g, 4 * g),
            class(g, 8 * g, 8 * g, 0),
        ],
    };
    let snap = Snapshot {
        host: "worker-1".into(),
        host_id: "0123456789abcdef0123456789abcdef".into(),
        nodes: vec![node(0), node(1)],
        vms: vec![],
    };
    let topo: Topology = serde_json::from_value(json!({
        "nodes": [
            {"id": 0, "cpus": [0, 1], "mem_total_bytes": 0, "mem_free_bytes": 0, "mem_reclaimable_bytes": 0, "mem_deferred_bytes": 0, "hugepages": []},
            {"id": 1, "cpus": [2, 3], "mem_total_bytes": 0, "mem_free_bytes": 0, "mem_reclaimable_bytes": 0, "mem_deferred_bytes": 0, "hugepages": []}
        ],
        "distances": [[10, 21], [21, 10]],
        "thp": "madvise"
    }))
    .unwrap_or_else(|e| panic!("topology fixture: {e}"));
    (snap, topo)
}

#[test]
fn two_node_object_validates_and_carries_costs_and_holdback() {
    let schema = schema();
    let (snap, topo) = two_nodes();
    let hold = [NodeHoldback {
        host: snap.host.clone(),
        host_id: snap.host_id.clone(),
        node: NodeId(1),
        page_size_bytes: 2 << 20,
        free_bytes: 12 << 30,
        holdback_bytes: 5 << 30,
        available_bytes: 7 << 30,
    }];
    let obj = node_resource_topology(&snap, Some(&topo), &hold, &NrtOptions::default());
    let errs = errors(&schema, &obj);
    assert!(errs.is_empty(), "{errs:#?}\n{obj:#}");
    assert_eq!(obj["apiVersion"], "topology.node.k8s.io/v1alpha2");
    let zones = obj["zones"].as_array().unwrap();
    assert_eq!(zones.len(), 2);
    assert_eq!(
        zones[0]["costs"],
        json!([{"name": "node-0", "value": 10}, {"name": "node-1", "value": 21}])
    );
    let res = |z: usize, name: &str| {
        zones[z]["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    let g = 1u64 << 30;
    assert_eq!(
        res(0, "hugepages-2Mi"),
        json!({"name": "hugepages-2Mi", "capacity": 16 * g, "allocatable": 16 * g, "available": 12 * g})
    );
    // Node 1 holds back 5 GiB of 2M pages for N+k: subtracted from allocatable and available.
    assert_eq!(
        res(1, "hugepages-2Mi"),
        json!({"name": "hugepages-2Mi", "capacity": 16 * g, "allocatable": 11 * g, "available": 7 * g})
    );
    assert_eq!(res(1, "memory")["available"], 52 * g);
    assert_eq!(res(1, "hugepages-1Gi")["capacity"], 8 * g);

    // The schema does reject what it should: a resource without `available`, a zone without a
    // type, an invented field.
    let mut bad = obj.clone();
    bad["zones"][0]["resources"][0]
        .as_object_mut()
        .unwrap()
        .remove("available");
    assert!(!errors(&schema, &bad).is_empty());
    let mut bad = obj.clone();
    bad["zones"][1].as_object_mut().unwrap().remove("type");
    assert!(!errors(&schema, &bad).is_empty());
    let mut bad = obj.clone();
    bad["zones"][1]["numaNode"] = json!(1);
    assert!(!errors(&schema, &bad).is_empty());
    let mut bad = obj;
    bad["zones"][1]["resources"][0]["capacity"] = json!("lots");
    assert!(!errors(&schema, &bad).is_empty());
}

/// This host's ledger, with a hold-back planned for it, through the CLI.
#[test]
fn status_format_nrt_on_this_host_validates() {
    let schema = schema();
    let ledger = common::TempPath::new("nrt");
    let dir = std::env::temp_dir().join(format!("numapin-nrt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let status = |extra: &[&str], env: Option<(&str, &str)>| {
        let mut c = Command::new(BIN);
        c.arg("status").arg("--ledger").arg(&ledger.0).args(extra);
        if let Some((name, id)) = env {
            c.env("NUMAPIN_HOSTNAME", name).env("NUMAPIN_HOST_ID", id);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        o.stdout
    };
    // One VM owned by this test, a third of the first class: when one twin fails, its VM
    // moves to the other, so each must hold that much back.
    let l = std::sync::Arc::new(numapin::ledger::Ledger::open(&ledger.0).unwrap());
    let c0 = l.classes().unwrap()[0].clone();
    let vm_bytes = c0.limit_bytes / 3 / c0.page_size_bytes * c0.page_size_bytes;
    let _vm = l
        .try_charge("nrt-vm", c0.node, c0.page_size_bytes, vm_bytes)
        .unwrap();
    let me = Some(("nrt-host", "11111111111111111111111111111111"));
    let twin = Some(("nrt-twin", "22222222222222222222222222222222"));
    let a = dir.join("a.json");
    let b = dir.join("b.json");
    std::fs::write(&a, status(&["--json"], me)).unwrap();
    std::fs::write(&b, status(&["--json"], twin)).unwrap();
    let plan = Command::new(BIN)
        .arg("plan")
        .args([&a, &b])
        .args(["--holdback", "--json"])
        .output()
        .unwrap();
    assert_eq!(plan.status.code(), Some(0));
    let p = dir.join("plan.json");
    std::fs::write(&p, &plan.stdout).unwrap();
    let plan: Value = serde_json::from_slice(&plan.stdout).unwrap();

    let out = status(&["--format", "nrt", "--holdback", p.to_str().unwrap()], me);
    let obj: Value = serde_json::from_slice(&out).unwrap();
    let errs = errors(&schema, &obj);
    assert!(errs.is_empty(), "{errs:#?}\n{obj:#}");
    assert_eq!(obj["metadata"]["name"], "nrt-host");
    let snap: Value = serde_json::from_slice(&std::fs::read(&a).unwrap()).unwrap();
    let zones = obj["zones"].as_array().unwrap();
    assert_eq!(zones.len(), snap["nodes"].as_array().unwrap().len());
    // allocatable = limit - hold-back, per node and class, from the plan's own numbers.
    let mut held = 0;
    for (z, n) in zones.iter().zip(snap["nodes"].as_array().unwrap()) {
        for c in n["classes"].as_array().unwrap() {
            let page = c["page_size_bytes"].as_u64().unwrap();
            let name = numapin::fleet::nrt::resource_name(page).unwrap();
            let r = z["resources"]
                .as_array()
                .unwrap()
                .iter()
                .find(|r| r["name"] == name)
                .unwrap();
            let hold = plan["holdback"]["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| {
                    e["host"] == "nrt-host" && e["node"] == n["id"] && e["page_size_bytes"] == page
                })
                .map_or(0, |e| e["holdback_bytes"].as_u64().unwrap());
            held += hold;
            let limit = c["limit_bytes"].as_u64().unwrap();
            assert_eq!(r["allocatable"].as_u64().unwrap(), limit - hold, "{name}");
            assert_eq!(r["capacity"], c["capacity_bytes"], "{name}");
        }
    }
    assert!(held >= vm_bytes, "held back {held}, the VM has {vm_bytes}");
    // A hold-back file that does not know this host is refused, not silently ignored.
    let err = Command::new(BIN)
        .arg("status")
        .arg("--ledger")
        .arg(&ledger.0)
        .args(["--format", "nrt", "--holdback", p.to_str().unwrap()])
        .env("NUMAPIN_HOSTNAME", "stranger")
        .env("NUMAPIN_HOST_ID", "3")
        .output()
        .unwrap();
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("no entry for this host"));
    std::fs::remove_dir_all(&dir).unwrap();
}
