#!/bin/bash
# Roles of the hwnas image (docker-compose.yml, or any orchestrator: see README "Deploy"):
#   migrate      bring the database schema (hwnas + Optuna tables) up to date, then exit
#   api          the REST API on :8000
#   scheduler    join the Ray cluster as a node with no CPUs, then run the scheduler on it
#   ray-head     the Ray head (GCS on :6380), no CPUs for trials by default
#   ray-worker   a Ray worker node (HWNAS_RAY_WORKER_CPUS CPUs; default: what it sees)
#   dashboard    optuna-dashboard on :8080 for one operator, no login (the stack serves it
#                behind accounts at the API's /dashboard/); database URL from HWNAS_DATABASE_URL
#   rpc-tracker  TVM's RPC tracker on :9190 (ARM boards register with it)
# Anything else is run as a command.
set -euo pipefail
role=${1:-api}
[ $# -gt 0 ] && shift
head=${HWNAS_RAY_HEAD:-ray-head:6380}
ray_opts=()
[ -n "${HWNAS_RAY_OBJECT_STORE_BYTES:-}" ] && ray_opts+=(--object-store-memory="$HWNAS_RAY_OBJECT_STORE_BYTES")

wait_for_head() {  # ray start gives up quickly when the head is not up yet
  for _ in $(seq 1 60); do
    python3 -c "import socket,sys; h,p='$head'.rsplit(':',1); socket.create_connection((h,int(p)),2)" 2>/dev/null && return 0
    sleep 2
  done
  echo "hwnas-entrypoint: Ray head $head not reachable after 120 s" >&2; exit 1
}

case "$role" in
  migrate)
    exec hwnas migrate "$@" ;;
  api)
    exec hwnas api --host 0.0.0.0 --port "${HWNAS_API_PORT:-8000}" "$@" ;;
  scheduler)
    # A Ray driver needs a local raylet: this container joins the cluster as a node that runs
    # nothing (0 CPUs), and the scheduler attaches to it (address "auto").
    wait_for_head
    ray start --address="$head" --num-cpus=0 --num-gpus=0 --disable-usage-stats "${ray_opts[@]}"
    export HWNAS_RAY_ADDRESS=auto
    exec hwnas scheduler "$@" ;;
  ray-head)
    exec ray start --head --port="${head##*:}" --num-cpus="${HWNAS_RAY_HEAD_CPUS:-0}" \
      --dashboard-host=0.0.0.0 --disable-usage-stats --block "${ray_opts[@]}" "$@" ;;
  ray-worker)
    wait_for_head
    [ -n "${HWNAS_RAY_WORKER_CPUS:-}" ] && ray_opts+=(--num-cpus="$HWNAS_RAY_WORKER_CPUS")
    exec ray start --address="$head" --disable-usage-stats --block "${ray_opts[@]}" "$@" ;;
  dashboard)
    exec hwnas dashboard --host 0.0.0.0 --port "${HWNAS_DASHBOARD_PORT:-8080}" "$@" ;;
  rpc-tracker)
    exec python3 -m tvm.exec.rpc_tracker --host 0.0.0.0 --port "${HWNAS_RPC_TRACKER_PORT:-9190}" "$@" ;;
  *)
    exec "$role" "$@" ;;
esac
