"""The page-local training order against the full shuffle, with FFCV reading pages itself.

    .venv/bin/python bench/page_order.py [--images 20000] [--side 64] [--epochs 3] [--memory-mib M]

For data larger than memory FFCV is run with ``os_cache=False``: it reads, for each batch,
the 8 MiB pages that hold the batch's samples. A full shuffle scatters a batch over many
pages; ``data.order: page_local`` keeps each batch within a few (``cohort.data.order``).
This writes a synthetic ``.beton`` of raw images (``--images`` of ``--side``² pixels), then
times one member's training loader (decode only, no model) with both orders, with
``os_cache`` off and on, alternating, and prints images/s and the ratio.

Without ``--memory-mib`` the file stays in the page cache, so the difference measured is
FFCV's own page reading (copying whole pages for a few samples), not the disk. With it, the
timing process moves into a memory cgroup of that size (its own memory and its page cache
together; Linux, root, cgroup v1 or v2) and the file is dropped from the page cache before
every epoch, so a file larger than the limit is read from the disk, as data larger than
memory would be.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cohort.data.datasets import ArrayDataset, _write_splits
from cohort.data.loader import MemberLoader


def write_synthetic(root: Path, images: int, side: int) -> int:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, images)
    small = ArrayDataset(pixels[:64], labels[:64])
    meta = {"dataset": "synthetic", "num_classes": 10, "classes": [str(i) for i in range(10)], "image_size": side,
            "mean": [0.5] * 3, "std": [0.25] * 3, "decoder": "simple"}
    _write_splits(root, {"train": ArrayDataset(pixels, labels), "val": small, "test": small}, meta, write_mode="raw",
                  max_resolution=None)
    return (root / "train.beton").stat().st_size


def limit_memory(mib: int) -> Path:
    """Move this process into a new memory cgroup of ``mib`` MiB (page cache included)."""
    own = Path("/proc/self/cgroup").read_text().splitlines()
    v1 = next((line.split(":", 2)[2] for line in own if line.split(":")[1] == "memory"), None)
    if v1 is not None and Path("/sys/fs/cgroup/memory").is_dir():
        group, limit_file = Path(f"/sys/fs/cgroup/memory{v1}") / f"page-order-{os.getpid()}", "memory.limit_in_bytes"
    else:
        v2 = next(line.split(":", 2)[2] for line in own if line.startswith("0::"))
        group, limit_file = Path(f"/sys/fs/cgroup{v2}") / f"page-order-{os.getpid()}", "memory.max"
    try:
        group.mkdir()
        (group / limit_file).write_text(str(mib * 2**20))
        (group / "cgroup.procs").write_text(str(os.getpid()))
    except OSError as error:
        raise SystemExit(f"page_order: cannot create a memory cgroup at {group} ({error}); run as root on Linux, "
                         f"or leave out --memory-mib") from None
    return group


def drop_from_page_cache(path: Path) -> None:
    """Evict a file's clean pages from the page cache (every cgroup's)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def images_per_s(loader: MemberLoader, epoch: int) -> float:
    start, seen = time.perf_counter(), 0
    for batch in loader.epoch(epoch):
        seen += len(batch.labels)
    return seen / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs each (after one untimed)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, default=8, help="data.page_window")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, help="time inside a memory cgroup of this size, file read cold")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:  # TMPDIR must be on a disk, not a tmpfs, for --memory-mib
        root = Path(tmp)
        size = write_synthetic(root, args.images, args.side)
        group = limit_memory(args.memory_mib) if args.memory_mib else None
        variants = {(order, cache): MemberLoader(root, "train", member=0, replica=0, replicas=1, seed=0, policy="none",
                                                 batch_size=args.batch, num_workers=args.workers,
                                                 device=torch.device("cpu"), train=True, os_cache=cache,
                                                 page_window=args.window if order == "page_local" else 0)
                    for order in ("shuffle", "page_local") for cache in (False, True)}
        rates: dict = {key: [] for key in variants}
        for epoch in range(args.epochs + 1):
            for key, loader in variants.items():
                if group is not None:
                    drop_from_page_cache(root / "train.beton")
                rate = images_per_s(loader, epoch)
                if epoch:
                    rates[key].append(rate)
    median = {key: statistics.median(values) for key, values in rates.items()}
    where = (f"inside a {args.memory_mib} MiB memory cgroup, file dropped from the page cache before each epoch"
             if args.memory_mib else "file in the page cache")
    print(f"{args.images} raw {args.side}² images ({size / 2**20:.0f} MiB, 8 MiB pages), batch {args.batch}, "
          f"{args.workers} workers, window {args.window} pages, {where}, median of {args.epochs} epochs (images/s):")
    print("| order | os_cache off | os_cache on |")
    print("|---|---|---|")
    for order in ("shuffle", "page_local"):
        print(f"| {order} | {median[order, False]:.0f} | {median[order, True]:.0f} |")
    print(f"\npage_local / shuffle: {median['page_local', False] / median['shuffle', False]:.2f}× with os_cache off, "
          f"{median['page_local', True] / median['shuffle', True]:.2f}× with it on")


if __name__ == "__main__":
    main()
