#!/usr/bin/env bash
# From a fresh clone: install what is missing, then train the 3-member digits demo on CPU.
# Extra arguments are config overrides, e.g. `bash scripts/demo.sh train.epochs=5`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/cohort train configs/demo.yaml run_dir="runs/demo-$(date +%Y%m%d-%H%M%S)" "$@"
