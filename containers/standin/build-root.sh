#!/usr/bin/env bash
# Builds the Debian 13 ("trixie") root filesystem holding the server versions compose ships,
# RabbitMQ 4.0 (Erlang 27) and PostgreSQL 17, for the test kit's local backend
# (TESTKIT_RABBITMQ_ROOT / TESTKIT_POSTGRES_ROOT) and for the stand-in images of those
# versions (containers/standin/build.sh). Idempotent and cached per machine:
#
#   debootstrap --variant=minbase --include=<servers> trixie, once per package list, kept as a
#   tarball in $BOOKSTORE_IMAGE_CACHE (as build.sh keeps Debian 12's) and unpacked next to it
#   as a directory the test kit chroots into. A present directory makes this a no-op.
#
# Prints the directory on stdout (messages go to stderr):
#   root=$(sudo bash containers/standin/build-root.sh)
#   TESTKIT_RABBITMQ_ROOT=$root TESTKIT_POSTGRES_ROOT=$root cargo test ...
#
# The mirror is the one this machine's apt uses (DEBIAN_MIRROR overrides): trixie lives next
# to bookworm there. Why a root filesystem rather than the packages on this machine:
# docs/decisions/0011-server-version-matrix.md.
set -euo pipefail
self=$(readlink -f "$0")

CACHE=${BOOKSTORE_IMAGE_CACHE:-/var/cache/bookstore-images}
SUITE=trixie
PACKAGES=rabbitmq-server,postgresql-17,ca-certificates,curl,procps

say() { printf 'standin-root: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and chroot need it)"

# The machine's Debian mirror: the first http(s) URI of its apt sources that serves "debian".
# (Missing files and no match are not errors: the default mirror is used.)
machine_mirror() {
  { cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources \
    2>/dev/null || true; } | { grep -oE 'https?://[^ ]+/debian/?( |$)' || true; } \
    | head -1 | tr -d ' ' | sed 's:/$::'
}
MIRROR=${DEBIAN_MIRROR:-$(machine_mirror)}
MIRROR=${MIRROR:-http://deb.debian.org/debian}

# What the root is made of: a change builds a new one (and the old ones are removed).
key=$(printf '%s\n' "$SUITE" "$PACKAGES" "$(sed -n '/^clean_root()/,/^}/p' "$self")" \
  | sha256sum | cut -c1-12)
tarball=$CACHE/rootfs-$SUITE-$key.tar
root=$CACHE/root-$SUITE-$key

# Leaves what the servers need: drops package caches, docs, and the cluster, node data and
# cookie the packages' install scripts created (every test server makes its own). A root for
# chroot needs name resolution for `localhost` (the RabbitMQ node names).
clean_root() {
  local dir=$1
  rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
    "$dir"/var/lib/apt/lists/* "$dir"/usr/share/doc/* "$dir"/usr/share/man/* \
    "$dir"/var/lib/postgresql/17/main "$dir"/etc/postgresql/17/main \
    "$dir"/var/lib/rabbitmq/mnesia "$dir"/var/lib/rabbitmq/.erlang.cookie \
    "$dir"/var/log/*.log "$dir"/tmp/*
  printf '127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$dir/etc/hosts"
}

build_tarball() {
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2 \
      || { apt-get update -q >&2 \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2; }
  }
  [ -e /usr/share/debootstrap/scripts/$SUITE ] \
    || die "this debootstrap does not know $SUITE; install a newer debootstrap"
  local work=$CACHE/work-$SUITE-$key
  rm -rf "$work"
  say "debootstrap $SUITE minbase + $PACKAGES from $MIRROR (a few minutes, once per machine)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work" "$MIRROR" \
    >"$CACHE/debootstrap-$SUITE.log" 2>&1 \
    || die "debootstrap failed; last lines of $CACHE/debootstrap-$SUITE.log: $(tail -5 "$CACHE/debootstrap-$SUITE.log")"
  clean_root "$work"
  tar --numeric-owner -C "$work" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  say "cached the root filesystem as $tarball ($(du -h "$tarball" | cut -f1))"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-root-$SUITE"
flock 9 # two runs at once wait for each other rather than debootstrap twice

if [ -f "$root/.complete" ]; then
  say "reused $root"
else
  started=$(date +%s)
  [ -f "$tarball" ] || build_tarball
  rm -rf "$root.tmp"
  mkdir -p "$root.tmp"
  tar --numeric-owner -C "$root.tmp" -xf "$tarball"
  touch "$root.tmp/.complete"
  mv "$root.tmp" "$root"
  say "unpacked $root in $(($(date +%s) - started))s"
  # Roots and tarballs of earlier package lists are of no further use.
  for old in "$CACHE"/root-$SUITE-* "$CACHE"/rootfs-$SUITE-*.tar; do
    [ "$old" = "$root" ] || [ "$old" = "$tarball" ] || [ ! -e "$old" ] || rm -rf "$old"
  done
fi
versions=$(chroot "$root" dpkg-query -W -f='${Package} ${Version}, ' rabbitmq-server postgresql-17 \
  erlang-base 2>/dev/null || true)
say "$root: ${versions%, }"
echo "$root"
