#!/usr/bin/env bash
# Runs every test of the workspace, on a fresh machine as on a developer's:
# installs what the tests need, checks formatting and lints, then runs the tests.
#
#   scripts/test.sh            # everything
#   SKIP_LINT=1 scripts/test.sh  # tests only
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '\n==> %s\n' "$*"; }

# A fresh clone builds once: incremental state would only take disk space.
if [[ -n "${CI:-}" ]]; then
    export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
fi

# --- what the tests need ----------------------------------------------------------
source scripts/install-test-deps.sh

# --- lint -----------------------------------------------------------------------
if [[ -z "${SKIP_LINT:-}" ]]; then
    log "cargo fmt --check"
    cargo fmt --all -- --check
    log "cargo clippy"
    cargo clippy --workspace --all-targets --locked -- -D warnings
fi

# --- tests ----------------------------------------------------------------------
log "build"
cargo build --workspace --all-targets --locked
if command -v cargo-nextest >/dev/null 2>&1; then
    log "cargo nextest run"
    cargo nextest run --workspace --locked --no-fail-fast
else
    log "cargo test"
    cargo test --workspace --locked --no-fail-fast
fi
log "doc tests"
cargo test --workspace --doc --locked
