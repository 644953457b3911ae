//! Warm-pool targets from the planner's N+k hold-back (`numapin plan --holdback --json`): the
//! memory that must stay free on this host for failover is kept warm, so the VMs restarted
//! here after a failure get it in milliseconds.

use super::PoolTarget;
use crate::plan::holdback::NodeHoldback;
use crate::snapshot::HostIdentity;
use crate::units::{format_bytes, PageSize};

/// The pools that keep this host's hold-back warm: per (node, class) of `host` in the plan's
/// `holdback.nodes`, `holdback_bytes / chunk` files of `chunk` bytes (the chunk raised to the
/// class's page size if smaller; the remainder below one chunk is left cold). `plan` is the
/// JSON of `numapin plan --holdback --json`. A host matches on `host_id` and `host` (only
/// `host` when the plan or this host has no machine id).
///
/// # Errors
/// A message if the JSON has no `holdback.nodes` (plan run without `--holdback`), an entry is
/// malformed, `chunk` is zero, or the plan has no entry for this host (with the hosts it has).
pub fn pools_from_holdback(
    plan: &serde_json::Value,
    host: &HostIdentity,
    chunk: u64,
) -> Result<Vec<PoolTarget>, String> {
    if chunk == 0 {
        return Err("the hold-back chunk must be positive".into());
    }
    let nodes = plan
        .get("holdback")
        .and_then(|h| h.get("nodes"))
        .ok_or("no \"holdback\".\"nodes\" in the plan: run `numapin plan ... --holdback --json`")?;
    let nodes: Vec<NodeHoldback> =
        serde_json::from_value(nodes.clone()).map_err(|e| format!("bad hold-back entry: {e}"))?;
    let mine = |n: &NodeHoldback| {
        n.host == host.host
            && (n.host_id.is_empty() || host.host_id.is_empty() || n.host_id == host.host_id)
    };
    if !nodes.iter().any(mine) {
        let mut hosts: Vec<&str> = nodes.iter().map(|n| n.host.as_str()).collect();
        hosts.dedup();
        return Err(format!(
            "the plan has no hold-back for host {:?} (id {:?}); it has: {hosts:?} (set NUMAPIN_HOSTNAME / NUMAPIN_HOST_ID as when the snapshot was taken)",
            host.host, host.host_id
        ));
    }
    let mut pools = Vec::new();
    for n in nodes.iter().filter(|n| mine(n)) {
        let page_size = match n.page_size_bytes {
            4096 => PageSize::Base4K,
            0x20_0000 => PageSize::Huge2M,
            0x4000_0000 => PageSize::Huge1G,
            other => return Err(format!("unknown page-size class {other} in the plan")),
        };
        let c = chunk.max(n.page_size_bytes) / n.page_size_bytes * n.page_size_bytes;
        let count = n.holdback_bytes / c;
        if count > 0 {
            pools.push(PoolTarget {
                node: n.node,
                page_size,
                chunk: c,
                count: u32::try_from(count).map_err(|_| {
                    format!(
                        "hold-back of {} is too many chunks",
                        format_bytes(n.holdback_bytes)
                    )
                })?,
            });
        }
    }
    Ok(pools)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::NodeId;

    fn entry(host: &str, node: u32, class: u64, holdback: u64) -> NodeHoldback {
        NodeHoldback {
            host: host.into(),
            host_id: format!("id-{host}"),
            node: NodeId(node),
            page_size_bytes: class,
            free_bytes: holdback * 2,
            holdback_bytes: holdback,
            available_bytes: holdback,
        }
    }

    #[test]
    fn this_hosts_hold_back_becomes_warm_pools() {
        let plan = serde_json::json!({ "holdback": { "k": 1, "nodes": [
            entry("a", 0, 2 << 20, 5 << 29),   // 2.5 GiB of 2M on node 0: 5 x 512 MiB
            entry("a", 1, 1 << 30, 3 << 30),   // 3 GiB of 1G on node 1: 3 x 1 GiB
            entry("a", 1, 4096, 100 << 20),    // less than a chunk: cold
            entry("b", 0, 2 << 20, 8 << 30),   // another host
        ], "hosts": [] } });
        let me = HostIdentity {
            host: "a".into(),
            host_id: "id-a".into(),
        };
        let p = pools_from_holdback(&plan, &me, 512 << 20).unwrap();
        assert_eq!(
            p,
            vec![
                PoolTarget {
                    node: NodeId(0),
                    page_size: PageSize::Huge2M,
                    chunk: 512 << 20,
                    count: 5
                },
                PoolTarget {
                    node: NodeId(1),
                    page_size: PageSize::Huge1G,
                    chunk: 1 << 30,
                    count: 3
                },
            ]
        );
        let other = HostIdentity {
            host: "c".into(),
            host_id: String::new(),
        };
        let e = pools_from_holdback(&plan, &other, 512 << 20).unwrap_err();
        assert!(e.contains("\"a\"") && e.contains("\"b\""), "{e}");
        let e = pools_from_holdback(&serde_json::json!({"hosts": []}), &me, 1).unwrap_err();
        assert!(e.contains("--holdback"), "{e}");
    }
}
