#!/usr/bin/env bash
# Feature `hwloc` (built by clippy/doc --all-features and by .ci/steps/46-hwloc.sh) links the
# system hwloc through hwlocality-sys, found with pkg-config; libudev-dev is in hwloc's
# Libs.private. Idempotent: installs only what is missing.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
need=()
for p in libhwloc-dev libudev-dev pkg-config; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get -qq update
  apt-get -qq install -y "${need[@]}" >/dev/null
fi
pkg-config --modversion hwloc
