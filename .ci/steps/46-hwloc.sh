#!/usr/bin/env bash
# Feature `hwloc`: hwloc and sysfs agree on this host (nodes, CPUs, memory, hugepage pools,
# distances), the core structure covers every CPU once, one populate worker per core; and the
# doc examples of both VMM features compile.
# Runtime: about 1.5 minutes (compiling hwlocality and the doctests); the tests take < 1 s.
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo test --features hwloc --test hwloc -- --nocapture
cargo test --features hwloc,vm-memory --doc
