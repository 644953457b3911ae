//! The reservation builder with a ledger: charge before mapping, refund on every failure,
//! hold the charge for the reservation's life.

use std::sync::Arc;

use numapin::ledger::{class_of, ClassSpec, Ledger};
use numapin::topology::{HugepagePool, NumaNode};
use numapin::{Error, NodeId, PageSize, Reservation, Topology};

const M2: u64 = 2 << 20;

fn reserved(l: &Ledger) -> Vec<u64> {
    l.classes()
        .unwrap()
        .iter()
        .map(|c| c.reserved_bytes)
        .collect()
}

fn node0() -> NodeId {
    Topology::from_sysfs()
        .unwrap()
        .nodes
        .iter()
        .find(|n| n.has_memory())
        .unwrap()
        .id
}

#[test]
fn a_reservation_holds_its_charge_until_dropped() {
    let node = node0();
    let l = Arc::new(Ledger::in_memory(&[ClassSpec::new(node, 4096, 1 << 30)], 8).unwrap());
    let r = Reservation::builder(8 << 20)
        .node(node)
        .page_size(PageSize::Base4K)
        .lock(false)
        .ledger(Arc::clone(&l))
        .vm("web-1")
        .build()
        .unwrap();
    assert_eq!(reserved(&l), vec![8 << 20]);
    let s = l.snapshot().unwrap();
    assert_eq!(s.vms.len(), 1);
    assert_eq!(s.vms[0].name, "web-1");
    assert_eq!(s.vms[0].populated_bytes, Some(8 << 20));
    r.charge().unwrap().set_guest_used(3 << 20);
    assert_eq!(l.snapshot().unwrap().vms[0].guest_used_bytes, 3 << 20);
    drop(r);
    assert_eq!(reserved(&l), vec![0]);
    assert!(l.snapshot().unwrap().vms.is_empty());
}

#[test]
fn a_refused_reservation_maps_nothing() {
    let node = node0();
    let l = Arc::new(Ledger::in_memory(&[ClassSpec::new(node, 4096, 16 << 20)], 8).unwrap());
    let e = Reservation::builder(32 << 20)
        .node(node)
        .page_size(PageSize::Base4K)
        .lock(false)
        .ledger(Arc::clone(&l))
        .vm("big")
        .build()
        .unwrap_err();
    assert!(
        matches!(e, Error::AdmissionRefused { requested, .. } if requested == 32 << 20),
        "{e}"
    );
    assert_eq!(reserved(&l), vec![0]);
    assert!(l.snapshot().unwrap().vms.is_empty(), "the record was freed");
}

/// The topology claims a 2 MiB pool far larger than the host's, so that the preflight passes,
/// the ledger charges, and the kernel then refuses the mapping: the charge must be refunded.
#[test]
fn a_failure_after_the_charge_refunds_it() {
    let real = Topology::from_sysfs().unwrap();
    let n = real.nodes.iter().find(|n| n.has_memory()).unwrap().clone();
    let huge = 1 << 19; // 1 TiB of 2 MiB pages
    let fake = Topology {
        nodes: vec![NumaNode {
            hugepages: vec![HugepagePool {
                page_size_bytes: M2,
                total: huge,
                free: huge,
                surplus: 0,
            }],
            ..n.clone()
        }],
        ..real.clone()
    };
    let class = class_of(PageSize::Huge2M).unwrap();
    let l = Arc::new(Ledger::in_memory(&[ClassSpec::new(n.id, class, huge * M2)], 8).unwrap());
    for background in [false, true] {
        let b = Reservation::builder(512 << 30)
            .node(n.id)
            .page_size(PageSize::Huge2M)
            .topology(fake.clone())
            .ledger(Arc::clone(&l))
            .vm("too-big");
        let r = if background {
            b.build_background().and_then(|p| p.wait())
        } else {
            b.build()
        };
        let e = r.unwrap_err();
        // Failed at the kernel (mmap/populate), i.e. after the preflight and the charge.
        assert!(
            matches!(
                e,
                Error::HugepagesShort { .. } | Error::Sys { .. } | Error::Populate { .. }
            ),
            "{e}"
        );
        assert_eq!(reserved(&l), vec![0], "after {e}");
        assert!(l.snapshot().unwrap().vms.is_empty());
    }
}
