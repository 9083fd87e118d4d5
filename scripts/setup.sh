#!/usr/bin/env bash
# `make setup`, quietly: system packages, the venv, pip, hwnas with its pinned dependencies.
# One line per step; everything the steps print goes to a log, shown (its tail) only when a
# step fails. Usage: scripts/setup.sh PYTHON VENV
set -uo pipefail
cd "$(dirname "$0")/.."
python=$1
venv=$2
log=${HWNAS_SETUP_LOG:-build/setup.log}
mkdir -p "$(dirname "$log")"
: > "$log"
step() {
  local what=$1
  shift
  printf 'setup: %s ... ' "$what"
  local t0=$SECONDS
  if "$@" >> "$log" 2>&1; then
    echo "ok ($((SECONDS - t0)) s)"
  else
    local rc=$?
    echo "FAILED (exit $rc)"
    echo "---- the last 60 lines of $log ----"
    tail -n 60 "$log"
    exit "$rc"
  fi
}
step "system packages" bash scripts/setup-system.sh
step "virtual environment $venv" bash -c "test -x '$venv/bin/python' || '$python' -m venv '$venv'"
step "pip" "$venv/bin/python" -m pip install -q --upgrade pip
step "hwnas and its pinned dependencies" "$venv/bin/python" -m pip install -q -e '.[dev]'
echo "setup: done (log: $log)"
