//! Defends the planner (`plan::failover`, `plan::headroom`) on arbitrary small fleets: it must
//! neither panic nor run unbounded (libFuzzer's `-timeout` catches a loop), every
//! `Guaranteed` scenario carries a witness that `verify_witness` accepts, the overall verdict
//! is the worst scenario's, and a headroom answer is whole pages and within its upper bound.
//! Snapshots are built consistent (charges summing to the node totals) unless `corrupt` spoils
//! one number, so most inputs get past `Fleet::from_snapshots` into the search.
#![no_main]
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use numapin::plan::failover::{check, verify_witness};
use numapin::plan::headroom::headroom;
use numapin::plan::{Budget, Fleet, ScenarioOutcome, Verdict};
use numapin::snapshot::{ClassSnapshot, NodeSnapshot, Snapshot, VmReservation, VmSnapshot};
use numapin::NodeId;

const PAGES: [u64; 3] = [4096, 2 << 20, 1 << 30];

#[derive(Arbitrary, Debug)]
struct NodeIn {
    /// (class selector, free pages beyond the reserved, capacity slack pages)
    classes: Vec<(u8, u8, u8)>,
}

#[derive(Arbitrary, Debug)]
struct VmIn {
    single_node: Option<bool>,
    /// (node selector, class selector, pages)
    charges: Vec<(u8, u8, u8)>,
    guest_used_peak: u32,
}

#[derive(Arbitrary, Debug)]
struct HostIn {
    nodes: Vec<NodeIn>,
    vms: Vec<VmIn>,
}

#[derive(Arbitrary, Debug)]
struct Input {
    hosts: Vec<HostIn>,
    k: u8,
    search_steps: u16,
    headroom_class: u8,
    single_node: bool,
    candidates: u8,
    /// (which number, new value): spoils one field of the first snapshot.
    corrupt: Option<(u8, u64)>,
}

fn snapshots(input: &Input) -> Vec<Snapshot> {
    let mut out = Vec::new();
    for (h, host) in input.hosts.iter().take(6).enumerate() {
        let mut s = Snapshot {
            host: format!("h{h}"),
            ..Snapshot::default()
        };
        // (node index, class page size) -> (free pages, slack pages)
        let mut nodes: Vec<Vec<(u64, u64, u64)>> = Vec::new();
        for n in host.nodes.iter().take(3) {
            let mut cls: Vec<(u64, u64, u64)> = Vec::new();
            for &(c, free, slack) in n.classes.iter().take(3) {
                let p = PAGES[usize::from(c) % 3];
                if !cls.iter().any(|x| x.0 == p) {
                    cls.push((p, u64::from(free), u64::from(slack)));
                }
            }
            nodes.push(cls);
        }
        let mut reserved = vec![vec![0u64; 3]; nodes.len()];
        for (v, vm) in host.vms.iter().take(6).enumerate() {
            let mut r = Vec::new();
            for &(n, c, pages) in vm.charges.iter().take(4) {
                if nodes.is_empty() {
                    break;
                }
                let ni = usize::from(n) % nodes.len();
                if nodes[ni].is_empty() {
                    continue;
                }
                let ci = usize::from(c) % nodes[ni].len();
                let p = nodes[ni][ci].0;
                let bytes = u64::from(pages) * p;
                reserved[ni][ci] += bytes;
                r.push(VmReservation {
                    node: NodeId(ni as u32),
                    page_size_bytes: p,
                    bytes,
                });
            }
            let single =
                vm.single_node.unwrap_or(true) && r.windows(2).all(|w| w[0].node == w[1].node);
            s.vms.push(VmSnapshot {
                name: format!("vm{h}.{v}"),
                pid: 1000 + v as u32,
                reservations: r,
                guest_used_bytes: 0,
                guest_used_peak_bytes: u64::from(vm.guest_used_peak),
                single_node: vm.single_node.map(|_| single),
                ..VmSnapshot::default()
            });
        }
        for (ni, cls) in nodes.iter().enumerate() {
            let classes = cls
                .iter()
                .enumerate()
                .map(|(ci, &(p, free, slack))| {
                    let limit = reserved[ni][ci] + free * p;
                    ClassSnapshot {
                        page_size_bytes: p,
                        capacity_bytes: limit + slack * p,
                        limit_bytes: limit,
                        reserved_bytes: reserved[ni][ci],
                        available_bytes: limit - reserved[ni][ci],
                    }
                })
                .collect();
            s.nodes.push(NodeSnapshot {
                id: NodeId(ni as u32),
                classes,
            });
        }
        out.push(s);
    }
    if let (Some((which, value)), Some(s)) = (input.corrupt, out.first_mut()) {
        let mut fields: Vec<&mut u64> = Vec::new();
        for n in &mut s.nodes {
            for c in &mut n.classes {
                fields.extend([
                    &mut c.page_size_bytes,
                    &mut c.capacity_bytes,
                    &mut c.limit_bytes,
                    &mut c.reserved_bytes,
                    &mut c.available_bytes,
                ]);
            }
        }
        for vm in &mut s.vms {
            fields.push(&mut vm.guest_used_peak_bytes);
            for r in &mut vm.reservations {
                fields.extend([&mut r.bytes, &mut r.page_size_bytes]);
            }
        }
        let len = fields.len();
        if len > 0 {
            *fields.swap_remove(usize::from(which) % len) = value;
        }
    }
    out
}

fuzz_target!(|input: Input| {
    let snaps = snapshots(&input);
    let Ok(fleet) = Fleet::from_snapshots(&snaps) else {
        return;
    };
    let budget = Budget {
        search_steps: u64::from(input.search_steps % 4096),
        max_scenarios: 64,
        ..Budget::default() // keeps every witness of these few scenarios
    };
    let k = usize::from(input.k % 4);
    let report = check(&fleet, k, &budget);
    let mut worst = Verdict::Guaranteed;
    for s in &report.scenarios {
        worst = worst.max(s.outcome.verdict());
        if let (ScenarioOutcome::Guaranteed { witness, .. }, true) = (&s.outcome, s.witness_kept) {
            if let Err(e) = verify_witness(&fleet, &s.failed, witness) {
                panic!("scenario {:?}: bad witness: {e}", s.failed);
            }
        }
    }
    assert!(report.verdict >= worst, "{:?} < {worst:?}", report.verdict);
    if !fleet.classes().is_empty() {
        let page = fleet.classes()[usize::from(input.headroom_class) % fleet.classes().len()];
        let budget = Budget {
            search_steps: budget.search_steps.min(512),
            max_scenarios: 16,
            ..Budget::default()
        };
        let cand = usize::from(input.candidates % 3) + 1;
        let h = headroom(&fleet, page, input.single_node, k, cand, &budget);
        assert_eq!(h.admissible_bytes % page, 0, "{h:?}");
        assert!(h.admissible_bytes <= h.upper_bound_bytes, "{h:?}");
    }
});
