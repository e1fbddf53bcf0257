#!/usr/bin/env bash
# Prepares a Docker-compatible container engine where none exists, and prints the DOCKER_HOST
# to use (`eval "$(bash scripts/container-engine.sh)"`). Idempotent.
#
# - A Docker engine already answers (`docker info`): nothing to do; prints its DOCKER_HOST.
# - Otherwise: installs podman + runc (Debian packages), configures them for this kind of
#   machine, starts `podman system service` on a socket in the background, checks that a
#   container really runs, and prints `export DOCKER_HOST=unix://...`.
#
# Messages go to stderr; stdout carries only the `export` line. Exits non-zero with the
# engine's own error when containers cannot run here.
#
# Why the configuration (docs/decisions/0008-standin-images.md):
# - runtime runc: crun refuses the hybrid cgroup v1/v2 layout of such machines;
# - cgroupfs + file events: there is no systemd to ask;
# - default ulimits at the machine's hard limits: podman's defaults (1048576 open files,
#   nproc above pid_max) make the runtime fail with "error setting rlimit ... operation not
#   permitted" when the engine lacks CAP_SYS_RESOURCE;
# - netavark + aardvark-dns: compose services find each other by name.
set -euo pipefail

STATE_DIR=${BOOKSTORE_ENGINE_STATE:-/var/lib/bookstore-engine}
SOCKET=${BOOKSTORE_ENGINE_SOCKET:-/run/podman/podman.sock}
CONF=/etc/containers/containers.conf
MARKER="# written by bookstore scripts/container-engine.sh"
PROBE_IMAGE=localhost/bookstore-engine-probe:1

say() { printf 'container-engine: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# 1. An engine that already answers wins.
docker_answers() { command -v docker >/dev/null && timeout 10 docker info >/dev/null 2>&1; }
if docker_answers; then
  host=${DOCKER_HOST:-unix:///var/run/docker.sock}
  say "a Docker engine answers at $host; nothing to do"
  echo "export DOCKER_HOST=$host"
  exit 0
fi

# Everything below configures the machine: it needs root.
if [ "$(id -u)" -ne 0 ]; then exec sudo --preserve-env=BOOKSTORE_ENGINE_STATE,BOOKSTORE_ENGINE_SOCKET bash "$0" "$@"; fi

# 2. Packages.
need=()
for pkg in podman runc netavark aardvark-dns iptables; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q --no-install-recommends "${need[@]}" >&2 \
    || { apt-get update -q >&2 && apt-get install -y -q --no-install-recommends "${need[@]}" >&2; }
fi

# 3. Configuration, rewritten only when it differs (a foreign file is kept as .orig once).
nofile=$(ulimit -Hn)
[ "$nofile" = unlimited ] && nofile=1048576
nproc=$(ulimit -Hu)
pid_max=$(cat /proc/sys/kernel/pid_max)
if [ "$nproc" = unlimited ] || [ "$nproc" -gt "$pid_max" ]; then nproc=$pid_max; fi
wanted="$MARKER
[containers]
default_ulimits = [\"nofile=$nofile:$nofile\", \"nproc=$nproc:$nproc\"]
[engine]
runtime = \"runc\"
cgroup_manager = \"cgroupfs\"
events_logger = \"file\"
[network]
network_backend = \"netavark\""
if [ "$(cat "$CONF" 2>/dev/null)" != "$wanted" ]; then
  if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF" && [ ! -f "$CONF.orig" ]; then
    cp "$CONF" "$CONF.orig"
    say "kept the previous $CONF as $CONF.orig"
  fi
  mkdir -p "$(dirname "$CONF")"
  printf '%s\n' "$wanted" >"$CONF"
  say "wrote $CONF (runc, cgroupfs, ulimits nofile=$nofile nproc=$nproc, netavark)"
fi

# A bridge left by an earlier CNI-backed podman holds the same subnet as netavark's and
# swallows the route to the containers (ports answer nothing): it must go.
if ip link show cni-podman0 >/dev/null 2>&1; then
  ip link delete cni-podman0 && say "removed the stale cni-podman0 bridge"
fi

# 4. The API service, started once and reused while it answers.
mkdir -p "$STATE_DIR" "$(dirname "$SOCKET")"
api_answers() { curl -sf --max-time 5 --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; }
# A service started from a directory that was deleted since (a CI clone) still answers _ping,
# but every container start fails ("conmon: Failed to get working directory"): restart it.
pid=$(cat "$STATE_DIR/podman.pid" 2>/dev/null || true)
if [ -n "$pid" ] && [[ "$(readlink "/proc/$pid/cwd" 2>/dev/null)" == *"(deleted)" ]]; then
  say "podman service $pid runs in a deleted directory; restarting it"
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
fi
if ! api_answers; then
  pid=$(cat "$STATE_DIR/podman.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    say "podman service $pid does not answer; restarting it"
    kill "$pid" || true
    sleep 1
  fi
  rm -f "$SOCKET"
  # setsid + nohup: the service outlives this script and the shell that ran it. From `/`:
  # conmon inherits its working directory, and this script's may be deleted later.
  (cd / && exec setsid nohup podman system service --time=0 "unix://$SOCKET" \
    >>"$STATE_DIR/podman.log" 2>&1 </dev/null) &
  echo $! >"$STATE_DIR/podman.pid"
  for _ in $(seq 1 100); do api_answers && break; sleep 0.1; done
  api_answers || die "podman service did not answer on $SOCKET; see $STATE_DIR/podman.log: $(tail -5 "$STATE_DIR/podman.log")"
  say "podman service $(cat "$STATE_DIR/podman.pid") answers on $SOCKET (log: $STATE_DIR/podman.log)"
fi

# 5. A container must really run: a probe image of the host's /bin/sh and its libraries,
#    imported once (no registry needed).
if ! podman image exists "$PROBE_IMAGE"; then
  probe_root=$(mktemp -d)
  trap 'rm -rf "$probe_root"' EXIT
  mkdir -p "$probe_root/bin"
  cp /bin/sh "$probe_root/bin/"
  for lib in $(ldd /bin/sh | grep -o '/[^ ]*' | sort -u); do cp --parents -L "$lib" "$probe_root"; done
  tar -C "$probe_root" -c . | podman import --quiet - "$PROBE_IMAGE" >/dev/null
fi
if ! out=$(podman run --rm --network none "$PROBE_IMAGE" /bin/sh -c 'echo container-runs' 2>&1) \
  || [ "$out" != container-runs ]; then
  die "containers cannot run here: $out"
fi

echo "export DOCKER_HOST=unix://$SOCKET"
