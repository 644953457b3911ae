//! Prometheus: a host's snapshot as metrics, and every host's snapshot rebuilt from them.
//!
//! [`exposition`] renders a [`Snapshot`] in the text exposition format (version 0.0.4) with
//! every field it carries, each series labelled with the host's identity (`host`, `host_id`;
//! see [`HostIdentity`](crate::snapshot::HostIdentity)):
//!
//! | metric | labels | snapshot field |
//! | --- | --- | --- |
//! | `numapin_host_info` (1) | `host`, `host_id` | the host |
//! | `numapin_class_{capacity,limit,reserved,available}_bytes` | `node`, `page_size_bytes` | [`ClassSnapshot`] |
//! | `numapin_vm_reserved_bytes` | `vm`, `pid`, `node`, `page_size_bytes` | [`VmReservation`] |
//! | `numapin_vm_guest_used_bytes`, `numapin_vm_guest_used_peak_bytes` | `vm`, `pid` | [`VmSnapshot`] |
//! | `numapin_vm_single_node` (0/1), `numapin_vm_populated_bytes` | `vm`, `pid` | when known |
//! | `numapin_vm_right_size_bytes` | `vm`, `pid` | derived: the right-size rule |
//! | `numapin_failover_holdback_bytes` | `node`, `page_size_bytes` | from `numapin plan --holdback` |
//!
//! [`snapshots_from_samples`] is the inverse: given the samples of an instant query (what
//! Prometheus' `/api/v1/query` returns for `{__name__=~"numapin_.+"}`), it groups them by
//! (`host_id`, `host`) and rebuilds each host's snapshot, in canonical order
//! ([`Snapshot::canonicalize`]). Labels Prometheus adds (`job`, `instance`) are ignored, so
//! one host scraped by two jobs is still one host.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::error::{Error, Result};
use crate::plan::holdback::NodeHoldback;
use crate::snapshot::{ClassSnapshot, NodeSnapshot, Snapshot, VmReservation, VmSnapshot};
use crate::units::NodeId;

type ClassMetric = (&'static str, &'static str, fn(&ClassSnapshot) -> u64);
type VmMetric = (&'static str, &'static str, fn(&VmSnapshot) -> Option<u64>);

const CLASS_METRICS: [ClassMetric; 4] = [
    (
        "capacity_bytes",
        "Bytes the kernel has for the class (hugetlb pool, or node memory outside the pools).",
        |c| c.capacity_bytes,
    ),
    (
        "limit_bytes",
        "Bytes admission allows to be reserved (capacity - host reserve - headroom).",
        |c| c.limit_bytes,
    ),
    ("reserved_bytes", "Bytes reserved by live VMs.", |c| {
        c.reserved_bytes
    }),
    (
        "available_bytes",
        "Bytes still admissible for new VMs (limit - reserved).",
        |c| c.available_bytes,
    ),
];

const VM_METRICS: [VmMetric; 5] = [
    (
        "guest_used_bytes",
        "Bytes the guest reports it uses (0 if unknown).",
        |v| Some(v.guest_used_bytes),
    ),
    (
        "guest_used_peak_bytes",
        "Peak of the guest-reported used bytes.",
        |v| Some(v.guest_used_peak_bytes),
    ),
    (
        "single_node",
        "1 when all the VM's memory must come from one NUMA node, 0 when it may span nodes.",
        |v| v.single_node.map(u64::from),
    ),
    (
        "populated_bytes",
        "Bytes of the VM's memory populated (faulted in), when the ledger knows it.",
        |v| v.populated_bytes,
    ),
    (
        "right_size_bytes",
        "Suggested VM size: guest peak plus 25%, in whole pages of its largest class (only for VMs whose guest reported).",
        |v| v.right_size_hint(),
    ),
];

