# hwnas service image: one image for api, scheduler, Ray head/workers, migrate, optuna-dashboard
# and the TVM RPC tracker (deploy/entrypoint.sh picks the role). Built on a Debian bookworm base
# made from Debian's packages (debootstrap + docker import): `bash scripts/build-images.sh`.
ARG BASE=hwnas-base:bookworm
FROM ${BASE}

ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 RAY_USAGE_STATS_ENABLED=0 \
    PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

# python3: bookworm's 3.11 (the torch wheel is cp311); gcc/g++: TVM's export_library links;
# the aarch64 cross toolchain and libc6-dev-arm64-cross: ARM exports (crti.o, libc);
# tini reaps Ray's children; procps for ray stop / health checks.
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
       gcc-aarch64-linux-gnu binutils-aarch64-linux-gnu libc6-dev-arm64-cross \
       ca-certificates tini procps \
    && rm -rf /var/lib/apt/lists/*

# The build host's CA bundle (pip's TLS inside the build) and the CPU torch wheel (the index
# would pull a multi-GB CUDA build): both copied into deploy/.build by the build script.
ARG TORCH_WHEEL=torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl
COPY deploy/.build/ca-certificates.crt /tmp/build-ca.crt
COPY deploy/.build/${TORCH_WHEEL} /tmp/wheels/
COPY deploy/constraints.txt /tmp/constraints.txt
RUN python3 -m venv /opt/venv \
    && PIP_CERT=/tmp/build-ca.crt pip install -q /tmp/wheels/${TORCH_WHEEL} \
    && rm -rf /tmp/wheels

# the dependencies alone first (a cached layer while only the code changes), every version
# from deploy/constraints.txt
COPY pyproject.toml /tmp/pyproject.toml
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']['dependencies']))" > /tmp/requirements.txt \
    && PIP_CERT=/tmp/build-ca.crt pip install -q -c /tmp/constraints.txt -r /tmp/requirements.txt

WORKDIR /app
COPY . /app
RUN PIP_CERT=/tmp/build-ca.crt pip install -q --no-deps . && rm -f /tmp/build-ca.crt \
    && useradd --create-home --uid 1000 hwnas \
    && mkdir -p /data/artifacts/tuning /data/artifacts/probe-cache /data/artifacts/parents \
    && chown -R hwnas:hwnas /data \
    && install -m 0755 deploy/entrypoint.sh /usr/local/bin/hwnas-entrypoint

# Everything the services write lives under /data/artifacts (a volume shared by api, scheduler
# and Ray workers; a new named volume takes this directory's owner, uid 1000).
ENV HWNAS_ARTIFACT_DIR=/data/artifacts HWNAS_TUNING_DIR=/data/artifacts/tuning \
    HWNAS_PROBE_CACHE_DIR=/data/artifacts/probe-cache HOME=/home/hwnas
USER hwnas
WORKDIR /home/hwnas
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/hwnas-entrypoint"]
CMD ["api"]
