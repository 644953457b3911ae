//! Checking a placement (a witness) against the fleet, independently of how it was found.

use std::collections::HashSet;

use super::Move;
use crate::plan::{class_name, Fleet};

/// Checks that `witness` re-places exactly the VMs of the `failed` hosts on survivors within
/// every limit: each VM once, all its classes in full, on one host, on one node if it is
/// single-node, and no (node, class) given more than it has free.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn verify_witness(
    fleet: &Fleet,
    failed: &[usize],
    witness: &[Move],
) -> std::result::Result<(), String> {
    let displaced: Vec<usize> = (0..fleet.vms.len())
        .filter(|&v| failed.contains(&fleet.vms[v].host))
        .collect();
    verify_moves(fleet, failed, &displaced, witness)
}

/// [`verify_witness`] in time linear in the witness, given the displaced VMs.
pub(super) fn verify_moves(
    fleet: &Fleet,
    failed: &[usize],
    displaced: &[usize],
    witness: &[Move],
) -> std::result::Result<(), String> {
    let nc = fleet.classes.len();
    let mut seen = HashSet::new();
    let mut used = std::collections::HashMap::<(usize, usize), u64>::new();
    for m in witness {
        let vm = fleet.vms.get(m.vm).ok_or(format!("VM {} unknown", m.vm))?;
        if !failed.contains(&vm.host) {
            return Err(format!("VM {} was not on a failed host", vm.name));
        }
        if !seen.insert(m.vm) {
            return Err(format!("VM {} placed twice", vm.name));
        }
        let mut got = vec![0u64; nc];
        let mut hosts = HashSet::new();
        let mut nodes = HashSet::new();
        for p in &m.parts {
            let node = fleet
                .nodes
                .get(p.node)
                .ok_or(format!("node {} unknown", p.node))?;
            if failed.contains(&node.host) {
                return Err(format!("VM {} placed on failed host", vm.name));
            }
            if p.class >= nc {
                return Err(format!("class {} unknown", p.class));
            }
            if p.bytes == 0 {
                continue;
            }
            hosts.insert(node.host);
            nodes.insert(p.node);
            got[p.class] = got[p.class].saturating_add(p.bytes);
            let u = used.entry((p.node, p.class)).or_insert(0);
            *u = u.saturating_add(p.bytes);
        }
        if got != vm.demand {
            return Err(format!(
                "VM {} gets {got:?}, needs {:?}",
                vm.name, vm.demand
            ));
        }
        if hosts.len() > 1 || (vm.single_node && nodes.len() > 1) {
            return Err(format!("VM {} split over {} nodes", vm.name, nodes.len()));
        }
    }
    for &v in displaced {
        if !seen.contains(&v) {
            return Err(format!("VM {} not placed", fleet.vms[v].name));
        }
    }
    for ((n, c), u) in used {
        if u > fleet.free(n, c) {
            return Err(format!(
                "node {n} class {} gets {u}, has {} free",
                class_name(fleet.classes[c]),
                fleet.free(n, c)
            ));
        }
    }
    Ok(())
}
