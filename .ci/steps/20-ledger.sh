#!/usr/bin/env bash
# Ledger: what plain `cargo test` does not run.
# - loom models of charge/release/reap races (tests/loom_ledger.rs), bounded by
#   LOOM_MAX_PREEMPTIONS=3: about 15 s of models plus a release build of the crate under
#   --cfg loom (1-3 min on a 2-core machine), in its own target dir so the normal build is kept;
# - the multi-process stress test again in release mode with more rounds (~20 s).
# Runtime: about 3-5 minutes in all.
set -euo pipefail
cd "$(dirname "$0")/../.."

# Without default features: the command-line tool and the warm-pool service (features cli,
# pool) move records between processes by descriptor, which has no loom model; the ledger's
# claim, fence and reap code is all in the library.
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=target/loom \
  cargo test --release --no-default-features --test loom_ledger

NUMAPIN_LEDGER_STRESS_ROUNDS=30 cargo test --release --test ledger_procs
