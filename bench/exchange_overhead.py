"""What the logit exchange costs: steps/s of a K = 2 DML cohort vs the same cohort without it.

    .venv/bin/python bench/exchange_overhead.py [--rounds 2] [--epochs 6] [--pin] [key=value ...]

Runs the two variants alternately (DML, independent, DML, …) as real torchrun cohorts on
this machine, so drift in machine load hits both alike, and reads each epoch's
wall-clock time from metrics.jsonl. Epoch 1 (FFCV's JIT compilation) is left out.
The independent variant (loss.mimicry.weight=0) skips the all-gather and the mimicry loss.
Target: the exchange costs at most 5 % of steps/s on CPU.

``--pin`` adds both variants with ``train.pin_cores=true`` (each rank and its loader threads
on their own cores) to the alternation: how much of the exchange's cost is ranks in lockstep
taking each other's cores rather than the all-gather itself.
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
    parser.add_argument("--pin", action="store_true", help="also time both variants with train.pin_cores=true")
    parser.add_argument("overrides", nargs="*", help="extra config overrides for both variants")
    args = parser.parse_args()
    members = ["members=[{arch: small_cnn, policy: crop}, {arch: small_cnn, policy: crop}]"]
    common = [*members, f"train.epochs={args.epochs}", "train.progress=false", *args.overrides]
    variants = {"dml": ["loss.mimicry.weight=1.0"], "independent": ["loss.mimicry.weight=0.0"]}
    if args.pin:
        variants.update({f"{name} pinned": [*extra, "train.pin_cores=true"] for name, extra in list(variants.items())})
    results: dict[str, list[dict]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for index, (name, extra) in enumerate(variants.items()):
                run_dir = Path(tmp) / f"{index}-{round_}"
                command = [
                    sys.executable,
                    "-m",
                    "cohort.cli",
                    "train",
                    args.config,
                    *common,
                    *extra,
                    f"run_dir={run_dir}",
                ]
                subprocess.run(command, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
                results[name] += epoch_rows(run_dir)
    speed = {name: statistics.median(r["images_per_s"] for r in rows) for name, rows in results.items()}
    print(
        f"images/s per member (median over {len(results['dml'])} member-epochs each): "
        + ", ".join(f"{name} {value:.0f}" for name, value in speed.items())
    )
    for suffix in ("", " pinned"):
        if f"dml{suffix}" not in speed:
            continue
        dml, independent = speed[f"dml{suffix}"], speed[f"independent{suffix}"]
        in_exchange = statistics.median(r["exchange_seconds"] / r["seconds"] for r in results[f"dml{suffix}"])
        print(
            f"DML / independent throughput ratio{suffix}: {dml / independent:.3f} "
            f"(exchange cost {100 * (1 - dml / independent):+.1f} %; target <= 5 %); epoch time in the all-gather, "
            f"waiting for the slower peer included: {100 * in_exchange:.1f} %"
        )
    if args.pin:
        print(
            f"pinned / unpinned: DML {speed['dml pinned'] / speed['dml']:.3f}, "
            f"independent {speed['independent pinned'] / speed['independent']:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
