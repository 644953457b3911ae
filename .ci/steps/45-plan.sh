#!/usr/bin/env bash
# Planner: scale check, policy simulation, and `numapin plan` on this host's own
# `numapin status --json` snapshot. Takes about 1–2 minutes (release build of two examples
# and the binary; the runs themselves take a few seconds).
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo build --release --quiet --bin numapin --example plan_scale --example plan_sim

# N+1 over 1,000 hosts x 50 VMs must take under a second (it takes tens of milliseconds);
# 10,000 hosts is measured and printed.
./target/release/examples/plan_scale --max-ms 1000 1000 10000

# End to end, CLI included, from one `status --json` file per host: N+1 over 10,000 hosts and
# N+2 over 1,000 hosts (499,500 scenarios), 50 VMs each. The bars are 1 s and 2 s (on an idle machine); fail
# above 2.5 s and 4 s at best of three (a regression: before composition and fast parsing they
# took 7.9 s and 27 s for a fifth of the scenarios), and print the figures.
fleet=$(mktemp -d)
trap 'rm -rf "$fleet"' EXIT
./target/release/examples/plan_scale --write "$fleet/1k" 1000
./target/release/examples/plan_scale --write "$fleet/10k" 10000
best_ms() { # DIR ARGS...: the fastest of three `numapin plan` runs in ms (exit 0 required)
  local dir=$1 best=999999 t0 t1
  shift
  for _ in 1 2 3; do
    t0=$(date +%s%N)
    (cd "$dir" && "$OLDPWD/target/release/numapin" plan "$@" ./*.json >/dev/null)
    t1=$(date +%s%N)
    best=$(((t1 - t0) / 1000000 < best ? (t1 - t0) / 1000000 : best))
  done
  echo "$best"
}
n1=$(best_ms "$fleet/10k")
n2=$(best_ms "$fleet/1k" -k 2)
echo "numapin plan end to end: N+1 over 10,000 hosts ${n1} ms (bar 1000), N+2 over 1,000 hosts ${n2} ms (bar 2000)"
[ "$n1" -le 2500 ] && [ "$n2" -le 4000 ]
rm -rf "$fleet"

# The policy simulation, briefly.
./target/release/examples/plan_sim 1000

# A real snapshot of this host from the ledger's `numapin status --json`, with one VM charged
# (a 64 MiB base-page reservation held for a few seconds), in a private ledger file.
snap=$(mktemp --suffix=.json)
twin=$(mktemp --suffix=.json)
ledger=$(mktemp -u /dev/shm/numapin-plan-ci.XXXXXX)
holder=
cleanup() {
  [ -n "$holder" ] && kill "$holder" 2>/dev/null || true
  rm -f "$snap" "$twin" "$ledger"
}
trap cleanup EXIT
if ./target/release/numapin status --ledger "$ledger" --json >"$snap" 2>/dev/null; then
  ./target/release/numapin reserve --vm ci-plan --size 64MiB --page-size 4k --ledger "$ledger" \
    --hold-secs 10 >/dev/null &
  holder=$!
  sleep 3
  ./target/release/numapin status --ledger "$ledger" --guest-used ci-plan=16MiB --json >"$snap"
  grep -q '"ci-plan"' "$snap" || echo "note: the held reservation is not in the snapshot"
  # The same ledger under another host identity stands for a second, identical host (the same
  # snapshot twice is refused as one host counted twice). Any verdict is fine; an error is not.
  NUMAPIN_HOSTNAME=ci-twin NUMAPIN_HOST_ID=ci-twin-id \
    ./target/release/numapin status --ledger "$ledger" --json >"$twin"
  if ./target/release/numapin plan "$snap" "$snap" >/dev/null 2>&1; then
    echo "one snapshot given twice was planned as two hosts"
    exit 1
  fi
  rc=0
  ./target/release/numapin plan "$snap" "$twin" --headroom 4K --rightsize --ha --holdback || rc=$?
  echo "plan on this host's snapshot: exit $rc (0 guaranteed, 3 impossible, 4 not proven)"
  case $rc in 0 | 3 | 4) ;; *) exit 1 ;; esac
else
  echo "SKIP: 'numapin status --json' is not available in this build; planner inputs come from fixtures only"
fi
