#!/usr/bin/env bash
# The GPU check rehearsed on this machine, in a copy of the GPU machine's Python (docs/results.md,
# "The rehearsal"): what must work there on the first try, tried here first.
#
#   bash bench/gpu_rehearsal.sh [--no-tests]      # from a clone, as root or not
#
# Where each piece comes from:
#   - Python 3.12: pyenv's (PY312=...); the GPU machine has 3.12.3 in a virtualenv.
#   - That machine's packages: bench/gpu_machine.txt (torch 2.11.0 + torchvision 0.26.0 and the
#     rest at its versions), downloaded once from PyPI into .rehearsal/downloads (about 3 GB:
#     torch's CUDA build, which runs on the CPU) with everything `pip install -e .` needs
#     besides, and installed from there into the virtualenv .rehearsal/machine.
#   - wheels/: bench/gpu_wheels.sh (FFCV built here and made self-contained; submitit, assertpy).
#   - The tree: the files git tracks or would add, with wheels/, copied to a folder outside
#     this clone, as the device tool carries them; their size is checked against 64 MiB.
# Once those are here, nothing uses the network. The rest runs in an unprivileged user, mount
# and network namespace (`unshare -rmn`: nothing of this machine changes), where only loopback
# exists and the libraries FFCV's wheel carries (Debian's OpenCV and libjpeg-turbo and what
# they load, but libz, which Python's zlib loads) are hidden from the loader:
#   1. FFCV's wheel as pip built it does not load there; the self-contained one's extension
#      finds every library (ldd) in the wheel or in glibc and the C++ runtime.
#   2. `bash bench/gpu_check.sh --smoke` with that machine's python: every row ok, within 8 minutes.
#   3. `cohort train configs/demo.yaml train.epochs=2`, run from the tree as on that machine.
#   4. `pip install -e .` into a virtualenv layered on the machine's (no index: wheels/ and
#      the downloads), `import cohort.cli`, and the fast tests (`-m "not multiprocess and not
#      slurm"`), unless --no-tests.
# A failed check is said and the others still run; exit 0 only if all of them passed. The
# times and results: .rehearsal/summary.txt, .rehearsal/gpu_check.json, .rehearsal/tests.log.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
R=$REPO/.rehearsal
BUDGET_MIB=64

