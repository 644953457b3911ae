#!/usr/bin/env bash
# The multi-node QEMU guests again, with the VMM features built in, running only their
# scenarios (tests/numa-vm/vmm_guest.rs): `vmm.two_region` (a two-region vm-memory guest, one region
# per node, both populating at once while the guest already writes) and `hwloc.agree`.
# Runtime: about 1 minute (two short TCG boots plus compiling with the features).
set -euo pipefail
cd "$(dirname "$0")/../.."
# Only those scenarios: plain `cargo test` already ran the others in the same guests.
NUMAVM_ONLY=vmm.,hwloc. cargo test --features vm-memory,hwloc --test numa_vm -- --nocapture
