//! OpenStack Placement: inventories per NUMA node with the failover hold-back as `reserved`.
//!
//! One resource provider per (host, NUMA node), named `HOST_NUMA_N`, whose inventories follow
//! Placement's `PUT /resource_providers/{uuid}/inventories` body: the 4K class as the standard
//! `MEMORY_MB`, the hugetlb classes as custom resource classes `CUSTOM_MEMORY_PAGE_2M` and
//! `CUSTOM_MEMORY_PAGE_1G`, all in MiB. `total` is the limit (what numapin's admission allows:
//! the host's reserve is already outside it), `reserved` the hold-back, rounded up to MiB;
//! `step_size` and `min_unit` are one page. Placement counts its own allocations against
//! `total - reserved`, so what it will still place on the node is exactly the published
//! availability of [`holdback`](crate::plan::holdback) (when its allocations match the
//! ledger).

#[cfg(feature = "serde")]
use crate::plan::holdback::Holdback;
#[cfg(feature = "serde")]
use crate::plan::Fleet;

/// The Placement resource class of a page-size class.
pub fn resource_class(page_size_bytes: u64) -> String {
    match page_size_bytes {
        4096 => "MEMORY_MB".to_string(),
        p => format!("CUSTOM_MEMORY_PAGE_{}", crate::units::class_name(p)),
    }
}

/// The inventories of every (host, node) of `fleet` with `holdback` subtracted, as one JSON
/// object `{"resource_providers": [{"name", "host", "node", "inventories": {...}}]}`.
#[cfg(feature = "serde")]
pub fn inventories(fleet: &Fleet, holdback: &Holdback) -> serde_json::Value {
    use serde_json::json;
    const MIB: u64 = 1 << 20;
    let mut rps = Vec::new();
    for node in fleet.nodes() {
        let host = &fleet.hosts()[node.host].name;
        let mut inv = serde_json::Map::new();
        for (c, &page) in fleet.classes().iter().enumerate() {
            if node.limit[c] == 0 {
                continue;
            }
            let e = holdback.node(host, node.id, page);
            let hold = e.map_or(0, |e| e.holdback_bytes);
            let total = node.limit[c] / MIB;
            let reserved = hold.div_ceil(MIB).min(total);
            let step = (page / MIB).max(1);
            inv.insert(
                resource_class(page),
                json!({
                    "total": total,
                    "reserved": reserved,
                    "min_unit": step,
                    "max_unit": total.max(step),
                    "step_size": step,
                    "allocation_ratio": 1.0,
                }),
            );
        }
        rps.push(json!({
            "name": format!("{host}_NUMA_{}", node.id.0),
            "host": host,
            "node": node.id.0,
            "inventories": inv,
        }));
    }
    json!({ "resource_providers": rps })
}
