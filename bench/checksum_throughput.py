"""How fast ``cohort data verify`` reads and hashes, and what that makes it cost on ImageNet.

    .venv/bin/python bench/checksum_throughput.py [--gib 1] [--dir /tmp] [--repeats 3]

Writes ``--gib`` GiB of random bytes to ``--dir``, then hashes it with ``file_checksum`` (the
function that ``cohort data`` records and ``cohort data verify`` compares with), ``--repeats``
times cold and warm: cold after ``posix_fadvise(DONTNEED)`` drops the file from this machine's
page cache (a virtual machine's host may still cache it; a disk slower than the hash makes
verification slower still), warm right after. It also hashes the same bytes in memory with
SHA-256 and BLAKE2b (the choice ``cohort.data.folder.CHECKSUM`` explains), prints the
medians and the minutes verification would take at the warm rate on FFCV's ImageNet train
files (sizes from FFCV's benchmark table, docs.ffcv.io/benchmarks.html), and removes the file.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cohort.data.folder import CHUNK, file_checksum  # noqa: E402

IMAGENET_GB = {
    "ffcv-imagenet's proportion, quality 90, 512 px": 202.04,
    "JPEG, quality 90, 512 px": 65.47,
    "raw, 512 px": 616.18,
}
"""FFCV's ImageNet train file sizes (docs.ffcv.io/benchmarks.html, its "Dataset sizes" table), GB."""


def evict(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    size = int(args.gib * 2**30)
    fd, name = tempfile.mkstemp(prefix="checksum-", suffix=".bin", dir=args.dir)
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            for start in range(0, size, CHUNK):
                f.write(os.urandom(min(CHUNK, size - start)))
        rates: dict[str, list[float]] = {"cold": [], "warm": []}
        for _ in range(args.repeats):
            for state in ("cold", "warm"):
                if state == "cold":
                    evict(path)
                start = time.perf_counter()
                assert file_checksum(path)["bytes"] == size
                rates[state].append(size / (time.perf_counter() - start) / 1e6)
        data = os.urandom(min(size, 256 << 20))
        memory = {}
        for algorithm in ("sha256", "blake2b"):
            start = time.perf_counter()
            hashlib.new(algorithm, data)
            memory[algorithm] = len(data) / (time.perf_counter() - start) / 1e6
    finally:
        path.unlink(missing_ok=True)

    print(f"file_checksum (sha256, {CHUNK >> 20} MiB reads) of {size / 2**30:g} GiB in {args.dir}:")
    for state, values in rates.items():
        print(f"  {state}: median {statistics.median(values):.0f} MB/s of {[round(v) for v in values]}")
    print("  in memory: " + ", ".join(f"{a} {r:.0f} MB/s" for a, r in memory.items()))
    warm = statistics.median(rates["warm"])
    for label, gb in IMAGENET_GB.items():
        print(f"  ImageNet train, {label}, {gb:g} GB: {gb * 1e3 / warm / 60:.1f} min at {warm:.0f} MB/s")


if __name__ == "__main__":
    main()
