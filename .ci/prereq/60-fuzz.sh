#!/usr/bin/env bash
# Prerequisites of .ci/steps/60-fuzz.sh: a nightly toolchain, a C++ compiler (libfuzzer-sys
# builds libFuzzer) and cargo-fuzz. Idempotent; runs as root with DEBIAN_FRONTEND=noninteractive.
set -euo pipefail
if ! command -v c++ >/dev/null 2>&1; then
  apt-get -qq update && apt-get -qq install -y g++ >/dev/null
fi
if ! cargo +nightly --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
cargo +nightly fuzz --version
