#!/usr/bin/env bash
# Builds the stand-in images for the official PostgreSQL, Redis and RabbitMQ images from
# Debian's packages, for machines where no registry can be reached. Idempotent and cached:
#
#   one Debian 12 rootfs (debootstrap --variant=minbase --include=<all three servers>) is built
#   once per package list and kept as a tarball in $BOOKSTORE_IMAGE_CACHE (machine-level, not
#   the repo); it is imported as a base image. Debian 13's root filesystem, with the versions
#   compose ships (RabbitMQ 4.0, PostgreSQL 17), comes from build-root.sh, cached the same
#   way, and is imported as a second base. The server images are thin layers on a base
#   (entrypoint, config), rebuilt only when their definitions in this directory change.
#
# Tags (what crates/testkit and docker-compose.standin.yaml use):
#   localhost/bookstore-standin/base:bookworm      Debian 12 (also the services' runtime)
#   localhost/bookstore-standin/base:trixie        Debian 13
#   localhost/bookstore-standin/postgres:17        on trixie: what postgres:17-alpine is
#   localhost/bookstore-standin/rabbitmq:4.0-management  on trixie: rabbitmq:4-management-alpine
#   localhost/bookstore-standin/redis:7            on bookworm
#   localhost/bookstore-standin/postgres:15        on bookworm: Debian 12's versions, next to
#   localhost/bookstore-standin/rabbitmq:3-management       the shipped ones
#
# Engine: podman when installed (scripts/container-engine.sh), else docker; CONTAINER_ENGINE
# overrides. Prints one line per image saying whether it was reused or built.
set -euo pipefail
self=$(readlink -f "$0")
cd "$(dirname "$self")"

CACHE=${BOOKSTORE_IMAGE_CACHE:-/var/cache/bookstore-images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
PACKAGES=postgresql,redis-server,redis-tools,rabbitmq-server,ca-certificates,curl,procps
PREFIX=localhost/bookstore-standin
BASE=$PREFIX/base:$SUITE
# name:tag=Containerfile=base suite[=build argument]
IMAGES=("postgres:15=postgres.Containerfile=bookworm=PG_MAJOR=15"
  "redis:7=redis.Containerfile=bookworm"
  "rabbitmq:3-management=rabbitmq.Containerfile=bookworm"
  "postgres:17=postgres.Containerfile=trixie=PG_MAJOR=17"
  "rabbitmq:4.0-management=rabbitmq.Containerfile=trixie")

if [ -n "${CONTAINER_ENGINE:-}" ]; then ENGINE=$CONTAINER_ENGINE
elif command -v podman >/dev/null; then ENGINE=podman
else ENGINE=docker; fi

say() { printf 'standin-images: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and the image store need it)"

# What the rootfs is made of, and what the thin layers are made of: a change rebuilds.
rootfs_key=$(printf '%s\n' "$SUITE" "$PACKAGES" "$(sed -n '/^clean_rootfs()/,/^}/p' "$self")" \
  | sha256sum | cut -c1-12)
defs_key=$(cat ./*.Containerfile ./*-entrypoint.sh | sha256sum | cut -c1-12)
tarball=$CACHE/rootfs-$SUITE-$rootfs_key.tar

label_of() { # image label -> value, empty when the image or label is missing
  "$ENGINE" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

# Leaves what the servers need; drops package caches, docs and the clusters/cookies the
# packages' install scripts created (each container makes its own at first start).
clean_rootfs() {
  local root=$1
  rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/cache/apt/*.bin \
    "$root"/var/lib/apt/lists/* "$root"/usr/share/doc/* "$root"/usr/share/man/* \
    "$root"/var/lib/postgresql/15/main "$root"/etc/postgresql/15/main \
    "$root"/var/lib/rabbitmq/mnesia "$root"/var/lib/rabbitmq/.erlang.cookie \
    "$root"/var/log/*.log "$root"/tmp/*
}

build_rootfs() {
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
  }
  local work=$CACHE/work-$rootfs_key
  rm -rf "$work"
  say "debootstrap $SUITE minbase + $PACKAGES (takes ~2 minutes, once per machine)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work" "$MIRROR" \
    >"$CACHE/debootstrap.log" 2>&1 \
    || die "debootstrap failed; last lines of $CACHE/debootstrap.log: $(tail -5 "$CACHE/debootstrap.log")"
  clean_rootfs "$work"
  tar --numeric-owner -C "$work" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  say "cached the rootfs as $tarball ($(du -h "$tarball" | cut -f1))"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock"
flock 9 # two runs at once wait for each other rather than debootstrap twice

if [ "$(label_of "$BASE" bookstore.standin.rootfs)" = "$rootfs_key" ]; then
  say "reused $BASE"
else
  [ -f "$tarball" ] || build_rootfs
  import=("$ENGINE" import)
  [ "$ENGINE" = podman ] && import+=(--quiet)
  "${import[@]}" --change "LABEL bookstore.standin.rootfs=$rootfs_key" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change 'CMD ["bash"]' "$tarball" "$BASE" >/dev/null
  say "imported $BASE from $tarball"
fi

# Debian 13's root filesystem (build-root.sh caches it; seconds when present), imported as is.
trixie_root=$(bash ./build-root.sh)
trixie_key=${trixie_root##*-}
TRIXIE=$PREFIX/base:trixie
if [ "$(label_of "$TRIXIE" bookstore.standin.rootfs)" = "$trixie_key" ]; then
  say "reused $TRIXIE"
else
  import=("$ENGINE" import)
  [ "$ENGINE" = podman ] && import+=(--quiet)
  tar --numeric-owner -C "$trixie_root" --exclude=./.complete -c . \
    | "${import[@]}" --change "LABEL bookstore.standin.rootfs=$trixie_key" \
      --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change 'CMD ["bash"]' - "$TRIXIE" >/dev/null
  say "imported $TRIXIE from $trixie_root"
fi

for entry in "${IMAGES[@]}"; do
  IFS== read -r name file suite build_arg <<<"$entry"
  tag=$PREFIX/$name
  if [ "$suite" = trixie ]; then base=$TRIXIE key=$trixie_key; else base=$BASE key=$rootfs_key; fi
  if [ "$(label_of "$tag" bookstore.standin.defs)" = "$defs_key" ] \
    && [ "$(label_of "$tag" bookstore.standin.rootfs)" = "$key" ]; then
    say "reused $tag"
    continue
  fi
  build=("$ENGINE" build -q -f "$file" -t "$tag" --build-arg "BASE=$base"
    --label "bookstore.standin.defs=$defs_key" --label "bookstore.standin.rootfs=$key")
  [ -n "$build_arg" ] && build+=(--build-arg "$build_arg")
  [ "$ENGINE" = podman ] && build+=(--format docker)
  "${build[@]}" . >/dev/null || die "building $tag failed"
  say "built $tag"
done

# Images replaced by this run are left untagged: remove ours (by label), nobody else's.
"$ENGINE" image prune -f --filter label=bookstore.standin.rootfs >/dev/null 2>&1 || true
