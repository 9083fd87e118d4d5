#!/usr/bin/env bash
# System packages hwnas needs beyond Python: installs only what is missing (Debian/Ubuntu, root).
#   docker-compose        validates docker-compose.yml in the tests (no engine needed)
#   postgresql            a private server for the PostgreSQL tests (scripts/with-postgres.sh)
#   gcc, g++              TVM's export_library links compiled models
#   gcc-aarch64-linux-gnu, binutils-aarch64-linux-gnu, libc6-dev-arm64-cross (crti.o, libc)
#                         cross-compile models for the ARM profiles (arm/rasp4b64, arm/rasp5)
#   dataset-fashion-mnist Fashion-MNIST at /usr/share/datasets/fashion-mnist
#   chromium              the job report's test opens report.html in headless Chromium
#   docker.io, debootstrap the compose stack test builds images from Debian packages and runs them
set -euo pipefail
need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v gcc >/dev/null 2>&1 || need+=(gcc)
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v aarch64-linux-gnu-gcc >/dev/null 2>&1 || need+=(gcc-aarch64-linux-gnu)
command -v aarch64-linux-gnu-readelf >/dev/null 2>&1 || need+=(binutils-aarch64-linux-gnu)
[ -f /usr/aarch64-linux-gnu/lib/crti.o ] || need+=(libc6-dev-arm64-cross)
[ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || need+=(dataset-fashion-mnist)
[ -x /usr/bin/chromium ] || need+=(chromium)
command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
if [ ${#need[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" -ne 0 ]; then
  echo "missing system packages: ${need[*]} (run as root, or: sudo apt-get install ${need[*]})" >&2
  exit 0
fi
echo "installing system packages: ${need[*]}" >&2
apt-get update -qq >&2
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
