//! Kubernetes: a host's snapshot as a NodeResourceTopology object (API group
//! `topology.node.k8s.io`, version `v1alpha2`), what the topology-aware scheduler plugins
//! (`NodeResourceTopologyMatch`) read.
//!
//! One zone per NUMA node (`node-N`, type `Node`), with `costs` to every node from the kernel's
//! distance matrix, and three resources, all in bytes:
//!
//! | resource | numapin class | capacity | allocatable | available |
//! | --- | --- | --- | --- | --- |
//! | `memory` | 4K (base pages and THP) | capacity | limit - hold-back | available - hold-back |
//! | `hugepages-2Mi` | 2M | capacity | limit - hold-back | available - hold-back |
//! | `hugepages-1Gi` | 1G | capacity | limit - hold-back | available - hold-back |
//!
//! The hold-back comes from `numapin plan --holdback` (see
//! [`holdback`](crate::plan::holdback)); without it, allocatable is the limit and available
//! what admission still allows. Validated against the CRD's published OpenAPI schema in
//! `tests/nrt_schema.rs`.

#[cfg(feature = "serde")]
use crate::plan::holdback::NodeHoldback;
#[cfg(feature = "serde")]
use crate::snapshot::Snapshot;
#[cfg(feature = "serde")]
use crate::topology::Topology;

/// The Kubernetes resource name of a page-size class (`None` for classes Kubernetes has no
/// name for).
pub fn resource_name(page_size_bytes: u64) -> Option<&'static str> {
    match page_size_bytes {
        4096 => Some("memory"),
        0x20_0000 => Some("hugepages-2Mi"),
        0x4000_0000 => Some("hugepages-1Gi"),
        _ => None,
    }
}

/// Topology manager settings the object advertises (the kubelet's, on that node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NrtOptions {
    /// `topologyManagerPolicy` attribute (`single-numa-node`, `restricted`, ...).
    pub policy: String,
    /// `topologyManagerScope` attribute (`pod` or `container`).
    pub scope: String,
}

impl Default for NrtOptions {
    fn default() -> Self {
        NrtOptions {
            policy: "single-numa-node".into(),
            scope: "pod".into(),
        }
    }
}

/// The NodeResourceTopology object of a host, named after its hostname. `topology` gives the
/// distances (without it, or for a node it lacks, `costs` is omitted); `holdback` this host's
/// hold-back entries.
#[cfg(feature = "serde")]
pub fn node_resource_topology(
    snap: &Snapshot,
    topology: Option<&Topology>,
    holdback: &[NodeHoldback],
    opts: &NrtOptions,
) -> serde_json::Value {
    use serde_json::json;
    let zones: Vec<serde_json::Value> = snap
        .nodes
        .iter()
        .map(|n| {
            let resources: Vec<serde_json::Value> = n
                .classes
                .iter()
                .filter_map(|c| {
                    let name = resource_name(c.page_size_bytes)?;
                    let hold = holdback
                        .iter()
                        .find(|e| e.node == n.id && e.page_size_bytes == c.page_size_bytes)
                        .map_or(0, |e| e.holdback_bytes);
                    Some(json!({
                        "name": name,
                        "capacity": c.capacity_bytes,
                        "allocatable": c.limit_bytes.saturating_sub(hold),
                        "available": c.available_bytes.saturating_sub(hold),
                    }))
                })
                .collect();
            let mut zone = json!({
                "name": format!("node-{}", n.id.0),
                "type": "Node",
                "resources": resources,
            });
            if let Some(t) = topology {
                let costs: Option<Vec<serde_json::Value>> = snap
                    .nodes
                    .iter()
                    .map(|m| {
                        t.distance(n.id, m.id)
                            .map(|d| json!({ "name": format!("node-{}", m.id.0), "value": d }))
                    })
                    .collect();
                if let Some(costs) = costs {
                    zone["costs"] = json!(costs);
                }
            }
            zone
        })
        .collect();
    json!({
        "apiVersion": "topology.node.k8s.io/v1alpha2",
        "kind": "NodeResourceTopology",
        "metadata": {
            "name": snap.host,
            "annotations": { "numapin.io/host-id": snap.host_id },
        },
        "attributes": [
            { "name": "topologyManagerPolicy", "value": opts.policy },
            { "name": "topologyManagerScope", "value": opts.scope },
        ],
        "zones": zones,
    })
}
