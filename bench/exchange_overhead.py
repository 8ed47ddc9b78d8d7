"""What the logit exchange costs: steps/s of a K = 2 DML cohort vs the same cohort without it.

    .venv/bin/python bench/exchange_overhead.py [--rounds 2] [--epochs 6] [key=value ...]

Runs the two variants alternately (DML, independent, DML, …) as real torchrun cohorts on
this machine, so drift in machine load hits both alike, and reads each epoch's
wall-clock time from metrics.jsonl. Epoch 1 (FFCV's JIT compilation) is left out.
The independent variant (loss.mimicry.weight=0) skips the all-gather and the mimicry loss.
Target: the exchange costs at most 5 % of steps/s on CPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def epoch_rows(run_dir: Path) -> list[dict]:
    """Member rows of the val evaluations after the first epoch (one per member and epoch)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both variants")
    args = parser.parse_args()
    members = ["members=[{arch: small_cnn, policy: crop}, {arch: small_cnn, policy: crop}]"]
    common = [*members, f"train.epochs={args.epochs}", "train.progress=false", *args.overrides]
    results: dict[str, list[dict]] = {"dml": [], "independent": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for name, weight in (("dml", 1.0), ("independent", 0.0)):
                run_dir = Path(tmp) / f"{name}-{round_}"
                command = [sys.executable, "-m", "cohort.cli", "train", args.config, *common,
                           f"loss.mimicry.weight={weight}", f"run_dir={run_dir}"]
                subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                results[name] += epoch_rows(run_dir)
    dml, independent = (statistics.median(r["images_per_s"] for r in results[k]) for k in ("dml", "independent"))
    in_exchange = statistics.median(r["exchange_seconds"] / r["seconds"] for r in results["dml"])
    print(f"images/s per member (median over {len(results['dml'])} member-epochs each): "
          f"DML {dml:.0f}, independent {independent:.0f}")
    print(f"DML / independent throughput ratio: {dml / independent:.3f} "
          f"(exchange cost {100 * (1 - dml / independent):+.1f} %; target <= 5 %)")
    print(f"DML epoch time spent in the all-gather, waiting for the slower peer included: {100 * in_exchange:.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())
