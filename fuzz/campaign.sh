#!/usr/bin/env bash
# fuzz/campaign.sh TARGET CPU_SECONDS
#
# A long campaign measured in CPU time, not wall time (on a shared machine a `nice -n 19` job
# gets far less than a core): runs fuzz/run.sh TARGET in 300 s chunks until the fuzzer processes
# have used CPU_SECONDS of user+system time, keeping the corpus between chunks. Appends the
# libFuzzer output and one `CHUNK_CPU user sys` line per chunk to fuzz/campaign/TARGET.log and
# prints one summary line:
#   TARGET cpu_s=… execs=… cov=… ft=… corpus=… crashes=…
# Stops at the first crash (non-zero exit); interrupt the fuzzer (SIGINT) to stop early.
set -euo pipefail
cd "$(dirname "$0")"
target=$1 want=$2
mkdir -p campaign
log=campaign/$target.log
cargo +nightly fuzz build "$target" >/dev/null 2>&1
cpu=0 execs=0 rc=0
while [ "$(echo "$cpu < $want" | bc)" = 1 ]; do
  left=$(echo "$want - $cpu" | bc)
  chunk=$(echo "if ($left < 300) $left + 5 else 300" | bc | cut -d. -f1)
  /usr/bin/time -f 'CPU %U %S' -o campaign/.time.$$ ./run.sh "$target" "$chunk" >>"$log" 2>&1 || rc=$?
  read -r _ u s < <(grep '^CPU ' campaign/.time.$$)
  echo "CHUNK_CPU $u $s" >>"$log"
  cpu=$(echo "$cpu + $u + $s" | bc)
  n=$(grep -a 'stat::number_of_executed_units' "$log" | tail -1 | awk '{print $2}')
  execs=$((execs + ${n:-0}))
  [ "$rc" = 0 ] || break
done
rm -f campaign/.time.$$
last=$(grep -a -E '^#[0-9]+.*cov: ' "$log" | tail -1)
cov=$(sed -E 's/.*cov: ([0-9]+).*/\1/' <<<"$last")
ft=$(sed -E 's/.*ft: ([0-9]+).*/\1/' <<<"$last")
corp=$(sed -E 's/.*corp: ([0-9]+\/[0-9a-zA-Z]+).*/\1/' <<<"$last")
crashes=$(find "artifacts/$target" -type f 2>/dev/null | wc -l)
echo "$target cpu_s=$cpu execs=$execs cov=$cov ft=$ft corpus=$corp crashes=$crashes rc=$rc" | tee -a "$log"
exit "$rc"
