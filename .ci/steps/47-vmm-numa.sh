#!/usr/bin/env bash
# The multi-node QEMU guests again, with the VMM features built in, so that their scenarios
# run (tests/numa-vm/vmm_guest.rs): `vmm.two_region` (a two-region vm-memory guest, one region
# per node, both populating at once while the guest already writes) and `hwloc.agree`.
# Runtime: about 1.5 minutes (two TCG boots of ~40 s each, plus compiling).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --features vm-memory,hwloc --test numa_vm -- --nocapture
