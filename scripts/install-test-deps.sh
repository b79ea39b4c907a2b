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
XDS_PROTOS_VERSION=1.85.0
if [[ ! -x .venv/bin/python ]] || ! .venv/bin/python -c "import grpc, sys, envoy.service.secret.v3.sds_pb2_grpc; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
    echo "==> installing Python test clients into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet "grpcio==$GRPCIO_VERSION" "xds-protos==$XDS_PROTOS_VERSION"
fi

# Debian packages, installed as root (or through sudo).
apt_install() {
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        if ! have sudo; then
            echo "the tests need Debian's $* package(s): install them as root" >&2
            return 1
        fi
        sudo=(sudo)
    fi
    local apt_get=("${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get -q -y -o Dpkg::Use-Pty=0)
    if [[ -z ${APT_UPDATED:-} ]]; then
        "${apt_get[@]}" update >/dev/null
        APT_UPDATED=1
    fi
    "${apt_get[@]}" install --no-install-recommends "$@" >/dev/null
}

# PostgreSQL server binaries, for mesh-testkit's PostgresServer (citadel's ledger and
# mixer-policy's SQL quota tests). Only the binaries: each test runs its own server on
# a temporary directory, so Debian's default cluster is neither created nor started.
have_postgres_server() {
    have initdb || compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null
}
if ! have_postgres_server; then
    echo "==> installing PostgreSQL server binaries"
    apt_install postgresql-common
    if [[ $(id -u) -ne 0 ]]; then sudo=(sudo); else sudo=(); fi
    "${sudo[@]}" sed -i -E 's/^#?[[:space:]]*create_main_cluster[[:space:]]*=.*/create_main_cluster = false/' \
        /etc/postgresql-common/createcluster.conf
    apt_install postgresql
    if ! have_postgres_server; then
        echo "PostgreSQL server binaries still missing after installing postgresql" >&2
        exit 1
    fi
fi

# A Prometheus server, for mixer-telemetry's end-to-end test (each test starts its own
# on a temporary directory; the package's service is not needed).
if ! have prometheus; then
    echo "==> installing the Prometheus server"
    apt_install prometheus
    if ! have prometheus; then
        echo "prometheus still missing after installing it" >&2
        exit 1
    fi
fi

# Headless Chromium, for the service-graph page test of mixer-telemetry.
if ! have chromium; then
    echo "==> installing Chromium"
    apt_install chromium
    if ! have chromium; then
        echo "chromium still missing after installing it" >&2
        exit 1
    fi
fi