/// Escapes a label value (backslash, double quote, newline).
fn label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for ch in v.chars() {
        match ch {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

/// Renders a snapshot in the Prometheus text exposition format (version 0.0.4), metric names
/// prefixed `numapin_`, every series labelled `host` and `host_id`. With `holdback` (this
/// host's entries of `numapin plan --holdback`), also `numapin_failover_holdback_bytes`.
pub fn exposition(s: &Snapshot, holdback: Option<&[NodeHoldback]>) -> String {
    let mut o = String::new();
    let host = format!(
        "host=\"{}\",host_id=\"{}\"",
        label(&s.host),
        label(&s.host_id)
    );
    let _ = writeln!(
        o,
        "# HELP numapin_host_info The host a numapin ledger belongs to (identity: host_id, the machine id, with host, the hostname)."
    );
    let _ = writeln!(o, "# TYPE numapin_host_info gauge");
    let _ = writeln!(o, "numapin_host_info{{{host}}} 1");
    for (name, help, get) in CLASS_METRICS {
        let _ = writeln!(o, "# HELP numapin_class_{name} {help}");
        let _ = writeln!(o, "# TYPE numapin_class_{name} gauge");
        for n in &s.nodes {
            for c in &n.classes {
                let _ = writeln!(
                    o,
                    "numapin_class_{name}{{{host},node=\"{}\",page_size_bytes=\"{}\"}} {}",
                    n.id.0,
                    c.page_size_bytes,
                    get(c)
                );
            }
        }
    }
    let _ = writeln!(
        o,
        "# HELP numapin_vm_reserved_bytes Bytes a VM has reserved, per node and page-size class."
    );
    let _ = writeln!(o, "# TYPE numapin_vm_reserved_bytes gauge");
    for v in &s.vms {
        for r in &v.reservations {
            let _ = writeln!(
                o,
                "numapin_vm_reserved_bytes{{{host},vm=\"{}\",pid=\"{}\",node=\"{}\",page_size_bytes=\"{}\"}} {}",
                label(&v.name),
                v.pid,
                r.node.0,
                r.page_size_bytes,
                r.bytes
            );
        }
    }
    for (name, help, get) in VM_METRICS {
        let _ = writeln!(o, "# HELP numapin_vm_{name} {help}");
        let _ = writeln!(o, "# TYPE numapin_vm_{name} gauge");
        for v in &s.vms {
            if let Some(x) = get(v) {
                let _ = writeln!(
                    o,
                    "numapin_vm_{name}{{{host},vm=\"{}\",pid=\"{}\"}} {x}",
                    label(&v.name),
                    v.pid
                );
            }
        }
    }
    if let Some(h) = holdback {
        let _ = writeln!(
            o,
            "# HELP numapin_failover_holdback_bytes Bytes of the class that must stay free on the node so that N+k failover stays guaranteed (numapin plan --holdback)."
        );
        let _ = writeln!(o, "# TYPE numapin_failover_holdback_bytes gauge");
        for e in h {
            let _ = writeln!(
                o,
                "numapin_failover_holdback_bytes{{{host},node=\"{}\",page_size_bytes=\"{}\"}} {}",
                e.node.0, e.page_size_bytes, e.holdback_bytes
            );
        }
    }
    o
}

/// One sample of an instant query: the metric name, its labels and its value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// `__name__`.
    pub name: String,
    /// The other labels.
    pub labels: BTreeMap<String, String>,
    /// The value as Prometheus printed it (`"1073741824"`).
    pub value: String,
}

/// Parses the JSON of a Prometheus `/api/v1/query` answer (result type `vector`) into samples.
///
/// # Errors
/// [`Error::PrometheusAnswer`] when the answer is not a successful vector result.
#[cfg(feature = "serde")]
pub fn samples_from_query_json(body: &[u8]) -> Result<Vec<Sample>> {
    use serde::Deserialize;
    #[derive(Deserialize)]
    struct Answer {
        status: String,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "resultType")]
        result_type: String,
        result: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        metric: BTreeMap<String, String>,
        value: (serde_json::Value, String),
    }
    let bad = |what: String| Error::PrometheusAnswer { what };
    let a: Answer = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the answer is not Prometheus API JSON: {e}")))?;
    if a.status != "success" {
        return Err(bad(format!(
            "status {:?}: {}",
            a.status,
            a.error.unwrap_or_default()
        )));
    }
    let data = a.data.ok_or_else(|| bad("no data in the answer".into()))?;
    if data.result_type != "vector" {
        return Err(bad(format!(
            "result type {:?}, expected \"vector\" (an instant query)",
            data.result_type
        )));
    }
    Ok(data
        .result
        .into_iter()
        .map(|mut i| Sample {
            name: i.metric.remove("__name__").unwrap_or_default(),
            labels: i.metric,
            value: i.value.1,
        })
        .collect())
}

