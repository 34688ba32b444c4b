#!/usr/bin/env bash
# Set up .venv (installing only when pyproject.toml changed) and run the main job on the
# embedded default. Extra arguments go to `nas demo` (e.g. `--trials 4 --budget 2`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv base
exec .venv/bin/nas demo "$@"
