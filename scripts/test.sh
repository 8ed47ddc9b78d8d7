#!/usr/bin/env bash
# From a fresh clone: install what is missing, then run the test suite (26 minutes on the
# reference machine's 2 cores, more on slower ones; the multi-process tests start real torchrun cohorts and SLURM jobs). Extra arguments go to
# pytest, e.g. `bash scripts/test.sh -m "not multiprocess"` for the fast unit tests only.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