/// The PromQL instant query that fetches every series [`snapshots_from_samples`] needs,
/// restricted by `selector` (`{job="numapin"}`, or `job="numapin"`; empty for none).
pub fn query(selector: &str) -> String {
    let inner = selector.trim();
    let inner = inner
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(inner)
        .trim();
    let mut q = String::from("{__name__=~\"numapin_(host_info|class_.+|vm_.+)\"");
    if !inner.is_empty() {
        q.push(',');
        q.push_str(inner);
    }
    q.push('}');
    q
}

fn value_u64(s: &Sample) -> Result<u64> {
    let v = s.value.trim();
    if let Ok(x) = v.parse::<u64>() {
        return Ok(x);
    }
    match v.parse::<f64>() {
        Ok(f) if f >= 0.0 && f.fract() == 0.0 && f < 18_446_744_073_709_551_616.0 => Ok(f as u64),
        _ => Err(Error::PrometheusAnswer {
            what: format!("{}{:?} has value {v:?}, not a byte count", s.name, s.labels),
        }),
    }
}

fn get<'a>(s: &'a Sample, key: &str) -> Result<&'a str> {
    s.labels
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| Error::PrometheusAnswer {
            what: format!("{}{:?} lacks the label {key:?}", s.name, s.labels),
        })
}

fn num<T: std::str::FromStr>(s: &Sample, key: &str) -> Result<T> {
    let v = get(s, key)?;
    v.parse().map_err(|_| Error::PrometheusAnswer {
        what: format!(
            "{}{:?}: label {key}={v:?} is not a number",
            s.name, s.labels
        ),
    })
}

