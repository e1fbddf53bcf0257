#!/usr/bin/env bash
# Compose end to end, as a user would: bring up docker-compose.yaml with the stand-in override
# (docker-compose.standin.yaml) against the engine of scripts/container-engine.sh, then
#   curl booksvc (miss, then hit), publish an event through the management API and see it in
#   booksvc, stop postgres -> X-Cache: stale, start it -> fresh data again, stop the broker ->
#   writes still accepted;
# and tear everything down whatever happens (trap).
#
# Host ports are remapped to free ones in the effective configuration: a machine running this
# in CI has its own PostgreSQL/Redis/RabbitMQ on the standard ports and other stacks on
# 8081/8082. The services' images are built from the repository's Dockerfile as written, with
# stand-ins for its base images (scripts/dockerfile-build.sh; its layers are cached, so a
# rebuild after a source change compiles only our crates).
set -euo pipefail
cd "$(dirname "$0")/.."

PROJECT=${SMOKE_PROJECT:-bookstore-smoke}
# docker-compose.yaml requires the write token (no default): a fresh random one per run.
export STORAGESVC_WRITE_TOKEN=${STORAGESVC_WRITE_TOKEN:-smoke-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')}
TOKEN=$STORAGESVC_WRITE_TOKEN

say() { printf '\n--> %s\n' "$*" >&2; }
fail() { printf 'compose-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

# Engine and compose client (every image, stand-ins included, comes from dockerfile-build.sh below).
eval "$(bash scripts/container-engine.sh)"
command -v docker-compose >/dev/null || {
  say "installing docker-compose (Debian)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose >&2
}
if docker compose version >/dev/null 2>&1; then COMPOSE=(docker compose); else COMPOSE=(docker-compose); fi

say "building both services from Dockerfile (scripts/dockerfile-build.sh)"
bash scripts/dockerfile-build.sh

work=$(mktemp -d)
ticker=
teardown() {
  status=$?
  [ -n "$ticker" ] && kill "$ticker" 2>/dev/null
  if [ $status -ne 0 ] && [ -f "$work/compose.yaml" ]; then
    "${COMPOSE[@]}" -p "$PROJECT" -f "$work/compose.yaml" logs --tail 30 >&2 || true
  fi
  say "tearing down"
  [ -f "$work/compose.yaml" ] \
    && "${COMPOSE[@]}" -p "$PROJECT" -f "$work/compose.yaml" down -v --remove-orphans >&2 || true
  rm -rf "$work"
  exit $status
}
trap teardown EXIT INT TERM

# The effective configuration, without Prometheus and Grafana (below), with every published
# port moved to a free one. Debian's
# docker-compose (1.29) predates the top-level `name:` key: the project name is given with -p
# instead, so the copy it reads goes without it.
python3 - docker-compose.yaml "$work/base.yaml" <<'EOF'
import sys, yaml
config = yaml.safe_load(open(sys.argv[1]))
config.pop("name", None)
# Prometheus and Grafana have no stand-in images (no registry here): the smoke run leaves them
# out. Their configuration is checked by scripts/check-prometheus.sh, and the real Prometheus
# runs against both services in crates/e2e/tests/degradation/prometheus.rs.
for name in ("prometheus", "grafana"):
    config["services"].pop(name, None)
for name in ("promdata", "grafanadata"):
    config.get("volumes", {}).pop(name, None)
yaml.safe_dump(config, open(sys.argv[2], "w"), sort_keys=False)
EOF
"${COMPOSE[@]}" --project-directory . -p "$PROJECT" -f "$work/base.yaml" \
  -f docker-compose.standin.yaml config >"$work/merged.yaml"
python3 - "$work/merged.yaml" "$work/compose.yaml" "$work/ports" <<'EOF'
import socket, sys, yaml
src, dst, ports_out = sys.argv[1:]
config = yaml.safe_load(open(src))
def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
found = {}
for name, service in config["services"].items():
    remapped = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            port = dict(port, published=free_port())
            found[f"{name}_{port['target']}"] = port["published"]
        else:
            parts = str(port).split(":")
            parts[-2] = str(free_port())
            found[f"{name}_{parts[-1].split('/')[0]}"] = int(parts[-2])
            port = ":".join(parts)
        remapped.append(port)
    if remapped:
        service["ports"] = remapped
yaml.safe_dump(config, open(dst, "w"), sort_keys=False)
with open(ports_out, "w") as out:
    for key, value in found.items():
        out.write(f"PORT_{key}={value}\n")
EOF
# shellcheck disable=SC1091
. "$work/ports"
BOOKS=http://127.0.0.1:$PORT_booksvc_8081
STORAGE=http://127.0.0.1:$PORT_storagesvc_8082
MGMT=http://127.0.0.1:$PORT_rabbitmq_15672
RABBIT_METRICS=http://127.0.0.1:$PORT_rabbitmq_15692
compose() { "${COMPOSE[@]}" -p "$PROJECT" -f "$work/compose.yaml" "$@"; }

# Podman runs healthchecks from systemd timers; without systemd nobody runs them and
# `depends_on: service_healthy` would wait forever. Run them ourselves while the stack lives.
# (A string match, not `| grep -q`: grep's early exit would fail the pipe under pipefail.)
if [[ "$(docker version 2>/dev/null)" == *"Podman Engine"* ]]; then
  (while sleep 2; do
    for id in $(podman ps -q --filter "label=com.docker.compose.project=$PROJECT"); do
      podman healthcheck run "$id" >/dev/null 2>&1 || true
    done
  done) &
  ticker=$!
fi

# The images were just built from Dockerfile, as compose's build sections (with the stand-in
# override's base images) describe them: compose runs them rather than build again through
# the engine's Docker API.
say "docker-compose up ($PROJECT): booksvc $BOOKS, storagesvc $STORAGE, management $MGMT"
started=$(date +%s)
timeout 300 "${COMPOSE[@]}" -p "$PROJECT" -f "$work/compose.yaml" up -d --no-build >&2 \
  || fail "compose up"

# `get URL` -> "<status> <X-Cache> <body>" on one line.
get() {
  curl -s -o "$work/body" -D "$work/headers" -w '%{http_code}' --max-time 10 "$1" || echo 000
  printf ' %s %s\n' "$(grep -i '^x-cache:' "$work/headers" 2>/dev/null | tr -d '\r' | awk '{print $2}')" \
    "$(tr -d '\n' <"$work/body" 2>/dev/null)"
}
# `until_ok SECONDS WHAT COMMAND...`: retries COMMAND until it succeeds.
until_ok() {
  local seconds=$1 what=$2
  shift 2
  local deadline=$(($(date +%s) + seconds))
  until "$@" >/dev/null 2>&1; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "$what (within ${seconds}s); last answer: $(get "$BOOKS/books/2")"
    sleep 1
  done
  echo "ok: $what" >&2
}
answer_is() { # URL STATUS XCACHE [BODY-SUBSTRING]
  local got
  got=$(get "$1")
  [[ "$got" == "$2 $3 "* ]] && [[ "$got" == *"${4:-}"* ]]
}

until_ok 120 "booksvc ready" curl -sf "$BOOKS/healthz/ready"
echo "stack up in $(($(date +%s) - started))s" >&2

say "reads through booksvc"
until_ok 10 "GET /books/2 answers 200 (miss)" answer_is "$BOOKS/books/2" 200 miss
until_ok 10 "GET /books/2 again is a cache hit" answer_is "$BOOKS/books/2" 200 hit

say "an event published through the management API reaches booksvc's cache"
title="Published by hand $RANDOM"
event=$(printf '{"event_id":"%s","type":"book.updated","book_id":1,"version":1000,"book":{"id":1,"title":"%s","author":"Smoke","desc":"from the management API"}}' \
  "$(cat /proc/sys/kernel/random/uuid)" "$title")
body=$(python3 -c 'import json,sys; print(json.dumps({"properties":{"delivery_mode":2,"content_type":"application/json"},"routing_key":"book.updated","payload":sys.argv[1],"payload_encoding":"string"}))' "$event")
routed=$(curl -sf -u "${RABBITMQ_USER:-bookstore}:${RABBITMQ_PASS:-bookstore-dev}" -H 'Content-Type: application/json' \
  -d "$body" "$MGMT/api/exchanges/%2f/books/publish") || fail "publish through the management API"
[[ "$routed" == *'"routed":true'* ]] || fail "the event was not routed: $routed"
until_ok 20 "GET /books/1 shows the published title" answer_is "$BOOKS/books/1" 200 hit "$title"

say "RabbitMQ's Prometheus endpoint (what compose's Prometheus scrapes) reports the DLQ's depth"
dlq_depth() {
  local text
  text=$(curl -sf "$RABBIT_METRICS/metrics/detailed?family=queue_coarse_metrics") || return 1
  [[ "$text" == *'rabbitmq_detailed_queue_messages{vhost="/",queue="booksvc.book-changed.dlq"}'* ]]
}
until_ok 30 "rabbitmq_detailed_queue_messages for booksvc.book-changed.dlq on :15692" dlq_depth

say "postgres down: booksvc answers from its cache, stale"
compose stop postgres >&2
until_ok 60 "GET /books/2 answers 200 with X-Cache: stale" answer_is "$BOOKS/books/2" 200 stale

say "postgres back: fresh data again"
compose start postgres >&2
fresh() { local got; got=$(get "$BOOKS/books/2"); [[ "$got" == "200 hit "* || "$got" == "200 miss "* ]]; }
until_ok 120 "GET /books/2 answers 200 and is no longer stale" fresh

say "broker down: writes are still accepted (the outbox keeps the event)"
compose stop rabbitmq >&2
status=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST "$STORAGE/books" \
  -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -d '{"title":"Written while the broker is down","author":"Smoke","desc":"outbox"}')
[ "$status" = 201 ] || fail "POST /books with the broker down answered $status, expected 201"
echo "ok: POST /books answered 201 with the broker down" >&2

say "compose smoke passed in $(($(date +%s) - started))s"
