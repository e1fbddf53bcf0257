#!/usr/bin/env bash
# Builds the repository's Dockerfile as written, for both services, through the container
# engine of scripts/container-engine.sh, on a machine without a registry: the Dockerfile's base
# images are build arguments, given here as stand-ins (containers/standin/):
#   RUST_IMAGE     localhost/bookstore-standin/rust:machine   (build-rust.sh: Debian 12 + this
#                  machine's Rust toolchain and CA bundle)
#   RUNTIME_IMAGE  localhost/bookstore-standin/base:bookworm  (build.sh: Debian 12 minbase)
# Tags the images docker-compose.standin.yaml runs:
#   localhost/bookstore-standin/storagesvc:dev, localhost/bookstore-standin/booksvc:dev
#
# The engine keeps the Dockerfile's layers, so a rebuild after a source change reuses the
# cargo-chef dependency layer and compiles only our crates. Prints the time of each image.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'dockerfile-build: %s\n' "$*" >&2; }

eval "$(bash scripts/container-engine.sh)"
export DOCKER_HOST
if [ -n "${CONTAINER_ENGINE:-}" ]; then ENGINE=$CONTAINER_ENGINE
elif command -v podman >/dev/null; then ENGINE=podman
else ENGINE=docker; fi

bash containers/standin/build.sh
rust_image=$(bash containers/standin/build-rust.sh)
runtime_image=localhost/bookstore-standin/base:bookworm

build() { # SERVICE HTTP_PORT: one image, as compose's build section describes it
  local service=$1 port=$2 started
  started=$(date +%s)
  local args=(build -f Dockerfile -t "localhost/bookstore-standin/$service:dev"
    --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$runtime_image"
    --build-arg "SERVICE=$service" --build-arg "HTTP_PORT=$port"
    --label bookstore.standin.service=true)
  # Docker format keeps the Dockerfile's HEALTHCHECK (podman's default OCI format drops it).
  [ "$ENGINE" = podman ] && args+=(--format docker)
  "$ENGINE" "${args[@]}" . >&2 || { say "building $service from Dockerfile FAILED"; exit 1; }
  say "$service: built from Dockerfile in $(($(date +%s) - started))s"
}

build storagesvc 8082
build booksvc 8081
# Images the rebuild replaced are left untagged: remove ours (by label), nobody else's.
"$ENGINE" image prune -f --filter label=bookstore.standin.service=true >/dev/null 2>&1 || true
