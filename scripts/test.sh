#!/usr/bin/env bash
# Set up .venv with the dev extra (first run only) and run the whole test suite.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k cost -x`).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[dev]"
# pytest exits 5 when it collects no test: that fails here as any other non-zero exit.
exec .venv/bin/python -m pytest "$@"
