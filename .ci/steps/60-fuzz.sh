#!/usr/bin/env bash
# Short fuzz campaign: builds every cargo-fuzz target in fuzz/ (nightly, AddressSanitizer, debug
# assertions) and runs each for 45 s from the committed seeds (fuzz/run.sh), one job at a time.
# Fails if any target crashes, leaks, times out or runs out of memory; the input is left in
# fuzz/artifacts/<target>/ and its tail is printed.
# Runtime: ~2-3 min build + 45 s per target (9 targets: ~10 min on an idle 2-core machine).
# Long campaigns: docs/fuzzing.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${NUMAPIN_FUZZ_SECONDS:-45}
cargo +nightly fuzz build
failed=()
for t in $(cargo +nightly fuzz list); do
  echo "--- fuzz $t for ${secs}s"
  if ! fuzz/run.sh "$t" "$secs" >"fuzz/$t.ci.log" 2>&1; then
    failed+=("$t")
    tail -n 60 "fuzz/$t.ci.log"
  fi
  grep -a -E '^(#[0-9]+.*DONE|Done )' "fuzz/$t.ci.log" || true
  rm -f "fuzz/$t.ci.log"
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz targets failed: ${failed[*]} (inputs in fuzz/artifacts/)" >&2
  exit 1
fi