inside() {  # in the namespace; $TREE is the carried copy, $MPY the machine's python
    ip link set lo up # before the hiding: ip loads libbsd
    local plain_site=$WORK/plain-site extension interfaces
    interfaces=$(ip -brief address | tr -s ' ' | paste -sd';')
    hide_libraries
    say "namespace: network interfaces: $interfaces; hidden from the loader: ${HIDDEN[*]}"

    step "1. FFCV's wheel as pip built it (.wheels-build/plain/) against the self-contained one"
    "$MPY" -m pip install -q --no-index --no-deps --no-compile --target "$plain_site" "$REPO"/.wheels-build/plain/ffcv-*.whl
    extension=$(echo "$plain_site"/ffcv/_libffcv*.so)
    if "$MPY" -c "import ctypes, sys; ctypes.CDLL(sys.argv[1])" "$extension" 2>"$WORK/plain.err"; then
        miss "FFCV's unvendored extension loaded: the hiding did not hide Debian's OpenCV"
    fi
    say "unvendored extension does not load: $(tail -1 "$WORK/plain.err")"

    step "2. bash bench/gpu_check.sh --smoke (the GPU machine's python: $MPY)"
    local start=$SECONDS
    # Cold caches, as on a fresh GPU machine: inductor's here (numba's are in the fresh tree).
    (cd "$TREE" && TORCHINDUCTOR_CACHE_DIR=$WORK/inductor PY=$MPY OUT=$WORK bash bench/gpu_check.sh --smoke) 2>&1 |
        tee "$WORK/gpu_check.log" || true
    local took=$((SECONDS - start))
    cp "$WORK/gpu_check.json" "$R/gpu_check.json" || fail "gpu_check wrote no results file"
    extension=$(echo "$TREE"/.gpu-site/ffcv/_libffcv*.so)
    ldd "$extension" | tee "$WORK/ldd.txt"
    if grep -v -E 'ffcv\.libs/|linux-vdso|/libc\.so|/libm\.so|/libstdc\+\+\.so|/libgcc_s\.so|ld-linux' "$WORK/ldd.txt"; then
        miss "FFCV's extension loads a library from outside its wheel, glibc and the C++ runtime (above)"
    else
        say "self-contained extension: every library from ffcv.libs/ or glibc and the C++ runtime"
    fi
    "$MPY" - "$R/gpu_check.json" "$took" <<'EOF' || miss "gpu_check --smoke: a row is not ok, or it took 8 minutes or more ($took s)"
import json, sys
results, took = json.load(open(sys.argv[1])), int(sys.argv[2])
bad = {name: row["status"] for name, row in results["rows"].items() if not row["status"].startswith("ok")}
print(f"gpu_check --smoke: {len(results['rows']) - len(bad)} of {len(results['rows'])} rows ok in {took} s (limit 480)")
print("\n".join(f"  {name}: {status}" for name, status in bad.items()))
sys.exit(1 if bad or took >= 480 else 0)
EOF
    [[ -s $R/failures ]] || say "gpu_check --smoke: every row ok, $took s (the install included)"

    step "3. cohort train configs/demo.yaml train.epochs=2, from the tree"
    start=$SECONDS
    if ! (cd "$TREE" && PYTHONPATH=.gpu-site:. "$MPY" -m cohort.cli train configs/demo.yaml train.epochs=2 \
        run_dir="$WORK/demo") >"$WORK/demo.log" 2>&1; then
        tail -20 "$WORK/demo.log"
        miss "cohort train configs/demo.yaml train.epochs=2 failed (above)"
    else
        tail -9 "$WORK/demo.log"
        say "demo: exit 0 in $((SECONDS - start)) s; $(grep -E '^ensemble' "$WORK/demo.log")"
    fi

    [[ $TESTS == 1 ]] || return 0
    step "4. pip install -e . (no index) into a virtualenv on the machine's packages; the fast tests"
    "$PY312" -m venv "$WORK/dev"
    # A site folder, not a bare path: its own .pth files run too (setuptools' distutils shim,
    # without which FFCV's `from distutils.log import warn` fails on Python 3.12).
    "$MPY" -c "import sysconfig; print(f'import site; site.addsitedir({sysconfig.get_paths()[\"purelib\"]!r})')" \
        >"$WORK/dev/lib/python3.12/site-packages/gpu-machine.pth"
    start=$SECONDS
    (cd "$TREE" && PIP_CONFIG_FILE=/dev/null "$WORK/dev/bin/python" -m pip install -q --no-index \
        --find-links wheels --find-links "$R/downloads" -e .)
    say "pip install -e .: $((SECONDS - start)) s; then: $("$WORK/dev/bin/python" -m pip list 2>/dev/null |
        grep -E '^(cohort|torch|torchvision|ffcv|opencv-python) ' | tr -s ' ' | paste -sd, -)"
    # FFCV asks for opencv-python, so pip added it; its cv2 needs libGL and X11, which that
    # machine lacks (hidden here), and shadows the machine's opencv-python-headless (the same
    # cv2 without them). Without an index that machine would get no opencv-python at all.
    "$WORK/dev/bin/python" -m pip uninstall -q -y opencv-python
    say "opencv-python removed again: FFCV imports the machine's opencv-python-headless"
    (cd /tmp && "$WORK/dev/bin/python" -c "import cohort.cli, torch; print('import cohort.cli: ok, torch', torch.__version__)")
    start=$SECONDS
    # SLURM's tests left out too: slurmd cannot drop its groups in an unprivileged namespace,
    # and the GPU machine has no SLURM.
    (cd "$TREE" && "$WORK/dev/bin/python" -m pytest -m "not multiprocess and not slurm" -q -p no:cacheprovider) \
        >"$WORK/tests.log" 2>&1 || true
    tail -5 "$WORK/tests.log"
    cp "$WORK/tests.log" "$R/tests.log"
    local verdict
    verdict=$(grep -E ' in [0-9.]+s' "$WORK/tests.log" | tail -1 || true)
    say "fast tests: $verdict ($((SECONDS - start)) s)"
    if ! grep -q passed <<<"$verdict" || grep -q -E 'failed|error' <<<"$verdict"; then
        miss "fast tests: $verdict (.rehearsal/tests.log)"
    fi
    return 0
}

hide_libraries() {  # mount a view of the library folder without them over it
    local lib=/usr/lib/x86_64-linux-gnu real=$WORK/ns/real view=$WORK/ns/view stem
    HIDDEN=('libopencv_*' 'libjpeg.so*' 'libturbojpeg.so*')
    for stem in $(unzip -Z1 "$TREE"/wheels/ffcv-*.whl 'ffcv.libs/*' | sed 's|ffcv.libs/||; s|-.*||'); do
        [[ $stem == libz || $stem == libopencv_* || $stem == libturbojpeg ]] || HIDDEN+=("$stem.so*")
    done
    local match=() pattern
    for pattern in "${HIDDEN[@]}"; do
        match+=(-name "$pattern" -o)
    done
    mkdir -p "$real" "$view"
    mount --bind "$lib" "$real"
    mount -t tmpfs -o size=16m rehearsal "$view"
    find "$real" -mindepth 1 -maxdepth 1 -not \( "${match[@]::${#match[@]}-1}" \) -print0 | xargs -0 ln -s -t "$view"
    mount --bind "$view" "$lib"
    [[ -z $(find "$lib/" -maxdepth 1 -name 'libopencv_core*') ]] || fail "libopencv_core is still visible in $lib"
}

