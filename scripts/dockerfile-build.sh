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
# cargo-chef dependency layer and compiles only our crates. The builder stage is tagged too
# (localhost/bookstore-standin/builder:dev): untagged, its layers would be dangling images,
# which the prune below (or anyone's) removes, and the next build would compile every
# dependency again. Prints the time of each image.
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

build() { # TAG WHAT [ARG...]: one image from Dockerfile, as compose's build section describes it
  local tag=$1 what=$2 started
  shift 2
  started=$(date +%s)
  local args=(build -f Dockerfile -t "localhost/bookstore-standin/$tag"
    --build-arg "RUST_IMAGE=$rust_image" --build-arg "RUNTIME_IMAGE=$runtime_image"
    --label bookstore.standin.service=true "$@")
  # Docker format keeps the Dockerfile's HEALTHCHECK (podman's default OCI format drops it).
  [ "$ENGINE" = podman ] && args+=(--format docker)
  "$ENGINE" "${args[@]}" . >&2 || { say "building $what from Dockerfile FAILED"; exit 1; }
  say "$what: built from Dockerfile in $(($(date +%s) - started))s"
}

# The compiling: the builder stage, which both services' images share.
build builder:dev "the builder stage (dependencies, then our crates)" --target builder
build storagesvc:dev storagesvc --build-arg SERVICE=storagesvc --build-arg HTTP_PORT=8082
build booksvc:dev booksvc --build-arg SERVICE=booksvc --build-arg HTTP_PORT=8081
# Images the rebuild replaced are left untagged: remove ours (by label), nobody else's.
"$ENGINE" image prune -f --filter label=bookstore.standin.service=true >/dev/null 2>&1 || true
