#!/usr/bin/env bash
# The paged-list benchmark at size (docs/benchmarks.md): installs wrk if missing, builds the
# bench in release, runs it. Starts its own private PostgreSQL and Redis; stops by itself.
# Settings: BENCH_SIZES (1000,10000,100000), BENCH_PAGES (256), BENCH_SECONDS (10),
# BENCH_ROUNDS (3), BENCH_THREADS (2), BENCH_CONNECTIONS (16).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v wrk >/dev/null; then
  echo "installing wrk (Debian package)" >&2
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  $sudo apt-get install -y wrk || { $sudo apt-get update && $sudo apt-get install -y wrk; }
fi

cargo build --release -p booksvc --example page_bench
exec target/release/examples/page_bench
