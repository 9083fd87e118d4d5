#!/usr/bin/env bash
# Run a command with HWNAS_TEST_PG pointing at a private PostgreSQL on 127.0.0.1, then stop it.
# When HWNAS_TEST_PG is already set, or this is not root, the command just runs as it is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${HWNAS_TEST_PG:-}" ] || [ "$(id -u)" -ne 0 ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  exec "$@"
fi
dir=$(mktemp -d /tmp/hwnas-pg.XXXXXX)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cleanup() { "$here/pg-private.sh" stop "$dir" >/dev/null 2>&1 || true; rm -rf "$dir"; }
trap cleanup EXIT
HWNAS_TEST_PG=$("$here/pg-private.sh" start "$dir" "$port" 2>"$dir.log" | tail -1)
export HWNAS_TEST_PG
export HWNAS_TEST_PG_DIR="$dir"
echo "private PostgreSQL for tests: $HWNAS_TEST_PG" >&2
"$@"
