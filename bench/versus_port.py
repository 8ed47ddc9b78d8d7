"""cohort against what users would otherwise run: the single-process DML port.

    .venv/bin/python bench/versus_port.py [--epochs 6] [--rounds 2]

The public DML ports train K networks in one process on one batch stream fed by a
torchvision ``DataLoader``. ``port_epoch`` is that baseline, written here: the same digits
training images (read once from cohort's ``.beton``, so the pixels are identical), the same
augmentation (pad-4 random crop: ``RandomCrop(32, padding=4)``, cohort's ``crop`` policy), the
same K = 2 small CNNs, optimiser and DML loss (CE + KL to the peer, each network stepping
on its own loss), with every core as torch threads. The cohort is ``cohort train`` of the
same two members, one process per member (K = 2 ranks sharing the cores, gloo).

Measured side by side in one run, alternating port and cohort ``--rounds`` times so load
drift hits both, epoch 1 (JIT, warm-up) left out:
1. end to end: images/s per member (a member sees every image of a step);
2. data only: the port's ``DataLoader`` against one member's FFCV loader (decode + the same
   augmentation, no model), both with ``data.num_workers`` workers.
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

import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[1]
MEMBERS = "members=[{arch: small_cnn, policy: crop}, {arch: small_cnn, policy: crop}]"


def train_images(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The training split as uint8 NCHW and labels, decoded once by an un-augmented loader."""
    from cohort.data.loader import MemberLoader

    loader = MemberLoader(
        root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="none",
        batch_size=1,
        num_workers=1,
        device=torch.device("cpu"),
        train=False,
    )
    images, labels = [], []
    for batch in loader.epoch(0):
        images.append(batch.images.clone())
        labels.append(batch.labels.clone())
    return torch.cat(images), torch.cat(labels)


class Digits(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor):
        from torchvision.transforms import v2

        self.images, self.labels = images, labels
        self.transform = v2.RandomCrop(32, padding=4)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.transform(self.images[i]), self.labels[i]


def port_epoch(loader, nets, optimizers) -> tuple[int, float]:
    """One epoch of the single-process port; (images, seconds)."""
    seen, start = 0, time.perf_counter()
    for images, labels in loader:
        x = images.float().div_(255.0)
        logits = [net(x) for net in nets]
        for i, optimizer in enumerate(optimizers):
            peer = logits[1 - i].detach()
            loss = F.cross_entropy(logits[i], labels) + F.kl_div(
                F.log_softmax(logits[i], 1), F.softmax(peer, 1), reduction="batchmean"
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        for optimizer in optimizers:
            optimizer.step()
        seen += len(labels)
    return seen, time.perf_counter() - start


def run_port(root: Path, epochs: int, workers: int) -> list[float]:
    """Images/s per member of the port, per epoch after the first."""
    from cohort.config import OptimConfig
    from cohort.data.folder import read_meta
    from cohort.models import build_model
    from cohort.train.optim import build_optimizer

    torch.set_num_threads(os.cpu_count() or 1)
    images, labels = train_images(root)
    meta = read_meta(root)
    loader = torch.utils.data.DataLoader(
        Digits(images, labels),
        batch_size=64,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    torch.manual_seed(0)
    nets = [build_model("small_cnn", meta["num_classes"], meta["mean"], meta["std"]) for _ in range(2)]
    config = OptimConfig(name="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4)
    optimizers = [build_optimizer(net.parameters(), config) for net in nets]
    rates = []
    for epoch in range(epochs):
        seen, seconds = port_epoch(loader, nets, optimizers)
        if epoch:
            rates.append(seen / seconds)
    return rates


def run_cohort(root: Path, epochs: int, workers: int, tmp: Path, name: str) -> list[float]:
    """Images/s per member of a K = 2 cohort (its metrics' images_per_s), per epoch after the first."""
    run_dir = tmp / name
    command = [
        sys.executable,
        "-m",
        "cohort.cli",
        "train",
        str(REPO / "configs" / "demo.yaml"),
        MEMBERS,
        f"data.root={root}",
        f"data.num_workers={workers}",
        f"train.epochs={epochs}",
        "train.progress=false",
        "train.device=cpu",
        f"run_dir={run_dir}",
    ]
    subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["images_per_s"] for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]


def data_rates(root: Path, workers: int, epochs: int = 4) -> tuple[float, float]:
    """Images/s of decode + crop alone: (the port's DataLoader, one member's FFCV loader)."""
    from cohort.data.loader import MemberLoader

    torch.set_num_threads(1)
    images, labels = train_images(root)
    port = torch.utils.data.DataLoader(
        Digits(images, labels),
        batch_size=64,
        shuffle=True,
        drop_last=True,
        num_workers=workers,
        persistent_workers=workers > 0,
    )
    ffcv = MemberLoader(
        root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="crop",
        batch_size=64,
        num_workers=workers,
        device=torch.device("cpu"),
        train=True,
    )
    rates = {"port": [], "ffcv": []}
    for epoch in range(epochs):
        # Each lambda is called at once, inside this epoch's loop.
        for name, batches in (("port", lambda: iter(port)), ("ffcv", lambda: (b.images for b in ffcv.epoch(epoch)))):  # noqa: B023
            start, seen = time.perf_counter(), 0
            for batch in batches():
                seen += len(batch[0]) if name == "port" else len(batch)
            if epoch:
                rates[name].append(seen / (time.perf_counter() - start))
    return statistics.median(rates["port"]), statistics.median(rates["ffcv"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1, help="data.num_workers and DataLoader workers")
    parser.add_argument("--data", default=str(REPO / "data" / "digits"))
    args = parser.parse_args()
    from cohort.data.datasets import ensure_data

    ensure_data(args.data, "digits")
    root = Path(args.data)
    port, cohort = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            port += run_port(root, args.epochs, args.workers)
            cohort += run_cohort(root, args.epochs, args.workers, Path(tmp), f"cohort-{round_}")
    loader_port, loader_ffcv = data_rates(root, args.workers)
    p, c = statistics.median(port), statistics.median(cohort)
    print(
        f"{os.cpu_count()} cores, K = 2 small CNNs on digits, batch 64, {args.workers} loader worker(s), "
        f"{args.rounds} alternating rounds of {args.epochs} epochs (epoch 1 left out)"
    )
    print(
        f"end to end, images/s per member: single-process port {p:.0f} (range {min(port):.0f}–{max(port):.0f}), "
        f"cohort {c:.0f} (range {min(cohort):.0f}–{max(cohort):.0f}); cohort / port {c / p:.2f}×"
    )
    print(
        f"data only (decode + pad-4 crop), images/s: DataLoader {loader_port:.0f}, FFCV member loader "
        f"{loader_ffcv:.0f}; FFCV / DataLoader {loader_ffcv / loader_port:.2f}×"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
