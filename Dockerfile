# syntax=docker/dockerfile:1
# One Dockerfile for both services: `--build-arg SERVICE=storagesvc` (or booksvc).
# Dependencies are compiled in their own cached layer (cargo-chef), so editing our code
# rebuilds only our crates.
#
# The base images are build arguments, the official Rust and Debian images by default, so a
# machine without a registry can build this file as written from images of its own
# (`--build-arg RUST_IMAGE=... --build-arg RUNTIME_IMAGE=...`). Both must be Debian 12: the
# binary is linked against the builder's C library.
ARG RUST_IMAGE=rust:1-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# One builder for both services: its layers do not depend on SERVICE, so the second image's
# build finds every one of them cached and compiles nothing.
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# (cargo-chef 0.1 takes one package per cook; the second finds most of its crates built.)
RUN cargo chef cook --release --locked --recipe-path recipe.json -p storagesvc \
 && cargo chef cook --release --locked --recipe-path recipe.json -p booksvc
COPY . .
# The same two invocations as the cooks: one build of both would unify their features
# differently and compile a dozen dependencies again.
RUN cargo build --release --locked -p storagesvc --bin storagesvc \
 && cargo build --release --locked -p booksvc --bin booksvc

FROM ${RUNTIME_IMAGE} AS runtime
ARG SERVICE=storagesvc
ARG HTTP_PORT=8082
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin app
COPY --from=builder /app/target/release/${SERVICE} /usr/local/bin/service
USER app
ENV HTTP_PORT=${HTTP_PORT} LOG_FORMAT=json RUST_LOG=info
EXPOSE ${HTTP_PORT}
# No curl in the slim image: bash's /dev/tcp does one GET of the liveness probe.
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${HTTP_PORT##*:} && printf 'GET /healthz/live HTTP/1.0\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/service"]
