#!/usr/bin/env bash
# fuzz/run.sh TARGET SECONDS [libFuzzer flags...]
#
# Builds TARGET (cargo +nightly fuzz, AddressSanitizer, debug assertions on), seeds the working
# corpus fuzz/corpus/TARGET from the small committed fuzz/seeds/TARGET, and fuzzes for SECONDS of
# wall time with one job under `nice -n 19`. A crash, leak, timeout (>10 s per input) or OOM
# exits non-zero and leaves the input in fuzz/artifacts/TARGET/; reproduce it with
# `cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/<file>` and make it a test in
# tests/fuzz_regressions.rs. Scratch files (the sysfs_tree target's trees, ledger images) go to a
# private directory on /dev/shm that is removed on exit.
set -euo pipefail
shopt -s nullglob
cd "$(dirname "$0")"
if [ $# -lt 2 ]; then
  echo "usage: fuzz/run.sh TARGET SECONDS [libFuzzer flags...]" >&2
  exit 2
fi
target=$1 secs=$2
shift 2
corpus=corpus/$target
mkdir -p "$corpus"
if [ -d "seeds/$target" ]; then
  for f in "seeds/$target"/*; do
    [ -e "$corpus/$(basename "$f")" ] || cp "$f" "$corpus/"
  done
fi
scratch=$(mktemp -d /dev/shm/numapin-fuzz.XXXXXX)
trap 'rm -rf "$scratch"' EXIT
NUMAPIN_FUZZ_TMP=$scratch nice -n 19 cargo +nightly fuzz run "$target" "$corpus" -- \
  -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 "$@"
