#!/usr/bin/env bash
# Smoke test of `numapin bench`: runs `numapin bench --quick --json --plots DIR` once
# and checks the JSON's shape and the plots — no performance thresholds (CI machines are noisy;
# the figures are printed for the log). Works with or without qemu-system-x86_64: with it, the
# qemu_prealloc and qemu_on_numapin rows must be there. Runtime: release build (~1 min from scratch) + 35-50 s of
# bench on a 2-CPU VM; 1.5 min measured with an incremental build on a loaded machine.
set -euo pipefail
cd "$(dirname "$0")/../.."
out=$(mktemp -d /tmp/numapin-bench-smoke.XXXXXX)
trap 'rm -rf "$out"' EXIT

cargo build --release --quiet
./target/release/numapin bench --quick --json --plots "$out/plots" > "$out/bench.json"
cat "$out/bench.json"

jq -e '
  (.machine | type == "object" and has("cpus") and has("hypervisor") and has("kernel"))
  and (.results | type == "array" and length > 0)
  and all(.results[];
        (.metric | type == "string") and (.unit | type == "string")
        and (.numapin | type == "number") and (.baseline | type == "number")
        and (.ratio | type == "number"))
  and ([.results[].metric]
        | contains(["time_to_ready", "first_touch_p99", "random_access",
                    "populate_vs_limit", "balloon_cycle", "populate_gibps_4k_1t",
                    "populate_gibps_2m_1t", "adopt_vs_populate",
                    "warm_time_to_ready", "failover_restart", "rezero_vs_memset"]))
' "$out/bench.json" >/dev/null || { echo "bench JSON has the wrong shape" >&2; exit 1; }

if command -v qemu-system-x86_64 >/dev/null; then
  jq -e 'any(.results[]; .metric == "qemu_prealloc")' "$out/bench.json" >/dev/null \
    || { echo "qemu-system-x86_64 is installed but the qemu_prealloc row is missing" >&2; exit 1; }
  jq -e 'any(.results[]; .metric == "qemu_on_numapin")' "$out/bench.json" >/dev/null \
    || { echo "qemu-system-x86_64 is installed but the qemu_on_numapin row is missing" >&2; exit 1; }
fi

for f in time_to_ready latency_cdf populate_throughput; do
  head -c 4 "$out/plots/$f.svg" | grep -q '<svg' || { echo "plot $f.svg missing or not SVG" >&2; exit 1; }
  tail -c 8 "$out/plots/$f.svg" | grep -q '</svg>' || { echo "plot $f.svg truncated" >&2; exit 1; }
done

# A pool too small for --size is a clear error, not a crash.
if ./target/release/numapin bench --quick --size 64TiB > /dev/null 2> "$out/err"; then
  echo "bench --size 64TiB should fail" >&2; exit 1
fi
grep -q "hugepage" "$out/err" || { echo "unclear error for a short pool:" >&2; cat "$out/err" >&2; exit 1; }
echo "bench smoke: ok"
