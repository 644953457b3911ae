#!/usr/bin/env bash
# Ledger chaos (about 2 minutes): real `numapin` processes on one shared ledger for
# NUMAPIN_CHAOS_SECONDS (default 75):
# - holders (`numapin reserve --vm ... --hold-secs`) started as root, as root in a time
#   namespace whose boot time is 1000 s ahead (start times shifted), and as `nobody` in the
#   ledger's group (a foreign user *with* write access);
# - random SIGKILLs of holders at any moment (mid-claim, mid-charge, mid-release, mid-hold);
# - reapers: `numapin status` as root, in time namespaces, and as `nobody` in the group;
# - a foreign user *without* write access (`nobody` outside the group) trying status, reserve
#   and truncate: all refused, nothing changed;
# then the ledger must be exact: while survivors hold, every class's reserved bytes equal the
# sum of the listed VMs' charges and every listed VM is a live holder; after they are killed,
# nothing is reserved and no VM is listed. Needs root, util-linux `unshare`/`setpriv`, jq.
set -euo pipefail
cd "$(dirname "$0")/../.."
secs=${NUMAPIN_CHAOS_SECONDS:-75}
[ "$(id -u)" = 0 ] || { echo "chaos: needs root (setpriv, unshare --time)" >&2; exit 1; }

cargo build --bin numapin
work=$(mktemp -d /tmp/numapin-chaos.XXXXXX)
chmod 0755 "$work"
bin="$work/numapin"
cp target/debug/numapin "$bin"
chmod 0755 "$bin"
export NUMAPIN_LEDGER="$work/ledger" NUMAPIN_LEDGER_GID=65534 NUMAPIN_LEDGER_SLOTS=64
pids=()
cleanup() {
  local rc=$? p
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
  return $rc
}
trap cleanup EXIT

# The shell reports every SIGKILLed background job on stderr ("Killed ..."): hundreds of lines.
# Those go to /dev/null; the script's own messages go to the saved stderr (fd 3).
exec 3>&2
fail() { echo "chaos: FAIL: $*" >&3; exit 1; }
# Runs as nobody in group nogroup (the ledger's group): a foreign user with write access.
as_member() { setpriv --reuid=65534 --regid=65534 --clear-groups -- "$@"; }
# nobody with another primary group and no supplementary ones: no write access.
as_outsider() { setpriv --reuid=65534 --regid=65533 --clear-groups -- "$@"; }
timens() { unshare --time --boottime "$1" "${@:2}"; }

"$bin" status >/dev/null # creates the ledger: root:nogroup 0660
stat -c '%U:%G %a' "$NUMAPIN_LEDGER" | grep -qx 'root:nogroup 660' ||
  fail "ledger made with mode $(stat -c '%U:%G %a' "$NUMAPIN_LEDGER")"
before=$(sha256sum < "$NUMAPIN_LEDGER")

# The outsider: every attempt refused by the kernel's permission check, nothing changed.
as_outsider "$bin" status >/dev/null 2>&1 && fail "an outsider read the ledger"
as_outsider "$bin" reserve --size 4MiB --page-size 4k --no-lock --vm outsider \
  >/dev/null 2>&1 && fail "an outsider charged the ledger"
as_outsider truncate -s 0 "$NUMAPIN_LEDGER" 2>/dev/null && fail "an outsider truncated the ledger"
[ "$(sha256sum < "$NUMAPIN_LEDGER")" = "$before" ] || fail "the outsider changed the ledger"

# Each holder runs in a process group of its own (setsid without a fork: the pid is the
# group's), so that a SIGKILL to the group also reaches the child `unshare --time` forks.
holder() { # how: root | timens | member; [hold seconds]
  local size=$(( (RANDOM % 8 + 1) * 8 ))MiB hold=${2:-$(( RANDOM % 4 + 1 ))} name="vm$RANDOM"
  local cmd=("$bin" reserve --size "$size" --page-size 4k --no-lock --vm "$name" --hold-secs "$hold")
  local pre=()
  case $1 in
    timens) pre=(unshare --time --boottime 1000) ;;
    member) pre=(setpriv --reuid=65534 --regid=65534 --clear-groups --) ;;
  esac
  # A simple command in the background (a compound one would run in a subshell whose pid $!
  # would be).
  setsid "${pre[@]}" "${cmd[@]}" >/dev/null 2>&1 &
  pids+=($!)
}
killgroup() { kill "-$1" -- "-$2" 2>/dev/null; }

reaper() {
  case $(( RANDOM % 3 )) in
    0) "$bin" status --json ;;
    1) timens $(( RANDOM * 7 )) "$bin" status --json ;;
    2) as_member "$bin" status --json ;;
  esac >/dev/null 2>&1 || fail "status failed"
}

exec 2>/dev/null
end=$(( SECONDS + secs ))
started=0 killed=0 reaps=0
while [ $SECONDS -lt $end ]; do
  case $(( RANDOM % 10 )) in
    0|1|2) holder root; started=$((started + 1)) ;;
    3|4) holder timens; started=$((started + 1)) ;;
    5|6) holder member; started=$((started + 1)) ;;
    7|8)
      if [ ${#pids[@]} -gt 0 ]; then
        killgroup KILL "${pids[RANDOM % ${#pids[@]}]}" && killed=$((killed + 1)) || true
      fi ;;
    9) reaper; reaps=$((reaps + 1)) ;;
  esac
  sleep 0.0$(( RANDOM % 9 + 1 ))
  # Forget the holders that ended.
  live=()
  for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && live+=("$p"); done
  pids=("${live[@]}")
done
echo "chaos: $started holders started, $killed SIGKILLed, $reaps reapers, ${#pids[@]} alive"

# Survivors: a few long holders, every start in flight given time to charge, then all of them
# frozen (SIGSTOP: alive, wherever they are) while exactness is checked.
for i in 1 2 3; do
  holder root 60; holder timens 60; holder member 60
done
sleep 2
for p in "${pids[@]}"; do killgroup STOP "$p" || true; done
snap=$(timens 2000 "$bin" status --json)
echo "$snap" | jq -e '
  [.vms[].reservations[]] as $r
  | all(.nodes[]; .id as $n | all(.classes[];
      .page_size_bytes as $p
      | .reserved_bytes == ([$r[] | select(.node == $n and .page_size_bytes == $p) | .bytes] | add // 0)))' \
  >/dev/null || fail "reserved != sum of the VMs' charges: $snap"
for vm_pid in $(echo "$snap" | jq -r '.vms[].pid'); do
  kill -0 "$vm_pid" 2>/dev/null || fail "VM of dead pid $vm_pid still listed"
done
nvms=$(echo "$snap" | jq '.vms | length')
[ "$nvms" -gt 0 ] || fail "no survivor listed while holders run: $snap"
echo "chaos: $nvms live VMs, reserved = sum of their charges"

# Kill everything: nothing may be left.
for p in "${pids[@]}"; do killgroup KILL "$p" || true; done
wait 2>/dev/null || true
pids=()
snap=$(timens 3000 "$bin" status --json)
echo "$snap" | jq -e '(.vms | length) == 0 and all(.nodes[].classes[]; .reserved_bytes == 0)' \
  >/dev/null || fail "leaked after every holder died: $snap"
exec 2>&3
echo "chaos: every holder dead, nothing reserved, no VM listed"
