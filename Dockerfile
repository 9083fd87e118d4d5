# hwnas service image: one image for api, scheduler, Ray head/workers, optuna-dashboard, RPC tracker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0

# build-essential: TVM export_library links with gcc; gcc-aarch64-linux-gnu: ARM cross-export.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential gcc-aarch64-linux-gnu \
    && rm -rf /var/lib/apt/lists/*

# CPU-only torch first (the default index would pull a multi-GB CUDA build); cached layer.
RUN pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu

WORKDIR /app
COPY . .
RUN pip install .

RUN useradd --create-home --uid 1000 hwnas \
    && mkdir -p /data/artifacts && chown hwnas:hwnas /data/artifacts
USER hwnas

EXPOSE 8000
CMD ["hwnas", "serve", "--host", "0.0.0.0", "--port", "8000"]
