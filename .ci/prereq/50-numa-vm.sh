#!/usr/bin/env bash
# Prerequisites of the multi-node NUMA tests (tests/numa_vm.rs, docs/numa-vm.md): QEMU to boot
# guests with several NUMA nodes under TCG, a Debian kernel to boot, and a static busybox for
# the guest's init. Idempotent: installs only what is missing. Takes ~1 min on a fresh machine.
set -euo pipefail
need=()
command -v qemu-system-x86_64 >/dev/null 2>&1 || need+=(qemu-system-x86)
compgen -G '/boot/vmlinuz-*' >/dev/null || need+=(linux-image-amd64)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed' \
  || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get -qq update
  apt-get -qq install -y --no-install-recommends "${need[@]}" >/dev/null
fi
qemu-system-x86_64 --version | head -1
ls /boot/vmlinuz-*
