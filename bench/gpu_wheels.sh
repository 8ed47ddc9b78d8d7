#!/usr/bin/env bash
# Prepare wheels/ for a GPU machine without network (docs/results.md, "The GPU check").
#
#   bash bench/gpu_wheels.sh            # here, where the registry and a Python 3.12 are
#   then carry wheels/ with the tree:   run(..., carry=["wheels"]) and `bash bench/gpu_check.sh`
#
# That machine has Python 3.12 with torch + CUDA, numpy and triton, and nothing else cohort
# imports. This builds FFCV's cp312 wheel here, against this machine's OpenCV and
# libjpeg-turbo (the GPU machine must have the same shared libraries: bench/gpu_check.py's
# environment row runs ldd on the extension there), and downloads the other cp312 wheels.
# The tree and everything carried travel in 64 MiB (BUDGET_MIB), so wheels are taken in
# the order of WANTED while they fit; wheels/MANIFEST says which fitted and which did not.
set -euo pipefail
cd "$(dirname "$0")/.."

# The first Python 3.12 that runs (a pyenv shim may exist and refuse).
if [[ -z "${PY:-}" ]]; then
    for candidate in python3.12 ~/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            PY=$candidate && break
        fi
    done
fi
PY=${PY:-}
BUDGET_MIB=${BUDGET_MIB:-64}
# What cohort train imports beyond torch, numpy and triton, in units taken whole, the
# cheapest first: cohort reads configs with yaml; FFCV imports PIL, cv2 and numba (with its
# llvmlite); tqdm: the data writer; scipy: cohort's metrics. Sizes (cp312, 2026-12): pillow 6.8 MiB,
# numba + llvmlite 61 MiB, scipy 34 MiB, opencv-python-headless 58 MiB: they cannot all travel.
UNITS=("pyyaml" "tqdm" "pillow" "scipy" "numba llvmlite" "opencv-python-headless")

if [[ -z "$PY" ]] || ! "$PY" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
    echo "gpu_wheels: error: no Python 3.12 found (got '${PY}'); set PY=/path/to/python3.12" >&2
    exit 2
fi
for lib in opencv4 libturbojpeg; do
    if ! pkg-config --exists "$lib"; then
        echo "gpu_wheels: error: pkg-config finds no $lib, which FFCV builds against; run scripts/setup.sh (apt: pkg-config libopencv-dev libturbojpeg0-dev)" >&2
        exit 2
    fi
done

rm -rf wheels && mkdir -p wheels/.all
# FFCV's sdist builds its C++ extension against pkg-config's opencv4 and libturbojpeg.
"$PY" -m pip wheel -q --no-deps -w wheels/.all ffcv==1.0.2
for unit in "${UNITS[@]}"; do
    for name in $unit; do
        "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d wheels/.all "$name"
    done
done

wheel_of() { ls wheels/.all/"${1//-/_}"-*.whl 2>/dev/null || ls wheels/.all/"$1"-*.whl; }
tree_bytes=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
left=$((BUDGET_MIB * 1024 * 1024 - tree_bytes))
manifest="# wheels/ for bench/gpu_check.sh: $(date -u +%Y-%m-%dT%H:%MZ), budget ${BUDGET_MIB} MiB, tree $((tree_bytes / 1024)) KiB"
for unit in ffcv "${UNITS[@]}"; do
    files=() size=0
    for name in $unit; do
        files+=("$(wheel_of "$name")")
        size=$((size + $(stat -c %s "${files[-1]}")))
    done
    if ((size <= left)); then
        mv "${files[@]}" wheels/ && left=$((left - size))
        manifest+=$'\n'"carried $unit: $((size / 1024)) KiB"
    else
        manifest+=$'\n'"left out $unit: $((size / 1024)) KiB, only $((left / 1024)) KiB of the budget left"
    fi
done
echo "$manifest" | tee wheels/MANIFEST
rm -rf wheels/.all
echo "gpu_wheels: $(du -sh wheels | cut -f1) in wheels/, $((left / 1024)) KiB of the ${BUDGET_MIB} MiB left"