/// Rebuilds every host's snapshot from instant-query samples (see the module docs), ordered
/// by (`host`, `host_id`); each comes with a label `prometheus:HOST` for error messages.
///
/// # Errors
/// [`Error::PrometheusAnswer`] when a `numapin_*` sample lacks a label or its value is not a
/// byte count.
pub fn snapshots_from_samples(samples: &[Sample]) -> Result<Vec<(String, Snapshot)>> {
    #[derive(Default)]
    struct Acc {
        classes: BTreeMap<(u32, u64), ClassSnapshot>,
        vms: BTreeMap<(String, u32), VmSnapshot>,
    }
    let mut hosts: BTreeMap<(String, String), Acc> = BTreeMap::new();
    for s in samples {
        let Some(metric) = s.name.strip_prefix("numapin_") else {
            continue;
        };
        let key = (get(s, "host")?.to_string(), get(s, "host_id")?.to_string());
        let acc = hosts.entry(key).or_default();
        if metric == "host_info" {
            continue;
        }
        if let Some(field) = metric.strip_prefix("class_") {
            let k = (num::<u32>(s, "node")?, num::<u64>(s, "page_size_bytes")?);
            let c = acc.classes.entry(k).or_insert_with(|| ClassSnapshot {
                page_size_bytes: k.1,
                ..ClassSnapshot::default()
            });
            let v = value_u64(s)?;
            match field {
                "capacity_bytes" => c.capacity_bytes = v,
                "limit_bytes" => c.limit_bytes = v,
                "reserved_bytes" => c.reserved_bytes = v,
                "available_bytes" => c.available_bytes = v,
                _ => {}
            }
        } else if let Some(field) = metric.strip_prefix("vm_") {
            let k = (get(s, "vm")?.to_string(), num::<u32>(s, "pid")?);
            let vm = acc.vms.entry(k.clone()).or_insert_with(|| VmSnapshot {
                name: k.0.clone(),
                pid: k.1,
                ..VmSnapshot::default()
            });
            let v = value_u64(s)?;
            match field {
                "reserved_bytes" => vm.reservations.push(VmReservation {
                    node: NodeId(num(s, "node")?),
                    page_size_bytes: num(s, "page_size_bytes")?,
                    bytes: v,
                }),
                "guest_used_bytes" => vm.guest_used_bytes = v,
                "guest_used_peak_bytes" => vm.guest_used_peak_bytes = v,
                "single_node" => vm.single_node = Some(v != 0),
                "populated_bytes" => vm.populated_bytes = Some(v),
                _ => {}
            }
        }
    }
    Ok(hosts
        .into_iter()
        .map(|((host, host_id), acc)| {
            let mut nodes: Vec<NodeSnapshot> = Vec::new();
            for ((node, _), c) in acc.classes {
                match nodes.last_mut() {
                    Some(n) if n.id.0 == node => n.classes.push(c),
                    _ => nodes.push(NodeSnapshot {
                        id: NodeId(node),
                        classes: vec![c],
                    }),
                }
            }
            let mut snap = Snapshot {
                host: host.clone(),
                host_id,
                nodes,
                vms: acc.vms.into_values().collect(),
            };
            snap.canonicalize();
            (format!("prometheus:{host}"), snap)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap() -> Snapshot {
        Snapshot {
            host: "h\"1".into(),
            host_id: "0123abcd".into(),
            nodes: vec![NodeSnapshot {
                id: NodeId(1),
                classes: vec![ClassSnapshot {
                    page_size_bytes: 2 << 20,
                    capacity_bytes: 100 << 20,
                    limit_bytes: 90 << 20,
                    reserved_bytes: 40 << 20,
                    available_bytes: 50 << 20,
                }],
            }],
            vms: vec![VmSnapshot {
                name: "a\"b".into(),
                pid: 7,
                reservations: vec![VmReservation {
                    node: NodeId(1),
                    page_size_bytes: 2 << 20,
                    bytes: 40 << 20,
                }],
                guest_used_bytes: 10 << 20,
                guest_used_peak_bytes: 20 << 20,
                single_node: Some(true),
                populated_bytes: Some(40 << 20),
            }],
        }
    }

    /// Parses our own exposition back into samples (the text format's grammar for what we
    /// write: `name{k="v",...} value`, with `\\`, `\"` and `\n` escapes).
    fn parse_exposition(text: &str) -> Vec<Sample> {
        let mut out = Vec::new();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (name, rest) = line.split_once('{').unwrap();
            let (labels, value) = rest.rsplit_once("} ").unwrap();
            let mut map = BTreeMap::new();
            let mut chars = labels.chars().peekable();
            while chars.peek().is_some() {
                let key: String = chars.by_ref().take_while(|&c| c != '=').collect();
                assert_eq!(chars.next(), Some('"'));
                let mut v = String::new();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => match chars.next().unwrap() {
                            'n' => v.push('\n'),
                            c => v.push(c),
                        },
                        '"' => break,
                        c => v.push(c),
                    }
                }
                map.insert(key, v);
                if chars.peek() == Some(&',') {
                    chars.next();
                }
            }
            out.push(Sample {
                name: name.to_string(),
                labels: map,
                value: value.to_string(),
            });
        }
        out
    }

    #[test]
    fn exposition_round_trips_to_the_snapshot() {
        let s = snap();
        let text = exposition(&s, None);
        assert!(
            text.contains("# TYPE numapin_class_available_bytes gauge"),
            "{text}"
        );
        assert!(text.contains("numapin_vm_reserved_bytes{host=\"h\\\"1\",host_id=\"0123abcd\",vm=\"a\\\"b\",pid=\"7\",node=\"1\",page_size_bytes=\"2097152\"} 41943040"), "{text}");
        // 20 MiB + 25% = 25 MiB, rounded up to whole 2 MiB pages: 26 MiB.
        assert!(text.contains(&format!("numapin_vm_right_size_bytes{{host=\"h\\\"1\",host_id=\"0123abcd\",vm=\"a\\\"b\",pid=\"7\"}} {}", 26u64 << 20)), "{text}");
        let back = snapshots_from_samples(&parse_exposition(&text)).unwrap();
        assert_eq!(back.len(), 1);
        assert_eq!(back[0].1, s);
    }

    #[test]
    fn hosts_are_told_apart_by_identity_and_bad_samples_are_refused() {
        let mut a = snap();
        let mut b = snap();
        a.host = "x".into();
        b.host = "x".into();
        b.host_id = "ffff".into();
        let mut samples = parse_exposition(&exposition(&a, None));
        samples.extend(parse_exposition(&exposition(&b, None)));
        let back = snapshots_from_samples(&samples).unwrap();
        assert_eq!(back.len(), 2);
        samples[3].value = "12.5".into();
        assert!(matches!(
            snapshots_from_samples(&samples),
            Err(Error::PrometheusAnswer { .. })
        ));
        samples[3].value = "1".into();
        samples[3].labels.remove("host_id");
        let e = snapshots_from_samples(&samples).unwrap_err().to_string();
        assert!(e.contains("host_id"), "{e}");
    }

    #[test]
    fn query_combines_the_selector() {
        assert_eq!(
            query("{job=\"numapin\"}"),
            "{__name__=~\"numapin_(host_info|class_.+|vm_.+)\",job=\"numapin\"}"
        );
        assert_eq!(
            query(""),
            "{__name__=~\"numapin_(host_info|class_.+|vm_.+)\"}"
        );
    }
}
