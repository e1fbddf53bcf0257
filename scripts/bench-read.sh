#!/usr/bin/env bash
# The read-path benchmark (docs/benchmarks.md): installs wrk if missing, builds the bench in
# release, runs it. Starts its own private PostgreSQL, Redis and RabbitMQ; stops by itself.
# Settings: BENCH_SECONDS (10), BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CONNECTIONS (64),
# BENCH_OUTAGE_SECONDS (20).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y wrk || { $sudo apt-get update && $sudo apt-get install -y wrk; }
fi

cargo build --release -p booksvc --example read_bench --bin booksvc
exec target/release/examples/read_bench
