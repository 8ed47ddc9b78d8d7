"""What each way of reading peers costs: images/s per member of K = 2 cohorts, side by side.

    .venv/bin/python bench/exchange_modes.py [--rounds 2] [--epochs 5] [--delay-ms 20] [--only equal ...]

Five modes: DML exchanging logits every step, every 4th and every 16th step
(``exchange.every``), codistillation refreshing copies every 50 steps
(``exchange.mode: codistill``), and independent members (no exchange). Three settings:
``equal`` (two small CNNs), ``straggler`` (a small CNN beside a ResNet-20, several times
slower) and ``delay`` (two small CNNs whose exchange collectives each wait ``--delay-ms``
first, as over a slow link: this kernel has no netem to delay loopback for real, so the
bench's own worker, ``bench/delayed_link.py``, sleeps before every all-gather and broadcast
of a step). Every run is a real torchrun cohort on the digits; the modes alternate within a
round so that drift in the machine's load hits them alike; epoch 1 (FFCV's compilation) is
left out; images/s per member are medians over member-epochs. It also prints the bytes a
rank receives per step in each mode, from the sizes.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODES = {
    "DML, every step": ["exchange.every=1"],
    "every 4": ["exchange.every=4"],
    "every 16": ["exchange.every=16"],
    "codistill, refresh 50": ["exchange.mode=codistill", "exchange.refresh_every=50", "data.sample_order=per_member"],
    "independent": ["loss.mimicry.weight=0"],
}
SETTINGS = {
    "equal": "members=[{arch: small_cnn, policy: crop}, {arch: small_cnn, policy: crop}]",
    "straggler": "members=[{arch: small_cnn, policy: crop}, {arch: resnet20, policy: crop}]",
    "delay": "members=[{arch: small_cnn, policy: crop}, {arch: small_cnn, policy: crop}]",
}


def member_rows(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]


def bytes_received(config, meta: dict) -> str:
    """What one rank receives per step over the exchange, averaged over the exchange's cadence
    (and, for codistillation, over the members: each receives its peers' parameters)."""
    from cohort.dist.memory import parameter_bytes

    k, batch, classes = config.num_members, config.data.batch_size, meta["num_classes"]
    if not config.reads_peers:
        return "0 B"
    if config.exchange.mode == "logits":
        message = batch * (classes + 1) * 4  # [B, C] logits and the index column, float32
        return f"{message * (k - 1) / config.exchange.every:.0f} B ({message} from each peer per gather)"
    per_refresh = sum(parameter_bytes(config, meta)) * (k - 1) / k  # the peers' parameters, a member's mean
    return f"{per_refresh / config.exchange.refresh_every:.0f} B ({per_refresh:.0f} per refresh)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--only", nargs="*", choices=list(SETTINGS), help="settings to run (default: all)")
    args = parser.parse_args()
    from cohort.config import load_config
    from cohort.data.folder import read_meta
    from cohort.launch.torchrun import launch_local

    config_path = str(REPO / "configs" / "demo.yaml")
    common = [f"train.epochs={args.epochs}", "train.progress=false", "train.threads_per_rank=1"]
    speeds: dict[str, dict[tuple[str, int], list[float]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for setting in args.only or list(SETTINGS):
            module = "cohort.train"
            if setting == "delay":  # the workers of this setting wait before each exchange collective
                os.environ["COHORT_BENCH_DELAY_S"] = str(args.delay_ms / 1000)
                os.environ["PYTHONPATH"] = f"{REPO / 'bench'}:{os.environ.get('PYTHONPATH', '')}"
                module = "delayed_link"
            table = speeds[setting] = {(mode, m): [] for mode in MODES for m in range(2)}
            for round_ in range(args.rounds):
                for index, (mode, extra) in enumerate(MODES.items()):
                    run_dir = Path(tmp) / f"{setting}-{index}-{round_}"
                    argv = [config_path, SETTINGS[setting], *common, *extra, f"run_dir={run_dir}"]
                    code = launch_local(argv, load_config(argv[0], argv[1:]).world_size, module=module)
                    if code != 0:
                        print(f"{setting} / {mode}: exit {code}", file=sys.stderr)
                        return code
                    for row in member_rows(run_dir):
                        table[mode, row["member"]].append(row["images_per_s"])
            os.environ.pop("COHORT_BENCH_DELAY_S", None)
    meta = read_meta(load_config(config_path).data.root)
    print(f"\nimages/s per member, median over {args.rounds} rounds × {args.epochs - 1} epochs (epoch 1 left out):")
    print("| mode | " + " | ".join(speeds) + " | received per step and rank |")
    print("|---|" + "---|" * (len(speeds) + 1))
    for mode, extra in MODES.items():
        cells = []
        for table in speeds.values():
            per = [statistics.median(table[mode, m]) for m in range(2)]
            ratio = sum(per) / sum(statistics.median(table["independent", m]) for m in range(2))
            cells.append(f"{per[0]:.0f} / {per[1]:.0f} ({ratio:.2f})")
        config = load_config(config_path, [SETTINGS["equal"], *extra])
        print(f"| {mode} | " + " | ".join(cells) + f" | {bytes_received(config, meta)} |")
    print("\nEach cell: member 0 / member 1 images/s (the two members' sum against independent's).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
