#!/usr/bin/env bash
# Installs what the test suite needs; sourced by scripts/test.sh, safe to run again.
set -euo pipefail

have() { command -v "$1" >/dev/null 2>&1; }

if ! have cargo; then
    echo "cargo is required (https://rustup.rs)" >&2
    exit 1
fi
if ! have cargo-nextest; then
    echo "==> installing cargo-nextest"
    cargo install cargo-nextest --locked || echo "cargo-nextest unavailable; falling back to cargo test"
fi
if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add rustfmt clippy
fi
