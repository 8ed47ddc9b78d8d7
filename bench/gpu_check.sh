#!/usr/bin/env bash
# The GPU check in one command, for a lent GPU machine without network (docs/results.md,
# "The GPU check"): installs the carried wheels/ (bench/gpu_wheels.sh) that the machine
# lacks, then runs bench/gpu_check.py, every row under its own limit, all within TOTAL_S.
#
#   bash bench/gpu_check.sh [--smoke] [RESULTS]   # default $OUT/gpu_check.json, else runs/gpu_check.json
#
# --smoke: without CUDA, run the rows on the CPU, small (bench/gpu_rehearsal.sh does, in a
# copy of that machine's Python). Environment: PY (default python3), TOTAL_S (the whole
# command, install included, default 470 s: under 8 minutes; the rows get what the install
# left, less 20 s).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
SMOKE=()
if [[ "${1:-}" == --smoke ]]; then
    SMOKE=(--smoke) && shift
fi
RESULTS=${1:-${OUT:+$OUT/gpu_check.json}}
RESULTS=${RESULTS:-runs/gpu_check.json}
export PYTHONPATH="$PWD/.gpu-site:$PWD${PYTHONPATH:+:$PYTHONPATH}"

# cohort.launch is the top-level launch/ folder, mapped by pyproject.toml when cohort is
# installed; run from the tree uninstalled, a link stands in for the mapping.
if [[ ! -e cohort/launch ]]; then
    ln -sfn ../launch cohort/launch  # -f: a dangling link from another checkout
fi

# Only what the machine cannot import already: never shadow its own torch, numpy or triton.
module_of() {
    case "$1" in
        pyyaml-*) echo yaml ;;
        opencv_python_headless-*) echo cv2 ;;
        pillow-*) echo PIL ;;
        *) echo "${1%%-*}" ;;
    esac
}
install=()
for wheel in wheels/*.whl; do
    [[ -e "$wheel" ]] || continue
    module=$(module_of "$(basename "$wheel")")
    if "$PY" -c "import $module" 2>/dev/null; then
        echo "gpu_check: $module is already here; $(basename "$wheel") not installed"
    else
        install+=("$wheel")
    fi
done
if ((${#install[@]})); then
    echo "gpu_check: installing ${#install[@]} wheels into .gpu-site"
    timeout 60 "$PY" -m pip install -q --no-index --no-deps --no-compile --target .gpu-site "${install[@]}" ||
        echo "gpu_check: pip install failed; the rows say what they miss" >&2
elif [[ ! -d wheels ]]; then
    echo "gpu_check: no wheels/ carried (bench/gpu_wheels.sh); the rows say what they miss"
fi

left=$((${TOTAL_S:-470} - SECONDS - 5))
exec timeout --kill-after=5 "$left" "$PY" bench/gpu_check.py "${SMOKE[@]}" --out "$RESULTS" --budget-s "$((left - 20))"
