# dtq: one binary, every role a subcommand (work, reap, produce, inspect, admin, bench).
#
#   docker build -t dtq:latest .
#   docker run --rm -e DTQ_REDIS_URL=redis://host.docker.internal:6379 -p 9090:9090 dtq:latest
#   docker run --rm -e DTQ_REDIS_URL=... -p 9091:9091 dtq:latest reap
#
# Builder toolchain: Cargo.toml says rust-version 1.85, but the locked
# dependencies need more (hdrhistogram 7.6 and the icu 2.4 crates declare
# rust-version 1.88), so `--locked` fails on 1.85. The default below is the
# toolchain the project is developed and tested with; any 1.88+ works.
# Keep the builder on bookworm: its glibc must not be newer than the runtime's.
ARG RUST_VERSION=1.95

# ---------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# 1. Dependencies only: a placeholder lib and main against the real manifest
#    and lock file, so this layer is rebuilt only when they change.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src \
    && echo 'fn main() {}' > src/main.rs \
    && : > src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src \
        target/release/dtq target/release/dtq.d \
        target/release/libdtq.rlib target/release/libdtq.d \
        target/release/deps/dtq-* target/release/deps/libdtq-* \
        target/release/.fingerprint/dtq-*

# 2. The crate itself. The Lua scripts are embedded with include_str!
#    (src/broker/scripts.rs -> ../../lua/), so lua/ must be there too.
#    The placeholder's fingerprints are gone above, and the sources are
#    touched, so cargo cannot mistake the placeholder for an up-to-date build.
#    build.rs puts the commit into --version ("unknown" without .git).
COPY build.rs ./
COPY src ./src
COPY lua ./lua
# The release profile keeps line tables for readable panic backtraces (~70 MB
# binary); --build-arg STRIP=1 strips them (~12 MB).
ARG STRIP=0
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && if [ "$STRIP" = "1" ]; then strip target/release/dtq; fi \
    && ./target/release/dtq --version

# ---------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

# ca-certificates: rustls reads the system roots for rediss:// and --http.
# tini: the container's PID 1 (ENTRYPOINT below).
# Not version-pinned (DL3008): a pin breaks the build at the next Debian
# security update; rebuild the image regularly instead.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dtq \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin dtq

COPY --from=builder /build/target/release/dtq /usr/local/bin/dtq

# Numeric so Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

# 9090: `dtq work` /health /ready /metrics; 9091: `dtq reap` the same;
# 8080: `dtq serve` (the HTTP API, and its /health /ready /metrics).
EXPOSE 8080 9090 9091

# tini is PID 1: it reaps the zombies of --exec handlers' grandchildren that
# outlive their parent (orphans are re-parented to PID 1, and dtq is not
# PID 1), and forwards SIGTERM/SIGINT to dtq alone (no -g: the handlers of
# in-flight jobs must not get the signal). dtq handles SIGTERM itself: stops
# fetching, gives in-flight jobs --shutdown-grace, hands back the rest and
# exits 0; tini exits with dtq's status. Arguments still go to dtq
# (`docker run IMAGE reap`, Kubernetes `args:`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "dtq"]
CMD ["work"]
