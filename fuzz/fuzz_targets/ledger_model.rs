//! Defends the ledger's sequential semantics: a random sequence of open / charge / release /
//! drop / kill / reap / set-capacity / snapshot operations on `Ledger::in_memory`, compared op
//! by op with a plain model (a map of VM → per-class bytes, dead VMs' holdings kept until
//! reaped). After every op: each class's reserved bytes equal the model's sum, each live VM's
//! charges equal the model's, `audit` passes. A "killed" VM is `VmRecord::kill` (feature
//! `test-hooks`): abandoned without releasing, its slot's lock dropped, as a process's death.
#![no_main]
use std::collections::BTreeMap;
use std::sync::Arc;

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use numapin::ledger::{ClassSpec, Ledger};
use numapin::{Error, NodeId, VmRecord};

const PAGES: [u64; 3] = [4096, 2 << 20, 1 << 30];

#[derive(Arbitrary, Debug)]
struct Class {
    node: u8,
    page: u8,
    /// Capacity in pages.
    pages: u32,
    reserve_pages: u16,
    headroom_ppm: u32,
}

#[derive(Arbitrary, Debug)]
enum Amount {
    /// Whole pages of the class.
    Pages(u16),
    /// Any byte count (zero, past the ledger's 2^52 limit, ...).
    Raw(u64),
}

#[derive(Arbitrary, Debug)]
enum Op {
    Open(u8),
    Charge(u8, u8, Amount),
    Release(u8, u8, Amount),
    Drop(u8),
    Kill(u8),
    Reap,
    SetCapacity(u8, u32),
    Snapshot,
}

#[derive(Arbitrary, Debug)]
struct Input {
    classes: Vec<Class>,
    slots: u8,
    ops: Vec<Op>,
}

const MAX_BYTES: u64 = (1 << 52) - 1;

struct ModelVm {
    name: String,
    charged: Vec<u64>,
}

