//! Proofs in words.

use super::Proof;
use crate::plan::{class_name, Fleet};
use crate::units::format_bytes;

/// Describes a proof in one sentence.
pub fn explain(fleet: &Fleet, proof: &Proof) -> String {
    match proof {
        Proof::NoSurvivors => "no host survives".to_string(),
        Proof::ClassShortfall {
            page_size_bytes,
            demand,
            free,
        } => format!(
            "the displaced VMs need {} of {} pages, the survivors have {} free",
            format_bytes(*demand),
            class_name(*page_size_bytes),
            format_bytes(*free)
        ),
        Proof::Fragmented {
            page_size_bytes,
            at_least,
            vms,
            demand,
            slots,
            usable,
            granule,
        } => format!(
            "{vms} displaced VM(s) need at least {} of {} pages each ({} together); the survivors' free pieces can take at most {slots} such VM(s) and {} of their memory (whole VMs, in multiples of {})",
            format_bytes(*at_least),
            class_name(*page_size_bytes),
            format_bytes(*demand),
            format_bytes(*usable),
            format_bytes(*granule)
        ),
        Proof::DoesNotFit { vm, single_node } => {
            let v = &fleet.vms[*vm];
            let need: Vec<String> = v
                .demand
                .iter()
                .enumerate()
                .filter(|(_, &d)| d > 0)
                .map(|(c, &d)| format!("{} {}", format_bytes(d), class_name(fleet.classes[c])))
                .collect();
            format!(
                "VM {} needs {} and fits on no surviving {}",
                v.name,
                need.join(" + "),
                if *single_node { "node" } else { "host" }
            )
        }
        Proof::Exhausted { steps } => {
            format!("exact search tried every distinct placement ({steps} steps)")
        }
    }
}

pub(super) fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
