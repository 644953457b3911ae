//! Right-sizing: VMs whose guest-used peak stays far below what they reserved.
//!
//! The guest's peak (`guest_used_peak_bytes`, from balloon statistics or a guest agent) is
//! the most it has ever touched; a VM whose peak stays below `ratio` of its allocation is a
//! candidate. The suggested size is the crate's one right-size rule,
//! [`right_size_bytes`]: the peak plus `margin_ppm`
//! (default [`RIGHT_SIZE_MARGIN_PPM`], as `numapin status` uses), rounded up to whole pages of
//! the VM's largest class; what it frees is the difference. VMs with an unknown peak (0) are
//! counted, never suggested.

use super::Fleet;
use crate::snapshot::{right_size_bytes, RIGHT_SIZE_MARGIN_PPM};

/// Thresholds of the right-sizing rule.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rule {
    /// A VM is a candidate when `peak <= ratio * allocation`.
    pub ratio: f64,
    /// The suggested size is the peak plus `margin_ppm` millionths of it, rounded up to whole
    /// pages.
    pub margin_ppm: u64,
}

impl Default for Rule {
    fn default() -> Self {
        Rule {
            ratio: 0.5,
            margin_ppm: RIGHT_SIZE_MARGIN_PPM,
        }
    }
}

/// One over-allocated VM.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Candidate {
    /// VM index in [`Fleet::vms`].
    pub vm: usize,
    /// What it has reserved.
    pub allocated_bytes: u64,
    /// The guest's peak use.
    pub peak_bytes: u64,
    /// The suggested allocation.
    pub suggested_bytes: u64,
    /// `allocated - suggested`.
    pub freed_bytes: u64,
}

/// The right-sizing answer for a fleet.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Rightsizing {
    /// Candidates, most bytes freed first.
    pub candidates: Vec<Candidate>,
    /// Bytes all candidates together would free.
    pub freed_bytes: u64,
    /// VMs without a known peak (not judged).
    pub unknown_peak: usize,
}

/// Finds over-allocated VMs.
pub fn rightsize(fleet: &Fleet, rule: &Rule) -> Rightsizing {
    let mut out = Rightsizing::default();
    for (v, vm) in fleet.vms.iter().enumerate() {
        let alloc = vm.total();
        if vm.guest_used_peak == 0 {
            out.unknown_peak += 1;
            continue;
        }
        let peak = vm.guest_used_peak.min(alloc);
        if alloc == 0 || (peak as f64) > rule.ratio * alloc as f64 {
            continue;
        }
        // The largest class the VM uses sets the granule.
        let page = (0..fleet.classes.len())
            .filter(|&c| vm.demand[c] > 0)
            .map(|c| fleet.classes[c])
            .max()
            .unwrap_or(4096)
            .max(1);
        let suggested = right_size_bytes(peak, page, rule.margin_ppm).min(alloc);
        if suggested >= alloc {
            continue;
        }
        out.candidates.push(Candidate {
            vm: v,
            allocated_bytes: alloc,
            peak_bytes: vm.guest_used_peak,
            suggested_bytes: suggested,
            freed_bytes: alloc - suggested,
        });
    }
    out.candidates
        .sort_by(|a, b| b.freed_bytes.cmp(&a.freed_bytes).then(a.vm.cmp(&b.vm)));
    out.freed_bytes = out
        .candidates
        .iter()
        .fold(0u64, |a, c| a.saturating_add(c.freed_bytes));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::{Host, Node, Target};
    use crate::units::NodeId;

    #[test]
    fn suggests_page_rounded_sizes() {
        let g = 1u64 << 30;
        let mut f = Fleet {
            classes: vec![2 << 20],
            hosts: vec![Host {
                name: "a".into(),
                host_id: String::new(),
                first_node: 0,
                node_count: 1,
            }],
            nodes: vec![Node {
                host: 0,
                id: NodeId(0),
                limit: vec![64 * g],
                reserved: vec![0],
            }],
            vms: vec![],
        };
        let a = f.admit("big", &[16 * g], Target::Node(0)).unwrap();
        let b = f.admit("busy", &[8 * g], Target::Node(0)).unwrap();
        let c = f.admit("unknown", &[8 * g], Target::Node(0)).unwrap();
        f.vms[a].guest_used_peak = 3 * g;
        f.vms[b].guest_used_peak = 7 * g;
        let r = rightsize(&f, &Rule::default());
        assert_eq!(r.unknown_peak, 1);
        assert_eq!(r.candidates.len(), 1);
        let x = &r.candidates[0];
        assert_eq!(x.vm, a);
        // 3 GiB * 1.25 = 3.75 GiB, a multiple of 2 MiB.
        assert_eq!(x.suggested_bytes, 3 * g + 3 * g / 4);
        assert_eq!(x.freed_bytes, 16 * g - x.suggested_bytes);
        assert_eq!(r.freed_bytes, x.freed_bytes);
        let _ = c;
    }
}
