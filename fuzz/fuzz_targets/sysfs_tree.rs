//! Defends `Topology::from_roots` as a whole: a structure-aware tree (nodes, cpulists, meminfo,
//! distances, hugepage pools, zoneinfo, THP mode — mostly well formed, sometimes raw junk) is
//! written to a per-process tmpfs directory and read back. It must return `Ok` or `Err`, never
//! panic; on `Ok` the topology's invariants hold (see `check_topology`).
#![no_main]
use libfuzzer_sys::fuzz_target;
use numapin_fuzz::tree::Tree;

fuzz_target!(|tree: Tree| {
    let (sys, proc) = tree.write();
    if let Ok(topo) = numapin::Topology::from_roots(&sys, &proc) {
        numapin_fuzz::tree::check_topology(&topo, &tree, &sys);
    }
});
