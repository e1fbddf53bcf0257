#!/usr/bin/env bash
# CI's version matrix (called from .ci/run after the main `cargo test`, which ran every test on
# this machine's Debian 12 servers: RabbitMQ 3.10 and PostgreSQL 15). Runs the test binaries
# that talk to the broker or to PostgreSQL again on the versions compose ships, RabbitMQ 4.0
# and PostgreSQL 17, from Debian 13's packages in a root filesystem
# (containers/standin/build-root.sh, cached per machine) that the test kit's local backend
# chroots into. Why and what differs: docs/decisions/0011-server-version-matrix.md.
#
#   events    broker      topology, publisher, session, the three-node cluster
#   booksvc   consumer    retry tiers, DLQ, re-drive, outages, cluster nodes
#   booksvc   operations  per-service broker users, the management-UI browser test
#   storagesvc api        the HTTP API on PostgreSQL, the outbox and its relay
#   storagesvc metrics_memory
#   testkit   servers     the test kit's own PostgreSQL and RabbitMQ (single node and cluster)
#
# Every test binary says on stderr which server versions it ran ("testkit: RabbitMQ 4.0.5-…").
# Prints the time of each part. Needs root, like the local backend's PostgreSQL (chroot and a
# private mount namespace).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
started=$(date +%s)

printf '\n==> versions: the Debian 13 root filesystem (RabbitMQ 4.0, PostgreSQL 17)\n'
root=$($SUDO bash containers/standin/build-root.sh)
root_done=$(date +%s)

printf '\n==> versions: tests on RabbitMQ 4.0 and PostgreSQL 17 (%s)\n' "$root"
export TESTKIT_BACKEND=local TESTKIT_RABBITMQ_ROOT=$root TESTKIT_POSTGRES_ROOT=$root
# --workspace keeps the main step's feature set, so nothing is rebuilt; the target names are
# unique in the workspace except `api` and `metrics_memory`, which booksvc's binaries share
# with storagesvc's (booksvc's run too: they meet the broker as well).
rc=0
timeout 30m cargo test --workspace --locked --no-fail-fast \
  --test broker --test consumer --test operations --test servers \
  --test api --test metrics_memory || rc=$?

printf '\n==> versions: time per part\n'
printf '  %5ss  root filesystem (build or reuse)\n' "$((root_done - started))"
printf '  %5ss  tests on RabbitMQ 4.0 / PostgreSQL 17\n' "$(($(date +%s) - root_done))"
exit "$rc"
