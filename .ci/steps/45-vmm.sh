#!/usr/bin/env bash
# VMM integration: the vm-memory feature's unit and integration tests and the two-region guest
# example (both regions on node 0 here; `--node A --node B` in the multi-node harness).
# Runtime: about 1 minute (mostly compiling vm-memory); the tests themselves take < 2 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --features vm-memory --lib vmm
cargo test --features vm-memory --test vmm
cargo run --features vm-memory --example two_region_guest -- --size 64MiB
cargo run --features vm-memory --example two_region_guest -- --size 64MiB --background
