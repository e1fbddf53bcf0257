#!/usr/bin/env bash
# CI's container part (called from .ci/run): the same integration tests through testcontainers,
# and compose end to end, on a machine without Docker or a registry. Prints the time of each
# part; fails loudly. Parts:
#   engine    scripts/container-engine.sh (podman where no Docker engine answers)
#   images    containers/standin/build.sh (cached per machine: seconds when present)
#   tests     a stated representative part of the suite with TESTKIT_BACKEND=containers:
#             testkit's server tests, storagesvc's API tests, booksvc's API tests
#   dockerfile scripts/dockerfile-build.sh: the Dockerfile as written, both services, with
#             stand-in base images (the first build on a machine compiles every dependency;
#             then cargo-chef's layer is cached and only our crates compile)
#   compose   scripts/compose-smoke.sh, on those images (RabbitMQ 4.0, PostgreSQL 17)
set -euo pipefail
cd "$(dirname "$0")/.."

timings=()
part() { # NAME COMMAND...: runs one part and records its time
  local name=$1 started
  shift
  printf '\n==> containers: %s\n' "$name"
  started=$(date +%s)
  "$@" || { echo "containers: $name FAILED after $(($(date +%s) - started))s" >&2; exit 1; }
  timings+=("$(printf '%-10s %4ss' "$name" "$(($(date +%s) - started))")")
}
report() {
  printf '\n==> containers: time per part\n'
  printf '  %s\n' "${timings[@]}"
}
trap report EXIT

engine() { eval "$(bash scripts/container-engine.sh)"; export DOCKER_HOST; }
container_tests() {
  TESTKIT_BACKEND=containers timeout 30m cargo test --locked --no-fail-fast \
    -p testkit -p storagesvc -p booksvc --test servers --test api
}

part engine engine
part images bash containers/standin/build.sh
part tests container_tests
part dockerfile bash scripts/dockerfile-build.sh
part compose bash scripts/compose-smoke.sh
