//! The ledger's numbers for operators: Prometheus text exposition and right-sizing hints.

use std::fmt::Write;

use crate::snapshot::{ClassSnapshot, Snapshot, VmSnapshot};

type ClassMetric = (&'static str, &'static str, fn(&ClassSnapshot) -> u64);
type VmMetric = (&'static str, &'static str, fn(&VmSnapshot) -> Option<u64>);

/// Default margin of the right-sizing hint over the peak the guest reported: 15%.
pub const DEFAULT_MARGIN_PPM: u64 = 150_000;

/// What a VM should be sized to from what its guest reported: the peak of guest-used bytes
/// plus `margin_ppm` millionths of it, rounded up to 2 MiB. `None` if the guest never reported
/// (peak 0).
pub fn right_size_hint(vm: &VmSnapshot, margin_ppm: u64) -> Option<u64> {
    let peak = vm.guest_used_peak_bytes.max(vm.guest_used_bytes);
    if peak == 0 {
        return None;
    }
    let with = u128::from(peak) * u128::from(1_000_000 + margin_ppm) / 1_000_000;
    let with = u64::try_from(with).unwrap_or(u64::MAX);
    Some(with.div_ceil(2 << 20).saturating_mul(2 << 20))
}

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
/// prefixed `numapin_`.
pub fn prometheus(s: &Snapshot) -> String {
    let mut o = String::new();
    let class_metrics: [ClassMetric; 4] = [
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
    for (name, help, get) in class_metrics {
        let _ = writeln!(o, "# HELP numapin_class_{name} {help}");
        let _ = writeln!(o, "# TYPE numapin_class_{name} gauge");
        for n in &s.nodes {
            for c in &n.classes {
                let _ = writeln!(
                    o,
                    "numapin_class_{name}{{node=\"{}\",page_size_bytes=\"{}\"}} {}",
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
                "numapin_vm_reserved_bytes{{vm=\"{}\",pid=\"{}\",node=\"{}\",page_size_bytes=\"{}\"}} {}",
                label(&v.name),
                v.pid,
                r.node.0,
                r.page_size_bytes,
                r.bytes
            );
        }
    }
    let vm_metrics: [VmMetric; 3] = [
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
            "right_size_bytes",
            "Suggested VM size: guest peak plus margin (only for VMs whose guest reported).",
            |v| right_size_hint(v, DEFAULT_MARGIN_PPM),
        ),
    ];
    for (name, help, get) in vm_metrics {
        let _ = writeln!(o, "# HELP numapin_vm_{name} {help}");
        let _ = writeln!(o, "# TYPE numapin_vm_{name} gauge");
        for v in &s.vms {
            if let Some(x) = get(v) {
                let _ = writeln!(
                    o,
                    "numapin_vm_{name}{{vm=\"{}\",pid=\"{}\"}} {x}",
                    label(&v.name),
                    v.pid
                );
            }
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{NodeSnapshot, VmReservation};
    use crate::units::NodeId;

    #[test]
    fn exposition_has_help_type_and_escaped_labels() {
        let s = Snapshot {
            host: "h".into(),
            nodes: vec![NodeSnapshot {
                id: NodeId(1),
                classes: vec![ClassSnapshot {
                    page_size_bytes: 2 << 20,
                    capacity_bytes: 100,
                    limit_bytes: 90,
                    reserved_bytes: 40,
                    available_bytes: 50,
                }],
            }],
            vms: vec![VmSnapshot {
                name: "a\"b".into(),
                pid: 7,
                reservations: vec![VmReservation {
                    node: NodeId(1),
                    page_size_bytes: 2 << 20,
                    bytes: 40,
                }],
                guest_used_bytes: 10 << 20,
                guest_used_peak_bytes: 20 << 20,
                ..VmSnapshot::default()
            }],
        };
        let p = prometheus(&s);
        assert!(
            p.contains("# TYPE numapin_class_available_bytes gauge"),
            "{p}"
        );
        assert!(
            p.contains("numapin_class_available_bytes{node=\"1\",page_size_bytes=\"2097152\"} 50"),
            "{p}"
        );
        assert!(p.contains("numapin_vm_reserved_bytes{vm=\"a\\\"b\",pid=\"7\",node=\"1\",page_size_bytes=\"2097152\"} 40"), "{p}");
        // 20 MiB + 15% = 23 MiB, rounded up to 24 MiB.
        assert!(
            p.contains(&format!(
                "numapin_vm_right_size_bytes{{vm=\"a\\\"b\",pid=\"7\"}} {}",
                24u64 << 20
            )),
            "{p}"
        );
        for l in p.lines().filter(|l| !l.starts_with('#')) {
            assert!(l.starts_with("numapin_"), "{l}");
        }
    }
}
