# syntax=docker/dockerfile:1
#
# HaloBuzz Ledger: the service (`halobuzz-api`) and the replay tools
# (`halobuzz-replay`) in a slim runtime image that runs as a non-root user.
#
#   docker build -t halobuzz-ledger .
#   docker run --env-file .env -p 5010:5010 halobuzz-ledger
#
# The image is production by default (APP_ENV=production): it refuses to
# start without real secrets, CORS_ORIGIN and METRICS_TOKEN, and it needs
# NATS_URL (the managed nats-server of `./scripts/run.sh` is for one
# machine, not for containers). deploy/compose.yaml runs the whole
# multi-node layout; README.md, "Running on several machines".

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# BuildKit caches: the registry and the target folder survive between
# builds, so that a change of code alone does not build every dependency
# again. The binaries are copied out of the cached folder in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p api -p replay-tools \
    && install -D -m 0755 target/release/halobuzz-api /out/halobuzz-api \
    && install -D -m 0755 target/release/halobuzz-replay /out/halobuzz-replay

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: TLS to MongoDB Atlas and Stripe; curl: the health check.
# Debian's security updates replace exact versions, so the release pins them.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 halobuzz \
    && useradd --system --uid 10001 --gid halobuzz --home-dir /var/lib/halobuzz --create-home halobuzz
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
WORKDIR /var/lib/halobuzz
ENV APP_ENV=production \
    PORT=5010 \
    DATA_DIR=/var/lib/halobuzz \
    LOG_FORMAT=json
EXPOSE 5010
# /health answers 200 when the log and the read store answer, 503 otherwise.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
    CMD ["sh", "-c", "curl -fsS --max-time 2 -o /dev/null \"http://127.0.0.1:${PORT}/health\" || exit 1"]
ENTRYPOINT ["halobuzz-api"]
