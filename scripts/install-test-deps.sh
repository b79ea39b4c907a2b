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

# Python clients used by the end-to-end tests (gRPC's own xDS client), in .venv.
GRPCIO_VERSION=1.85.1
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
    echo "==> installing Python test clients into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet "grpcio==$GRPCIO_VERSION"
fi
