#!/usr/bin/env bash
# Private PostgreSQL for tests (see FACTS.md). Run as root.
#   scripts/pg-private.sh start DIR PORT   -> last stdout line: the SQLAlchemy URL
#   scripts/pg-private.sh stop DIR
# Listens on 127.0.0.1:PORT only, trust auth for user postgres, socket in DIR.
# DIR and its parents must be reachable by the postgres user (e.g. under /tmp, not /root).
set -euo pipefail

usage() { echo "usage: $0 start DIR PORT | stop DIR" >&2; exit 2; }

pg_bin() {
  local bin
  bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | tail -1 || true)
  if [[ -z "$bin" || ! -x "$bin/initdb" ]]; then
    echo "postgres binaries missing: installing postgresql" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    bin=$(ls -d /usr/lib/postgresql/*/bin | tail -1)
  fi
  echo "$bin"
}

as_pg() { runuser -u postgres -- "$@"; }

cmd=${1:-}
case "$cmd" in
  start)
    [[ $# -eq 3 ]] || usage
    dir=$2 port=$3
    [[ "$port" =~ ^[0-9]+$ ]] || usage
    bin=$(pg_bin)
    mkdir -p "$dir"
    dir=$(cd "$dir" && pwd)
    chown postgres:postgres "$dir"
    chmod 700 "$dir"
    if [[ ! -f "$dir/PG_VERSION" ]]; then
      as_pg "$bin/initdb" -D "$dir" -U postgres -A trust >&2
    fi
    if as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      port=$(sed -n 4p "$dir/postmaster.pid")  # the port it really listens on
      echo "server already running in $dir on port $port" >&2
    else
      as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w \
        -o "-c listen_addresses=127.0.0.1 -p $port -c unix_socket_directories=$dir" start >&2
    fi
    exists=$(as_pg "$bin/psql" -h 127.0.0.1 -p "$port" -U postgres -d postgres -tAc \
      "SELECT 1 FROM pg_database WHERE datname = 'hwnas_test'")
    if [[ "$exists" != "1" ]]; then
      as_pg "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres hwnas_test >&2
    fi
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/hwnas_test"
    ;;
  stop)
    [[ $# -eq 2 ]] || usage
    dir=$2
    bin=$(pg_bin)
    if as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
      as_pg "$bin/pg_ctl" -D "$dir" -w stop -m fast >&2
    else
      echo "no server running in $dir" >&2
    fi
    ;;
  *) usage ;;
esac
