//! Checking a placement (a witness) against the fleet, independently of how it was found.

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
    // Each displaced VM exactly once: compare the sorted VM lists.
    let mut placed: Vec<usize> = witness.iter().map(|m| m.vm).collect();
    placed.sort_unstable();
    if let Some(w) = placed.windows(2).find(|w| w[0] == w[1]) {
        let name = fleet.vms.get(w[0]).map_or("?", |v| v.name.as_str());
        return Err(format!("VM {name} placed twice"));
    }
    let mut want: Vec<usize> = displaced.to_vec();
    want.sort_unstable();
    let mut used: Vec<(usize, usize, u64)> = Vec::new();
    let mut got = vec![0u64; nc];
    for m in witness {
        let vm = fleet.vms.get(m.vm).ok_or(format!("VM {} unknown", m.vm))?;
        if !failed.contains(&vm.host) {
            return Err(format!("VM {} was not on a failed host", vm.name));
        }
        got.iter_mut().for_each(|g| *g = 0);
        let (mut host, mut node, mut nodes) = (None, None, 0usize);
        for p in &m.parts {
            let n = fleet
                .nodes
                .get(p.node)
                .ok_or(format!("node {} unknown", p.node))?;
            if failed.contains(&n.host) {
                return Err(format!("VM {} placed on failed host", vm.name));
            }
            if p.class >= nc {
                return Err(format!("class {} unknown", p.class));
            }
            if p.bytes == 0 {
                continue;
            }
            if host.is_some_and(|h| h != n.host) {
                return Err(format!("VM {} split over hosts", vm.name));
            }
            host = Some(n.host);
            if node != Some(p.node) {
                nodes += 1;
                node = Some(p.node);
            }
            got[p.class] = got[p.class].saturating_add(p.bytes);
            used.push((p.node, p.class, p.bytes));
        }
        if got != vm.demand {
            return Err(format!(
                "VM {} gets {got:?}, needs {:?}",
                vm.name, vm.demand
            ));
        }
        // Parts of one node may be listed apart; count distinct nodes only when it matters.
        if vm.single_node && nodes > 1 {
            let mut ns: Vec<usize> = m
                .parts
                .iter()
                .filter(|p| p.bytes > 0)
                .map(|p| p.node)
                .collect();
            ns.sort_unstable();
            ns.dedup();
            if ns.len() > 1 {
                return Err(format!("VM {} split over {} nodes", vm.name, ns.len()));
            }
        }
    }
    if placed != want {
        let missing = want.iter().find(|v| placed.binary_search(v).is_err());
        return Err(match missing {
            Some(&v) => format!("VM {} not placed", fleet.vms[v].name),
            None => "the witness places VMs that are not displaced".to_string(),
        });
    }
    used.sort_unstable_by_key(|u| (u.0, u.1));
    let mut i = 0;
    while i < used.len() {
        let (n, c) = (used[i].0, used[i].1);
        let mut u = 0u64;
        while i < used.len() && used[i].0 == n && used[i].1 == c {
            u = u.saturating_add(used[i].2);
            i += 1;
        }
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
