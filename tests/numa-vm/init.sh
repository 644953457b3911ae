#!/bin/sh
# /init of the NUMA test guest (tests/numa-vm/harness.rs builds the initramfs around it).
# Mounts the kernel filesystems, sizes the per-node hugepage pools and the THP mode the spec
# asks for, runs the scenarios (the test binary's ignored `guest` test), prints
# NUMAVM-RESULT lines (from the scenarios) and NUMAVM-DONE, and powers off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
mkdir -p /dev/shm /tmp
echo "NUMAVM-BOOTED uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
while read -r kind a b c rest; do
  case "$kind" in
    thp) echo "$a" > /sys/kernel/mm/transparent_hugepage/enabled ;;
    # pool NODE KIB COUNT: the node's pool of that page size (1 GiB pages come from the
    # kernel command line: only boot reliably finds 1 GiB of free, aligned memory).
    pool) echo "$c" > "/sys/devices/system/node/node$a/hugepages/hugepages-${b}kB/nr_hugepages" ;;
  esac
done < /numavm.spec
cd /tmp
NUMAVM_GUEST=1 RUST_BACKTRACE=1 /numa_vm --ignored --exact guest --nocapture --test-threads=1
echo "NUMAVM-DONE rc=$? uptime=$(cut -d' ' -f1 /proc/uptime)"
# `numavm.shell` on the kernel command line: a shell on the console before powering off.
if grep -qw numavm.shell /proc/cmdline; then setsid cttyhack sh; fi
poweroff -f
