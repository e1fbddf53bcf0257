#!/usr/bin/env bash
# Builds the stand-in for the official Rust image (`rust:1-slim-bookworm`, the Dockerfile's
# RUST_IMAGE) on machines without a registry: Debian 12 minbase with a C toolchain, plus
#   - this machine's Rust toolchain (the sysroot of the `rustc` on PATH, without its docs);
#   - this machine's CA bundle, so cargo inside `docker build` trusts the same certificates
#     as cargo here (a registry proxy with its own CA included).
# Idempotent and cached like build.sh's images: the debootstrap tarball is kept in
# $BOOKSTORE_IMAGE_CACHE, and the image is rebuilt only when the toolchain, the package list
# or the CA bundle changes.
#
# Prints the image's tag on stdout (messages go to stderr):
#   RUST_IMAGE=$(sudo bash containers/standin/build-rust.sh)
#   podman build --build-arg RUST_IMAGE=$RUST_IMAGE ... .
set -euo pipefail
self=$(readlink -f "$0")

CACHE=${BOOKSTORE_IMAGE_CACHE:-/var/cache/bookstore-images}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
# What the official image carries for building crates that compile C (ring, for one).
PACKAGES=ca-certificates,gcc,libc6-dev,make,pkg-config
CA_BUNDLE=${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

if [ -n "${CONTAINER_ENGINE:-}" ]; then ENGINE=$CONTAINER_ENGINE
elif command -v podman >/dev/null; then ENGINE=podman
else ENGINE=docker; fi

say() { printf 'standin-rust: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and the image store need it)"
command -v rustc >/dev/null || die "no rustc on PATH: the image carries this machine's toolchain"
[ -f "$CA_BUNDLE" ] || die "no CA bundle at $CA_BUNDLE (set CA_BUNDLE)"

sysroot=$(rustc --print sysroot)
version=$(rustc --version | awk '{print $2}')
TAG=localhost/bookstore-standin/rust:machine

rootfs_key=$(printf '%s\n' "$SUITE" "$PACKAGES" | sha256sum | cut -c1-12)
tarball=$CACHE/rootfs-rust-$SUITE-$rootfs_key.tar
image_key=$(printf '%s\n' "$rootfs_key" "$(rustc -vV)" "$(sha256sum <"$CA_BUNDLE")" \
  "$(sed -n '/^assemble()/,/^}/p' "$self")" | sha256sum | cut -c1-12)

label_of() { # image label -> value, empty when the image or label is missing
  "$ENGINE" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true
}

build_tarball() {
  command -v debootstrap >/dev/null || {
    say "installing debootstrap"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap >&2
  }
  local work=$CACHE/work-rust-$rootfs_key
  rm -rf "$work"
  say "debootstrap $SUITE minbase + $PACKAGES (a few minutes, once per machine)"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$work" "$MIRROR" \
    >"$CACHE/debootstrap-rust.log" 2>&1 \
    || die "debootstrap failed; last lines of $CACHE/debootstrap-rust.log: $(tail -5 "$CACHE/debootstrap-rust.log")"
  rm -rf "$work"/var/cache/apt/archives/*.deb "$work"/var/cache/apt/*.bin \
    "$work"/var/lib/apt/lists/* "$work"/usr/share/doc/* "$work"/usr/share/man/* "$work"/tmp/*
  tar --numeric-owner -C "$work" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$work"
  say "cached the rootfs as $tarball ($(du -h "$tarball" | cut -f1))"
}

# The rootfs with the toolchain in /usr/local/rust and the machine's CA bundle, laid out as
# the official image is: cargo's installs go to $CARGO_HOME/bin, which is on PATH.
assemble() {
  local root=$1
  tar --numeric-owner -C "$root" -xf "$tarball"
  mkdir -p "$root/usr/local/rust" "$root/usr/local/cargo/bin"
  tar -C "$sysroot" --exclude=./share/doc -cf - . | tar -C "$root/usr/local/rust" -xf -
  cp "$CA_BUNDLE" "$root/etc/ssl/certs/ca-certificates.crt"
}

mkdir -p "$CACHE"
exec 9>"$CACHE/.lock-rust"
flock 9 # two runs at once wait for each other rather than debootstrap twice

if [ "$(label_of "$TAG" bookstore.standin.rust)" = "$image_key" ]; then
  say "reused $TAG"
else
  [ -f "$tarball" ] || build_tarball
  work=$(mktemp -d "$CACHE/rust-image.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  assemble "$work"
  import=("$ENGINE" import)
  [ "$ENGINE" = podman ] && import+=(--quiet)
  tar --numeric-owner -C "$work" -cf - . \
    | "${import[@]}" --change "LABEL bookstore.standin.rust=$image_key" \
      --change "ENV CARGO_HOME=/usr/local/cargo" \
      --change "ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
      --change 'CMD ["bash"]' - "$TAG" >/dev/null
  say "imported $TAG (rustc $version from $sysroot)"
  "$ENGINE" image prune -f --filter label=bookstore.standin.rust >/dev/null 2>&1 || true
fi
echo "$TAG"
