# Sourced by .ci/run: sizes the hugepage pools the privileged tests need, sets transparent huge
# pages to madvise (enabled and defrag), and restores all of it.
# NUMAPIN_CI_2M_PAGES / NUMAPIN_CI_1G_PAGES: pages to make free per pool (default 1536 / 2).
HP_SAVED=()

hp_set() { # file value
  local f=$1 v=$2
  HP_SAVED+=("$f=$(cat "$f")")
  echo "$v" > "$f" 2>/dev/null || true
}

thp_set() { # file value: sets a THP mode file ("always [madvise] never") if its mode differs
  local f=$1 v=$2 cur
  [ -w "$f" ] || return 0
  cur=$(sed -n 's/.*\[\(.*\)\].*/\1/p' "$f")
  [ "$cur" = "$v" ] && return 0
  HP_SAVED+=("$f=$cur")
  echo "$v" > "$f" 2>/dev/null || true
}

hugepages_setup() {
  # THP for the baseline's huge-page tests: madvise (regions that ask get huge pages), and
  # defrag madvise (their faults compact directly instead of falling back to 4 KiB pages).
  thp_set /sys/kernel/mm/transparent_hugepage/enabled madvise
  thp_set /sys/kernel/mm/transparent_hugepage/defrag madvise
  local want2=${NUMAPIN_CI_2M_PAGES:-1536} want1=${NUMAPIN_CI_1G_PAGES:-2}
  local f2=/proc/sys/vm/nr_hugepages
  local f1=/sys/kernel/mm/hugepages/hugepages-1048576kB/nr_hugepages
  if [ ! -w "$f2" ]; then
    echo "hugepages: cannot write $f2 (not root?); privileged tests will fail under NUMAPIN_REQUIRE_PRIVILEGED=1"
    return 0
  fi
  local free2; free2=$(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages)
  if [ "$free2" -lt "$want2" ]; then hp_set "$f2" $(( $(cat $f2) + want2 - free2 )); fi
  if [ -w "$f1" ]; then
    local free1; free1=$(cat /sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages)
    if [ "$free1" -lt "$want1" ]; then hp_set "$f1" $(( $(cat $f1) + want1 - free1 )); fi
  fi
  echo "hugepages: 2M free $(cat /sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages)," \
       "1G free $(cat /sys/kernel/mm/hugepages/hugepages-1048576kB/free_hugepages 2>/dev/null || echo n/a)"
}

hugepages_restore() {
  local rc=$? kv
  for kv in "${HP_SAVED[@]}"; do echo "${kv#*=}" > "${kv%%=*}" 2>/dev/null || true; done
  [ ${#HP_SAVED[@]} -eq 0 ] || echo "hugepages: restored ${#HP_SAVED[@]} pool(s)"
  return $rc
}
