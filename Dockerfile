# syntax=docker/dockerfile:1
#
# Ringway in one image: the entrypoint is ringway-controlplane --spawn-dataplane, which serves route
# snapshots and runs, restarts and drains a ringway-dataplane child (exit statuses: docs/operations.md).
#
#   docker build -t ringway .
#   docker run --net=host --ulimit memlock=-1 --security-opt seccomp=<profile allowing io_uring> \
#       --stop-timeout 50 -v /etc/ringway/services.toml:/etc/ringway/services.toml:ro ringway
#
# Why each run flag is needed, and the seccomp profile: docs/operations.md, "Run in a container".

# The toolchain Ringway is developed and tested with (the workspace's rust-version is the minimum).
ARG RUST_VERSION=1.95
# Builder and runtime on the same Debian release, so the binaries link against the glibc they run with.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS builder
WORKDIR /src
# Every workspace member is needed for cargo to load the workspace, even to build two of its packages.
COPY Cargo.toml Cargo.lock ./
COPY shared shared
COPY controlplane controlplane
COPY dataplane dataplane
COPY tests tests
COPY tools/devtools tools/devtools
COPY tools/bench-harness tools/bench-harness
COPY benches benches
# Cache mounts keep the registry and the target directory between builds (BuildKit); the binaries are
# copied out of the cached target directory, which is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins -p ringway-controlplane -p ringway-dataplane \
    && install -D -m 0755 -t /out target/release/ringway-controlplane target/release/ringway-dataplane

FROM debian:${DEBIAN_RELEASE}-slim
# A fixed uid/gid, so a state volume keeps its owner across image versions.
ARG RINGWAY_UID=10001
RUN groupadd --system --gid "${RINGWAY_UID}" ringway \
    && useradd --system --uid "${RINGWAY_UID}" --gid ringway --home-dir /var/lib/ringway \
       --no-create-home --shell /usr/sbin/nologin ringway \
    && install -d -o ringway -g ringway -m 0750 /run/ringway /var/lib/ringway \
    && install -d -m 0755 /etc/ringway

COPY --from=builder /out/ringway-controlplane /out/ringway-dataplane /usr/local/bin/
# The dataplane runs as ringway but may listen on ports below 1024: with --net=host the host's
# net.ipv4.ip_unprivileged_port_start applies, and Docker gives a non-root user no effective
# capabilities, so the binary carries cap_net_bind_service as a file capability (libcap2-bin is only
# needed for this step and removed again). Does not work with --security-opt no-new-privileges.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_bind_service=+ep /usr/local/bin/ringway-dataplane \
    && apt-get purge -y --auto-remove libcap2-bin \
    && rm -rf /var/lib/apt/lists/*

# The example services file, so the image starts as it is; mount your own over it.
COPY examples/services.toml /etc/ringway/services.toml
# Health check without curl (the image has none): bash's /dev/tcp.
COPY tools/docker/healthcheck /usr/local/bin/ringway-healthcheck

# Defaults, each overridable with -e (every variable: tools/systemd/ringway.env, or --help).
ENV RINGWAY_SERVICES=/etc/ringway/services.toml \
    RINGWAY_SOCKET=/run/ringway/control.sock \
    RINGWAY_STATE_FILE=/var/lib/ringway/dataplane.snapshot \
    STATUS_ENDPOINT=0.0.0.0:9090 \
    RINGWAY_LOG_FORMAT=text \
    RUST_LOG=info

# The admin endpoint (/status, /stats, /metrics) and the example service's listener. With --net=host
# (recommended) ports are not published and these are documentation; the services file decides.
EXPOSE 9090 18080

USER ${RINGWAY_UID}:${RINGWAY_UID}
# Healthy while /status answers 200 OK; 503 (INITIALIZING before the first snapshot, DRAINING after
# SIGTERM) is unhealthy, which is what an orchestrator's traffic decisions want.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 CMD ["ringway-healthcheck"]
# SIGTERM: the supervisor forwards it to the dataplane (DRAINING for --drain-grace, then draining for up
# to --drain-timeout), then stops the controlplane. `docker stop` waits only 10 s by default: run with
# --stop-timeout 50 (or `docker stop -t 50`), above the supervisor's --dataplane-stop-timeout (45 s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["ringway-controlplane", "--spawn-dataplane"]
# Arguments for the controlplane; dataplane arguments go after "--", e.g. `... ringway --group-size 3 -- --workers 4`.
CMD []
