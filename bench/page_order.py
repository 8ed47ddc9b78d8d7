"""The page-local training order against the full shuffle, with FFCV reading pages itself.

    .venv/bin/python bench/page_order.py [--images 20000] [--side 64] [--epochs 3] [--memory-mib M]

For data larger than memory FFCV is run with ``os_cache=False``: it reads, for each batch,
the 8 MiB pages that hold the batch's samples, and keeps each page in its own memory from
the first batch that needs it to the last. A full shuffle needs nearly every page from
start to end of an epoch, so FFCV holds the whole file; ``data.order: page_local`` keeps
each batch within a few pages (``cohort.data.order``), so it holds a few.

This writes a synthetic ``.beton`` of raw images (``--images`` of ``--side``² pixels), then
times one member's training loader (decode only, no model) with both orders, with
``os_cache`` off and on, each in a process of its own, and prints images/s and the ratio.

Without ``--memory-mib`` the file stays in the page cache, so the difference measured is
FFCV's own page reading (copying whole pages for a few samples), not the disk. With it,
each timing process runs in a memory cgroup of that size (its own memory and its page
cache together; Linux, root, cgroup v1 or v2) and the file is dropped from the page cache
before every epoch: a file larger than the limit is read from the disk, as data larger
than memory would be, and a process that outgrows the limit is killed (printed as such).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from cohort.data.datasets import _write_splits
from cohort.data.loader import MemberLoader
from cohort.data.splits import ArrayDataset


def write_synthetic(root: Path, images: int, side: int) -> int:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (images, side, side, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, images)
    small = ArrayDataset(pixels[:64], labels[:64])
    meta = {
        "dataset": "synthetic",
        "num_classes": 10,
        "classes": [str(i) for i in range(10)],
        "image_size": side,
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
        "decoder": "simple",
    }
    _write_splits(
        root,
        {"train": ArrayDataset(pixels, labels), "val": small, "test": small},
        meta,
        write_mode="raw",
        max_resolution=None,
    )
    return (root / "train.beton").stat().st_size


def memory_cgroup(mib: int) -> Path:
    """A new memory cgroup of ``mib`` MiB (page cache included), beside this process's."""
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
    except OSError as error:
        raise SystemExit(
            f"page_order: cannot create a memory cgroup at {group} ({error}); run as root on Linux, "
            f"or leave out --memory-mib"
        ) from None
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


def time_variant(args: argparse.Namespace) -> None:
    """In a child process: time ``--epochs`` + 1 epochs of one (order, os_cache) variant and
    print ``{"rates": [...]}`` (the first epoch untimed)."""
    if args.cgroup:
        (Path(args.cgroup) / "cgroup.procs").write_text(str(os.getpid()))
    root = Path(args.root)
    loader = MemberLoader(
        root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="none",
        batch_size=args.batch,
        num_workers=args.workers,
        device=torch.device("cpu"),
        train=True,
        os_cache=args.os_cache == "on",
        page_window=args.window if args.order == "page_local" else 0,
    )
    rates = []
    for epoch in range(args.epochs + 1):
        if args.cgroup:
            drop_from_page_cache(root / "train.beton")
        rates.append(images_per_s(loader, epoch))
    print(json.dumps({"rates": rates[1:]}))


def run_variant(command: list[str], timeout_s: float) -> dict:
    """A timing child's result, or why it has none: killed by the OOM killer, or stopped
    after ``timeout_s`` (then with the bytes it had read from the disk)."""
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        out, _ = child.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        io = dict(line.split(": ") for line in Path(f"/proc/{child.pid}/io").read_text().splitlines())
        child.kill()
        child.communicate()
        return {"failed": f"unfinished after {timeout_s:.0f} s, {int(io['read_bytes']) / 2**30:.0f} GiB read from disk"}
    if child.returncode:
        killed = " (SIGKILL: the cgroup's OOM killer)" if child.returncode == -9 else ""
        return {"failed": f"exit {child.returncode}{killed}"}
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs each (after one untimed)")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--window", type=int, default=8, help="data.page_window")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--memory-mib", type=int, help="time inside a memory cgroup of this size, file read cold")
    parser.add_argument("--variant-timeout-s", type=float, default=600, help="stop a variant that runs longer")
    # A timing child's arguments (set by main, not by hand):
    parser.add_argument("--root", help=argparse.SUPPRESS)
    parser.add_argument("--order", help=argparse.SUPPRESS)
    parser.add_argument("--os-cache", help=argparse.SUPPRESS)
    parser.add_argument("--cgroup", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.root:
        return time_variant(args)
    common = [
        "--epochs",
        str(args.epochs),
        "--batch",
        str(args.batch),
        "--window",
        str(args.window),
        "--workers",
        str(args.workers),
    ]
    results: dict = {}
    with tempfile.TemporaryDirectory() as tmp:  # TMPDIR must be on a disk, not a tmpfs, for --memory-mib
        root = Path(tmp)
        size = write_synthetic(root, args.images, args.side)
        group = memory_cgroup(args.memory_mib) if args.memory_mib else None
        try:
            for order in ("shuffle", "page_local"):
                for cache in ("off", "on"):
                    results[order, cache] = run_variant(
                        [
                            sys.executable,
                            __file__,
                            *common,
                            "--root",
                            str(root),
                            "--order",
                            order,
                            "--os-cache",
                            cache,
                            *(["--cgroup", str(group)] if group else []),
                        ],
                        args.variant_timeout_s,
                    )
        finally:
            if group is not None:
                group.rmdir()
    where = (
        f"each process in a {args.memory_mib} MiB memory cgroup, file dropped from the page cache before each epoch"
        if args.memory_mib
        else "file in the page cache"
    )
    print(
        f"{args.images} raw {args.side}² images ({size / 2**20:.0f} MiB, 8 MiB pages), batch {args.batch}, "
        f"{args.workers} workers, window {args.window} pages, {where}; median images/s of {args.epochs} epochs:"
    )
    print("| order | os_cache off | os_cache on |")
    print("|---|---|---|")

    def cell(result: dict) -> str:
        if "failed" in result:
            return result["failed"]
        return f"{statistics.median(result['rates']):.0f}"

    for order in ("shuffle", "page_local"):
        print(f"| {order} | {cell(results[order, 'off'])} | {cell(results[order, 'on'])} |")
    for cache in ("off", "on"):
        shuffle, local = results["shuffle", cache], results["page_local", cache]
        if "failed" not in shuffle and "failed" not in local:
            ratio = statistics.median(local["rates"]) / statistics.median(shuffle["rates"])
            print(f"page_local / shuffle with os_cache {cache}: {ratio:.2f}×")


if __name__ == "__main__":
    main()
