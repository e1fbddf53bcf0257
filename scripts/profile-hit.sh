#!/usr/bin/env bash
# Instructions per fresh hit (docs/benchmarks.md): installs valgrind if missing, builds
# `hit_profile` in release, runs booksvc and a bare axum handler under callgrind with a fixed
# number of sequential requests. Starts its own private PostgreSQL, Redis and RabbitMQ; stops
# by itself. Settings: PROFILE_REQUESTS (20000), PROFILE_WARMUP (2000), PROFILE_DIR
# (target/profile-hit: the dumps, for callgrind_annotate or kcachegrind).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v valgrind >/dev/null; then
  echo "installing valgrind (Debian package)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y valgrind || { $sudo apt-get update && $sudo apt-get install -y valgrind; }
fi

cargo build --release -p booksvc --example hit_profile --bin booksvc
exec target/release/examples/hit_profile