say() { echo "rehearsal: $*" | tee -a "$R/summary.txt"; }
miss() {  # a check failed: say so, go on with the others, exit 1 at the end
    echo "rehearsal: FAILED: $*" | tee -a "$R/summary.txt" >&2
    echo "$*" >>"$R/failures"
}
step() { say "--- $* (at $(($(date +%s) - T0)) s; load average $(cut -d' ' -f1-3 /proc/loadavg))"; }
fail() {
    echo "rehearsal: FAILED: $*" | tee -a "$R/summary.txt" >&2
    exit 1
}

if [[ "${1:-}" == --inside ]]; then
    inside
    exit 0
fi
TESTS=1
[[ "${1:-}" == --no-tests ]] && TESTS=0
for tool in unshare unzip ip; do
    command -v $tool >/dev/null || fail "no $tool here (Debian: util-linux, unzip, iproute2); install it and rerun"
done

# The first Python 3.12 that runs (a pyenv shim may exist and refuse).
if [[ -z "${PY312:-}" ]]; then
    for candidate in python3.12 ~/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12; do
        if "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null; then
            PY312=$candidate && break
        fi
    done
fi
"${PY312:-false}" -c 'import sys; assert sys.version_info[:2] == (3, 12)' 2>/dev/null ||
    fail "no Python 3.12 found (got '${PY312:-}'); set PY312=/path/to/python3.12 (pyenv install 3.12)"
mkdir -p "$R"
: >"$R/summary.txt"
rm -f "$R/failures"
T0=$(date +%s)
say "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Python 3.12: $PY312 ($("$PY312" --version))"

step "wheels/ (bench/gpu_wheels.sh; network)"
if [[ -f wheels/MANIFEST && -n $(ls .wheels-build/plain/ffcv-*.whl 2>/dev/null) ]]; then
    say "wheels/ is there, from $(head -1 wheels/MANIFEST | sed 's/.*: //'); rm -r wheels to rebuild it"
else
    PY=$PY312 bash bench/gpu_wheels.sh
fi

step "the GPU machine's packages (bench/gpu_machine.txt) and cohort's, into .rehearsal/downloads (network)"
# No pip configuration: this machine's caps torch at 2.14 and points at local indexes.
export PIP_CONFIG_FILE=/dev/null
unset PIP_FIND_LINKS
"$PY312" -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
    >"$R/cohort-requirements.txt"
want=$(cat bench/gpu_machine.txt "$R/cohort-requirements.txt" wheels/MANIFEST | sha256sum | cut -c1-16)
if [[ "$(cat "$R/downloads/.done" 2>/dev/null)" != "$want" ]]; then
    # FFCV's own requirements (fastargs, terminaltables, ...) come too: pip install -e . wants them.
    "$PY312" -m pip download -q -d "$R/downloads" --prefer-binary --find-links wheels -c bench/gpu_machine.txt \
        -r bench/gpu_machine.txt -r "$R/cohort-requirements.txt" "setuptools>=68"
    echo "$want" >"$R/downloads/.done"
fi
say "downloads: $(du -sh "$R/downloads" | cut -f1) in $(ls "$R/downloads" | wc -l) files"

step "the GPU machine's virtualenv, .rehearsal/machine (no network from here on)"
want=$(sha256sum bench/gpu_machine.txt | cut -c1-16)
if [[ "$(cat "$R/machine/.done" 2>/dev/null)" != "$want" ]]; then
    rm -rf "$R/machine"
    "$PY312" -m venv "$R/machine"
    "$R/machine/bin/python" -m pip install -q --no-index --find-links "$R/downloads" -r bench/gpu_machine.txt
    echo "$want" >"$R/machine/.done"
fi
MPY=$R/machine/bin/python
say "machine: $("$MPY" -c 'import sys, torch, torchvision, numpy; print("Python", sys.version.split()[0], "torch", torch.__version__, "torchvision", torchvision.__version__, "numpy", numpy.__version__)')"
if "$MPY" -c "import ffcv" 2>/dev/null || "$MPY" -c "import submitit" 2>/dev/null; then
    fail "the machine's virtualenv has ffcv or submitit, which the GPU machine lacks; rm -r .rehearsal/machine"
fi

step "the tree as it travels"
WORK=$(mktemp -d /tmp/gpu-rehearsal.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/cohort
mkdir "$TREE"
git ls-files -z --cached --others --exclude-standard | tar --null -T - -cf - | tar -xf - -C "$TREE"
cp -r wheels "$TREE/"
carried=$(du -sb "$TREE" | cut -f1)
say "carried: $((carried / 1024)) KiB of $((BUDGET_MIB * 1024)) KiB (the tree and wheels/: $(ls wheels | paste -sd' '))"
((carried <= BUDGET_MIB * 1024 * 1024)) || fail "the tree and wheels/ exceed $BUDGET_MIB MiB"

export WORK TREE MPY PY312 TESTS R REPO T0
unshare -rmn bash "$0" --inside || miss "the namespace's steps stopped early (above)"
if [[ -s $R/failures ]]; then
    fail "$(wc -l <"$R/failures") checks failed, in $(($(date +%s) - T0)) s: .rehearsal/summary.txt"
fi
say "passed in $(($(date +%s) - T0)) s (load average $(cut -d' ' -f1-3 /proc/loadavg))"
