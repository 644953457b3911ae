#!/usr/bin/env bash
# Issue 8's two-region vm-memory guest on a real two-node kernel: one extra QEMU TCG boot of the
# multi-node harness (tests/numa_vm.rs, docs/numa-vm.md) with the test binary built with feature
# vm-memory. The other multi-node guests already ran in `cargo test`; the filter runs only this
# one. Runtime: about 30 s (compile ~10 s after 45-vmm.sh, boot + scenario ~15-25 s).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --features vm-memory --test numa_vm vm_memory_regions_on_two_nodes
