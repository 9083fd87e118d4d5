#!/usr/bin/env bash
# Regenerate deploy/constraints.txt (every version the images install) from the project venv.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# Every Python package version the images install (pip -c): from \`pip freeze\` of the project venv"
  echo "# (make setup), torch excepted (the CPU wheel). Regenerate: bash scripts/lock-constraints.sh"
  .venv/bin/pip freeze | grep -v -E '^(-e |hwnas[= @]|torch==)'
} > deploy/constraints.txt