fuzz_target!(|input: Input| {
    let mut specs: Vec<ClassSpec> = Vec::new();
    for c in input.classes.iter().take(4) {
        let page = PAGES[usize::from(c.page) % 3];
        let node = NodeId(u32::from(c.node % 3));
        if specs
            .iter()
            .any(|s| s.node == node && s.page_size_bytes == page)
        {
            continue;
        }
        specs.push(ClassSpec {
            node,
            page_size_bytes: page,
            capacity_bytes: u64::from(c.pages) * page,
            host_reserve_bytes: u64::from(c.reserve_pages) * page,
            headroom_ppm: c.headroom_ppm % 1_100_000,
        });
    }
    let slots = u32::from(input.slots % 6) + 1;
    let ledger = match Ledger::in_memory(&specs, slots) {
        Ok(l) => Arc::new(l),
        Err(e) => {
            assert!(specs.is_empty(), "{specs:?}: {e}");
            return;
        }
    };
    let nc = specs.len();
    let mut limits: Vec<u64> = specs.iter().map(ClassSpec::limit_bytes).collect();
    let mut live: BTreeMap<u8, (VmRecord, ModelVm)> = BTreeMap::new();
    let mut dead: Vec<ModelVm> = Vec::new(); // killed, not yet reaped
    let mut next_pid = 1000u64;
    let total = |live: &BTreeMap<u8, (VmRecord, ModelVm)>, dead: &Vec<ModelVm>, c: usize| -> u64 {
        live.values()
            .map(|(_, m)| m.charged[c])
            .chain(dead.iter().map(|m| m.charged[c]))
            .sum()
    };

    for op in input.ops.iter().take(64) {
        match op {
            Op::Open(v) => {
                if live.contains_key(v) {
                    continue;
                }
                let name = format!("vm{v}-{next_pid}");
                let r = ledger.vm(&name);
                next_pid += 1;
                let used = live.len() + dead.len();
                if used >= slots as usize {
                    if dead.is_empty() {
                        assert!(matches!(r, Err(Error::LedgerFull { .. })), "{r:?}");
                        continue;
                    }
                    dead.clear(); // vm reaps when every slot is taken
                }
                let ch = r.expect("a free slot");
                live.insert(
                    *v,
                    (
                        ch,
                        ModelVm {
                            name,
                            charged: vec![0; nc],
                        },
                    ),
                );
            }
            Op::Charge(v, c, amount) | Op::Release(v, c, amount) => {
                if nc == 0 {
                    continue;
                }
                let c = usize::from(*c) % nc;
                let bytes = match amount {
                    Amount::Pages(p) => u64::from(*p) * specs[c].page_size_bytes,
                    Amount::Raw(b) => *b,
                };
                let others = total(&live, &dead, c);
                let Some((ch, m)) = live.get_mut(v) else {
                    continue;
                };
                let from = m.charged[c];
                let others = others - from;
                if let Op::Release(..) = op {
                    let r = ch.release_class(c, bytes);
                    // The ledger counts 4 KiB pages: other sizes are refused as invalid.
                    if bytes > from || bytes % 4096 != 0 {
                        assert!(matches!(r, Err(Error::InvalidSize { .. })), "{r:?}");
                    } else {
                        r.expect("release within the charge");
                        m.charged[c] -= bytes;
                    }
                    continue;
                }
                let r = ch.try_charge_class(c, bytes);
                let to = from.saturating_add(bytes);
                if bytes == 0 || bytes % 4096 != 0 {
                    assert!(matches!(r, Err(Error::InvalidSize { .. })), "{r:?}");
                } else if to > MAX_BYTES {
                    assert!(r.is_err(), "charge past 2^52 accepted");
                } else if others + to <= limits[c] {
                    r.expect("a charge within the limit");
                    m.charged[c] = to;
                } else {
                    // Refused: the ledger reaps dead owners once and retries.
                    let freed: u64 = dead.iter().map(|d| d.charged[c]).sum();
                    if !dead.is_empty() && others - freed + to <= limits[c] {
                        r.expect("a charge that fits after reaping");
                        m.charged[c] = to;
                    } else {
                        assert!(
                            matches!(r, Err(Error::AdmissionRefused { .. })),
                            "class {c}: {others} + {to} > {}: {r:?}",
                            limits[c]
                        );
                    }
                    dead.clear();
                }
            }
            Op::Drop(v) => {
                live.remove(v);
            }
            Op::Kill(v) => {
                if let Some((ch, m)) = live.remove(v) {
                    ch.kill();
                    dead.push(m);
                }
            }
            Op::Reap => {
                let n = ledger.reap().expect("reap");
                assert_eq!(n, dead.len());
                dead.clear();
            }
            Op::SetCapacity(c, pages) => {
                if nc == 0 {
                    continue;
                }
                let c = usize::from(*c) % nc;
                specs[c].capacity_bytes = u64::from(*pages) * specs[c].page_size_bytes;
                ledger.set_capacity(&specs[c]).expect("set_capacity");
                limits[c] = specs[c].limit_bytes();
            }
            Op::Snapshot => {
                let s = ledger.snapshot_no_reap().expect("snapshot");
                for (_, m) in live.values() {
                    let vm = s.vms.iter().find(|x| x.name == m.name);
                    let got: u64 = vm.map_or(0, |x| x.reserved_bytes());
                    assert_eq!(got, m.charged.iter().sum::<u64>(), "{}", m.name);
                }
            }
        }
        let st = ledger.classes().expect("classes");
        for c in 0..nc {
            assert_eq!(st[c].reserved_bytes, total(&live, &dead, c), "class {c}");
            assert_eq!(st[c].limit_bytes, limits[c], "class {c} limit");
        }
        for (ch, m) in live.values() {
            for (spec, &want) in specs.iter().zip(&m.charged) {
                assert_eq!(ch.charged(spec.node, spec.page_size_bytes), want);
            }
        }
        ledger.audit().expect("audit");
    }
    drop(live);
});
