#!/usr/bin/env bash
# Build an emulated aarch64 board: a Debian arm64 root with python3.11 and the aarch64 TVM wheel,
# run under qemu-user (no binfmt_misc registration needed).
#   scripts/arm-board.sh ROOT      builds ROOT (idempotent: ROOT/.ready marks a finished build)
# Then, to serve TVM RPC on it (what tests/arm_board does):
#   PYTHONPATH=ROOT/site ROOT/pyw -m tvm.exec.rpc_server --host 127.0.0.1 --port P \
#       --port-end P+9 --tracker 127.0.0.1:T --key KEY
# Needs root for apt (qemu-user-static, the arm64 debs); downloads ~150 MB once.
set -euo pipefail
root=${1:?usage: scripts/arm-board.sh ROOT}
[ -f "$root/.ready" ] && exit 0
mkdir -p "$root"
root=$(cd "$root" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! command -v qemu-aarch64-static >/dev/null 2>&1; then
  [ "$(id -u)" -eq 0 ] || { echo "arm-board: qemu-user-static is missing (run as root, or: sudo apt-get install qemu-user-static)" >&2; exit 1; }
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends qemu-user-static >&2
fi
if ! dpkg --print-foreign-architectures | grep -qx arm64; then
  [ "$(id -u)" -eq 0 ] || { echo "arm-board: dpkg needs the arm64 architecture (run as root: dpkg --add-architecture arm64 && apt-get update)" >&2; exit 1; }
  dpkg --add-architecture arm64
  apt-get update -qq >&2
fi

debs=(libc6 python3.11-minimal libpython3.11-minimal libpython3.11-stdlib zlib1g libexpat1
  libssl3 libffi8 libbz2-1.0 liblzma5 libgcc-s1 libstdc++6 libsqlite3-0 libuuid1 libncursesw6
  libtinfo6 libreadline8 libdb5.3 libgdbm6 libnsl2 libtirpc3 libcrypt1 libgssapi-krb5-2
  libkrb5-3 libk5crypto3 libkrb5support0 libcom-err2 libkeyutils1)
(cd "$work" && apt-get download -qq $(printf '%s:arm64 ' "${debs[@]}") media-types >&2)
for d in "$work"/*.deb; do dpkg -x "$d" "$root"; done

mkdir -p "$root/site"
"${PYTHON:-python3}" -m pip download -q --only-binary=:all: --no-deps -d "$work/wheels" \
  --platform manylinux_2_28_aarch64 --platform manylinux_2_27_aarch64 \
  --platform manylinux2014_aarch64 --python-version 3.11 \
  apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 numpy==2.4.6 ml_dtypes psutil \
  cloudpickle tornado typing_extensions >&2
for w in "$work"/wheels/*.whl; do "${PYTHON:-python3}" -m zipfile -e "$w" "$root/site"; done

# TVM's RPC server starts its workers with sys.executable: the kernel cannot exec an aarch64
# binary without binfmt, so sys.executable is this wrapper (-0 sets argv[0]).
cat > "$root/pyw" <<EOF
#!/bin/sh
exec qemu-aarch64-static -L "$root" -0 "$root/pyw" "$root/usr/bin/python3.11" "\$@"
EOF
chmod +x "$root/pyw"
PYTHONPATH="$root/site" "$root/pyw" -c "import tvm, numpy; print('arm-board: tvm', tvm.__version__, 'numpy', numpy.__version__)" >&2
touch "$root/.ready"
