#!/usr/bin/env bash
# Installs what is missing for cohort, then returns: Debian packages that FFCV's
# build needs, a virtual environment at .venv, and the project in editable mode.
# Idempotent: a second run only checks. Sourced by scripts/demo.sh and scripts/test.sh.
#
# Without root (or with conda): install pkg-config, OpenCV and libjpeg-turbo yourself
# (conda: `conda install -c conda-forge pkg-config opencv libjpeg-turbo`), then run
# this script with COHORT_SKIP_APT=1.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

# dataset-fashion-mnist: Zalando's Fashion-MNIST as four IDX files (30 MB), for `cohort data fashion-mnist`.
apt_packages=(pkg-config libopencv-dev libturbojpeg0-dev dataset-fashion-mnist)
if [ "${COHORT_SKIP_APT:-0}" != 1 ]; then
  missing=()
  for p in "${apt_packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup: missing Debian packages ${missing[*]}; run as root, or install them and set COHORT_SKIP_APT=1" >&2
      exit 1
    fi
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

python="${PYTHON:-python3}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "setup: $python is $("$python" --version 2>&1); cohort needs Python 3.11+ (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv

# The stamp records which pyproject.toml the venv was built from, so an unchanged
# checkout skips pip entirely (pip's own no-op check of ~60 packages takes ~20 s).
stamp=.venv/.cohort-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing cohort and its dependencies into .venv (first time: torch is ~3 GB)"
  .venv/bin/python -m pip install -q --upgrade pip
  # launch/ is installed as cohort.launch (pyproject.toml), so setuptools installs the editable
  # package through an import hook and prints an "Editable installation" notice that folders
  # named like the package may take precedence; here they are the package itself. Only that
  # notice is filtered (by the start of its message), in the build backend pip starts.
  PYTHONWARNINGS="ignore:Editable installation" .venv/bin/python -m pip install -q -e ".[dev]"
  echo "$want" > "$stamp"
fi
