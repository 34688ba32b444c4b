#!/usr/bin/env bash
# Set up .venv with the dev extra (installing only when pyproject.toml changed) and run the
# whole test suite. Extra arguments go to pytest (e.g. `bash scripts/test.sh -k cost -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv dev
# pytest exits 5 when it collects no test: that fails here as any other non-zero exit.
exec .venv/bin/python -m pytest "$@"
