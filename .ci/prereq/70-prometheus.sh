#!/usr/bin/env bash
# Prerequisite of tests/fleet_prometheus.rs (run by `cargo test`): a real Prometheus server
# that the test starts on 127.0.0.1 to scrape three `numapin exporter`s. Only the binary is
# used; the Debian service it comes with is stopped and disabled so that it neither holds port
# 9090 nor scrapes anything. Idempotent; runs as root with DEBIAN_FRONTEND=noninteractive.
set -euo pipefail
if ! command -v prometheus >/dev/null; then
  apt-get -qq update
  apt-get -qq install -y --no-install-recommends prometheus >/dev/null
fi
if command -v systemctl >/dev/null && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl disable --now prometheus >/dev/null 2>&1 || true
fi
prometheus --version 2>&1 | head -1
