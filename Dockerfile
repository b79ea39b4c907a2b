# syntax=docker/dockerfile:1
#
# Dromon's container images, one target per component:
#
#   docker build --target pilot -t dromon/pilot:dev .
#
# Targets: galley, pilot, citadel, mixer-policy, mixer-telemetry, sidecar-injector,
# meshctl. Every image runs as the unprivileged user 10001 (uid 1337 is left to the
# proxies) and is Debian slim with curl, which its HEALTHCHECK uses to ask the
# monitoring port's /healthz.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
WORKDIR /src
COPY . .
# The binaries to build; a component whose crate is not in the tree is skipped here,
# and building its target then fails at its COPY with the binary's name.
ARG BINARIES="galley pilot citadel mixer-policy mixer-telemetry sidecar-injector meshctl"
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    packages=""; \
    for bin in $BINARIES; do \
        if [ -d "crates/$bin" ]; then packages="$packages -p $bin"; \
        else echo "skipping $bin: crates/$bin is not in this tree" >&2; fi; \
    done; \
    cargo build --release --locked $packages; \
    mkdir -p /out; \
    for bin in $BINARIES; do \
        if [ -f "target/release/$bin" ]; then install -m 0755 "target/release/$bin" /out/; fi; \
    done

# ---- common runtime -------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim AS runtime
RUN set -eu; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 dromon; \
    useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin dromon; \
    # State and certificate directories, owned by the runtime user so that named
    # volumes mounted there start out writable by it.
    mkdir -p /var/lib/dromon/citadel /var/lib/dromon/mixer-policy /var/lib/dromon/mixer-telemetry \
        /etc/dromon/config /etc/dromon/certs /etc/dromon/injector-certs; \
    chown -R 10001:10001 /var/lib/dromon /etc/dromon/certs /etc/dromon/injector-certs
USER 10001:10001
ENV DROMON_LOG_FORMAT=json
# Every component serves /healthz, /ready and /metrics on 15014.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:15014/healthz"]

# ---- components -----------------------------------------------------------------------
FROM runtime AS galley
COPY --from=builder /out/galley /usr/local/bin/galley
ENV GALLEY_CONFIG_DIR=/etc/dromon/config
# 9901 MCP (gRPC), 9902 MCP over mTLS (with --tls-dir), 15014 monitoring
EXPOSE 9901 9902 15014
ENTRYPOINT ["/usr/local/bin/galley"]

FROM runtime AS pilot
COPY --from=builder /out/pilot /usr/local/bin/pilot
# 15010 xDS, 15011 xDS over mTLS (with --tls-dir), 15014 monitoring and debug
EXPOSE 15010 15011 15014
ENTRYPOINT ["/usr/local/bin/pilot"]

FROM runtime AS citadel
COPY --from=builder /out/citadel /usr/local/bin/citadel
# 8060 CA gRPC (TLS), 15014 monitoring
EXPOSE 8060 15014
VOLUME ["/var/lib/dromon/citadel"]
ENTRYPOINT ["/usr/local/bin/citadel"]

FROM runtime AS mixer-policy
COPY --from=builder /out/mixer-policy /usr/local/bin/mixer-policy
# 9091 Check API / ext_authz / rate limit, 15004 the same over mTLS, 15014 monitoring
EXPOSE 9091 15004 15014
ENTRYPOINT ["/usr/local/bin/mixer-policy"]

FROM runtime AS mixer-telemetry
COPY --from=builder /out/mixer-telemetry /usr/local/bin/mixer-telemetry
# 9091 Report API / access logs, 15004 the same over mTLS, 15014 monitoring,
# 42422 the mesh metrics for Prometheus
EXPOSE 9091 15004 15014 42422
ENTRYPOINT ["/usr/local/bin/mixer-telemetry"]

FROM runtime AS sidecar-injector
COPY --from=builder /out/sidecar-injector /usr/local/bin/sidecar-injector
# 9443 admission webhook (HTTPS; a Service maps 443 to it), 15014 monitoring
EXPOSE 9443 15014
ENTRYPOINT ["/usr/local/bin/sidecar-injector"]

FROM runtime AS meshctl
COPY --from=builder /out/meshctl /usr/local/bin/meshctl
# meshctl is a command, not a server: no health check.
HEALTHCHECK NONE
ENTRYPOINT ["/usr/local/bin/meshctl"]
