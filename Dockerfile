# Ringway in one image: the entrypoint is ringway-controlplane --spawn-dataplane, which serves route
# snapshots and runs, restarts and drains a ringway-dataplane child (exit statuses: docs/operations.md).
#
# Two builds, one runtime image (BuildKit: the default from Docker 23, DOCKER_BUILDKIT=1 on 20.10):
#   docker build -t ringway .
#       compiles in the official Rust image (needs a registry for it and for debian:bookworm-slim)
#   cargo build --release --bins -p ringway-controlplane -p ringway-dataplane
#   docker build --build-arg BINARIES=prebuilt -t ringway .
#       takes the host's target/release binaries (--build-arg PREBUILT_DIR=target/debug for a debug
#       build); needs only debian:bookworm-slim, which can be made from Debian's packages
# Both fetch one package (libcap2-bin) from the Debian mirror in the base image's apt sources.
#
#   docker run -d --name ringway --net=host --ulimit memlock=-1 --cap-drop=ALL --cap-add=NET_BIND_SERVICE \
#       --stop-timeout 50 -v /etc/ringway:/etc/ringway:ro -v ringway-state:/var/lib/ringway ringway
#   Docker 25 and later also need --security-opt seccomp=<a profile allowing io_uring>.
#
# Why each flag, the seccomp profile, and the base image without a registry: docs/operations.md, "Run in a
# container". There is no "# syntax=" line on purpose: it makes BuildKit pull its Dockerfile frontend from
# Docker Hub, and the built-in frontend (Docker 20.10 and later) has everything used here.

# Where the runtime image's binaries come from: "builder" (compiled below) or "prebuilt" (from the
# build context, built on the host with the same or an older glibc than the runtime's Debian release).
ARG BINARIES=builder
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

# The binaries built on the host. .dockerignore lets only these two files of target/release and
# target/debug into the build context; BuildKit skips whichever of the two stages is not selected.
FROM scratch AS prebuilt
ARG PREBUILT_DIR=target/release
COPY ${PREBUILT_DIR}/ringway-controlplane ${PREBUILT_DIR}/ringway-dataplane /out/

FROM ${BINARIES} AS binaries

FROM debian:${DEBIAN_RELEASE}-slim
# A fixed uid/gid, so a state volume keeps its owner across image versions.
ARG RINGWAY_UID=10001
RUN groupadd --system --gid "${RINGWAY_UID}" ringway \
    && useradd --system --uid "${RINGWAY_UID}" --gid ringway --home-dir /var/lib/ringway \
       --no-create-home --shell /usr/sbin/nologin ringway \
    && install -d -o ringway -g ringway -m 0750 /run/ringway /var/lib/ringway \
    && install -d -m 0755 /etc/ringway

COPY --from=binaries /out/ringway-controlplane /out/ringway-dataplane /usr/local/bin/
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
