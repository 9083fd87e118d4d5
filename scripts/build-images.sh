#!/usr/bin/env bash
# Build hwnas's images from Debian packages alone (no Docker Hub): a bookworm base made by
# debootstrap and `docker import`, then `hwnas:latest` (api, scheduler, Ray nodes, dashboard,
# RPC tracker, migrate) and `hwnas-postgres:latest` (PostgreSQL 15) on that base.
#
#   bash scripts/build-images.sh            # make compose-images does the same
#
# Reproducible inputs: the base's rootfs is made once and kept as a tarball
# (HWNAS_IMAGE_CACHE, default /var/cache/hwnas; delete it to refresh Debian), Python packages
# are installed under deploy/constraints.txt (every version pinned), torch from the CPU wheel
# in /opt/wheels (or HWNAS_TORCH_WHEEL). Needs root (debootstrap) and a running dockerd.
set -euo pipefail
cd "$(dirname "$0")/.."
CACHE=${HWNAS_IMAGE_CACHE:-/var/cache/hwnas}
SUITE=bookworm
MIRROR=${HWNAS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
BASE=hwnas-base:$SUITE
TORCH_WHEEL=${HWNAS_TORCH_WHEEL:-$(ls /opt/wheels/torch-2.13.0+cpu-cp311-*.whl 2>/dev/null | head -1)}
CA=${HWNAS_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

docker info >/dev/null 2>&1 || { echo "error: dockerd is not answering (start it as root: dockerd &)" >&2; exit 2; }
[ -f "$TORCH_WHEEL" ] || { echo "error: no CPU torch wheel (set HWNAS_TORCH_WHEEL)" >&2; exit 2; }
[ -f "$CA" ] || { echo "error: no CA bundle at $CA (set HWNAS_CA_BUNDLE)" >&2; exit 2; }

if ! docker image inspect "$BASE" >/dev/null 2>&1; then
  tarball=$CACHE/$SUITE-minbase.tar
  if [ ! -f "$tarball" ]; then
    command -v debootstrap >/dev/null || { echo "error: debootstrap missing (apt-get install debootstrap)" >&2; exit 2; }
    rootfs=$CACHE/rootfs-$SUITE
    mkdir -p "$CACHE"
    [ -x "$rootfs/bin/sh" ] || debootstrap --variant=minbase "$SUITE" "$rootfs" "$MIRROR"
    rm -rf "$rootfs/var/cache/apt/archives/"*.deb "$rootfs/var/lib/apt/lists/"*
    tar --numeric-owner --sort=name -C "$rootfs" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  fi
  docker import --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["/bin/bash"]' "$tarball" "$BASE"
fi

# build inputs that live outside the tree, copied into the (git-ignored) build context
mkdir -p deploy/.build
cmp -s "$TORCH_WHEEL" "deploy/.build/$(basename "$TORCH_WHEEL")" || cp "$TORCH_WHEEL" deploy/.build/
cmp -s "$CA" deploy/.build/ca-certificates.crt || cp "$CA" deploy/.build/ca-certificates.crt

docker build -q -t hwnas-postgres:latest --build-arg BASE="$BASE" -f deploy/postgres.Dockerfile deploy
docker build -t hwnas:latest --build-arg BASE="$BASE" \
  --build-arg TORCH_WHEEL="$(basename "$TORCH_WHEEL")" -f Dockerfile .
echo "images: $BASE hwnas-postgres:latest hwnas:latest"
