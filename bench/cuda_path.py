"""The CUDA path, run end to end on one GPU: NCCL, FFCV's ToDevice, bf16, channels_last.

    .venv/bin/python bench/cuda_path.py [--arch resnet18] [--epochs 6] [key=value ...] [--packed 2 4]

For a machine with one GPU (CI has none; run it when one is lent). Each variant is a real
`cohort train` of a one-member cohort on the digits data (K = R = 1: one NCCL rank). It prints:

- images/s of the member (median over epochs after the first, which JIT-compiles FFCV's
  pipeline) for fp32, bf16, and bf16 + channels_last, side by side, and each one's test
  accuracy and NLL;
- whether two runs of the same config end with bit-identical test logits (cuDNN picks
  non-deterministic kernels unless told otherwise, so this may print False);
- whether a run resumed from a mid-run checkpoint ends with the same test logits as the
  uninterrupted run;
- with ``--packed 2 4``: K = 2 and K = 4 DML cohorts packed on the one GPU
  (``train.members_per_gpu: auto``, exchange over gloo), images/s per member against K = 1
  (bf16 + channels_last for all three).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def train(run_dir: Path, common: list[str], *extra: str) -> None:
    command = [
        sys.executable,
        "-m",
        "cohort.cli",
        "train",
        str(REPO / "configs" / "digits_pair.yaml"),
        *common,
        f"run_dir={run_dir}",
        *extra,
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}")


def summary(run_dir: Path) -> dict:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]
    test = [r for r in rows if r["split"] == "test" and r["member"] != "ensemble"][-1]
    return {
        "images_per_s": statistics.median(r["images_per_s"] for r in val),
        "test_acc": test["acc"],
        "test_nll": test["nll"],
    }


def test_logits(run_dir: Path) -> np.ndarray:
    with np.load(run_dir / "predictions" / "test.npz") as data:
        return data["logits"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet18")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--packed", type=int, nargs="*", default=[], help="cohort sizes K to pack on the one GPU")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for every run")
    args = parser.parse_args()
    common = [
        f"members=[{{name: m, arch: {args.arch}, policy: crop}}]",
        "loss.mimicry.weight=0",
        f"train.epochs={args.epochs}",
        "train.device=cuda",
        "train.progress=false",
        *args.overrides,
    ]
    variants = {
        "fp32": ["train.bf16=false", "train.channels_last=false"],
        "bf16": ["train.bf16=true", "train.channels_last=false"],
        "bf16+channels_last": ["train.bf16=true", "train.channels_last=true"],
    }
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for name, flags in variants.items():
            train(Path(tmp) / name, common, *flags)
            results[name] = summary(Path(tmp) / name)
        base = results["fp32"]["images_per_s"]
        print(f"{args.arch} on digits, batch size from configs/digits_pair.yaml, {args.epochs} epochs")
        for name, r in results.items():
            print(
                f"  {name:20s} {r['images_per_s']:8.0f} img/s ({r['images_per_s'] / base:.2f}× fp32)"
                f"  test acc {r['test_acc']:.4f}  nll {r['test_nll']:.4f}"
            )

        fast = variants["bf16+channels_last"]
        steps = ["train.checkpoint_every_steps=10", "train.keep_last=0"]
        train(Path(tmp) / "again", common, *fast)
        same = np.array_equal(test_logits(Path(tmp) / "bf16+channels_last"), test_logits(Path(tmp) / "again"))
        print(f"  two runs of bf16+channels_last end with bit-identical test logits: {same}")

        alone = results["bf16+channels_last"]["images_per_s"]
        for k in args.packed:
            members = ", ".join(f"{{name: m{i}, arch: {args.arch}, policy: crop}}" for i in range(k))
            train(Path(tmp) / f"packed{k}", common, *fast, f"members=[{members}]", "loss.mimicry.weight=1")
            packed = summary(Path(tmp) / f"packed{k}")["images_per_s"]
            print(
                f"  K = {k} DML members packed on the GPU: {packed:8.0f} img/s per member "
                f"({packed / alone:.2f}× K = 1; {k * packed / alone:.2f}× its images/s in all)"
            )

        whole, resumed = Path(tmp) / "whole", Path(tmp) / "resumed"
        train(whole, common, *fast, *steps)
        checkpoints = sorted((whole / "checkpoints").glob("step-*"))
        shutil.copytree(whole, resumed)
        middle = checkpoints[len(checkpoints) // 2]
        for later in sorted((resumed / "checkpoints").glob("step-*")):
            if later.name > middle.name:
                shutil.rmtree(later)
        train(resumed, common, *fast, *steps, "resume=auto")
        same = np.array_equal(test_logits(whole), test_logits(resumed))
        print(f"  resumed from {middle.name} of {checkpoints[-1].name}: bit-identical test logits: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
