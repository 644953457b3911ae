#!/usr/bin/env bash
# Prerequisites of the bench smoke step (.ci/steps/40-bench-smoke.sh): jq, to check the shape of
# `numapin bench --json`. Idempotent; runs as root with DEBIAN_FRONTEND=noninteractive.
set -euo pipefail
if ! command -v jq >/dev/null; then
  apt-get -qq update
  apt-get -qq install -y jq >/dev/null
fi
jq --version
