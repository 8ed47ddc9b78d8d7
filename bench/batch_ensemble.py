"""What a BatchEnsemble member costs against n separate members, side by side on the same cores.

    .venv/bin/python bench/batch_ensemble.py [--arch resnet20] [--n 4] [--batch 64] [--steps 10] [--cohort]

K = 1 (in this process's children, one configuration at a time, alternating, on the same
cores): training steps (forward, backward, SGD) of one BE-n network on a batch of B images
(repeated n times inside it) against n separate networks each stepping on the same B images,
in one process. Reports images/s per internal member (B·steps·n / seconds), the peak resident
memory of a process that ran only that configuration (``ru_maxrss``), and parameters.

``--cohort``: the same inside a K = 2 cohort of real ranks (``cohort train`` on the digits data,
small CNNs): two BE-n members against 2·n plain members, epochs of a fixed step count, the
epoch's images/s from ``metrics.jsonl`` summed over ranks (times n for the BE members: each
image trains n internal members). Epoch 1 (FFCV's JIT compilation) is left out.
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


def child(arch: str, n: int, batch: int, steps: int, separate: bool, threads: int) -> dict:
    """Time ``steps`` training steps of one configuration in this (fresh) process."""
    import resource
    import time

    import torch

    from cohort.models import build_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    norm = ([0.5] * 3, [0.25] * 3)
    if separate:
        nets = [build_model(arch, 10, *norm) for _ in range(n)]
    else:
        nets = [build_model(arch, 10, *norm, batch_ensemble=n)]
    optims = [torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9) for net in nets]
    x, y = torch.rand(batch, 3, 32, 32), torch.randint(0, 10, (batch,))

    def step() -> None:
        for net, optim in zip(nets, optims):
            logits = net(x)
            labels = y if logits.dim() == 2 else y.repeat(n)  # a BatchEnsemble's [n, B, C]
            loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 10), labels)
            optim.zero_grad()
            loss.backward()
            optim.step()

    step()  # warm-up
    start = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    return {
        "images_per_s_per_member": batch * steps * n / seconds,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "params": sum(p.numel() for net in nets for p in net.parameters()),
    }


def one_process(arch: str, n: int, batch: int, steps: int, separate: bool, threads: int) -> dict:
    """``child`` in a fresh process, so that its peak memory is that configuration's alone."""
    args = ["--child", f"--arch={arch}", f"--n={n}", f"--batch={batch}", f"--steps={steps}", f"--threads={threads}"]
    command = [sys.executable, __file__, *args, *(["--separate"] if separate else [])]
    out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def in_process(args) -> None:
    results: dict[str, list[dict]] = {f"BE-{args.n}": [], f"{args.n} separate": []}
    for _ in range(args.rounds):  # alternate, so drift in machine load hits both alike
        for name, separate in ((f"BE-{args.n}", False), (f"{args.n} separate", True)):
            results[name].append(one_process(args.arch, args.n, args.batch, args.steps, separate, args.threads))
    print(
        f"K = 1, {args.arch}, batch {args.batch}, {args.steps} steps × {args.rounds} rounds, {args.threads} thread(s):"
    )
    print(f"{'':<14} {'img/s per member':>17} {'peak RSS MiB':>13} {'parameters':>11}")
    for name, rows in results.items():
        speed = statistics.median(r["images_per_s_per_member"] for r in rows)
        print(f"{name:<14} {speed:>17.1f} {max(r['peak_rss_mib'] for r in rows):>13.0f} {rows[0]['params']:>11,}")
    be, sep = (statistics.median(r["images_per_s_per_member"] for r in rows) for rows in results.values())
    print(f"ratio BE / separate, images/s per internal member: {be / sep:.2f}")


def cohort_epochs(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if r["split"] == "val" and r["member"] != "ensemble" and r["epoch"] >= 1]


def in_cohort(args) -> None:
    n = args.n
    variants = {
        f"2 × BE-{n}": [
            f"members=[{{arch: small_cnn, batch_ensemble: {n}}}, {{arch: small_cnn, batch_ensemble: {n}}}]"
        ],
        f"{2 * n} plain": ["members=[" + ", ".join(["{arch: small_cnn}"] * (2 * n)) + "]"],
    }
    common = ["train.epochs=4", "train.max_steps_per_epoch=20", "train.progress=false", "views=shared"]
    speeds: dict[str, list[float]] = {name: [] for name in variants}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.rounds):
            for index, (name, extra) in enumerate(variants.items()):
                run_dir = Path(tmp) / f"{index}-{round_}"
                command = [sys.executable, "-m", "cohort.cli", "train", str(REPO / "configs" / "digits_dml.yaml")]
                subprocess.run(
                    [*command, *common, *extra, f"run_dir={run_dir}"], cwd=REPO, check=True, capture_output=True
                )
                rows = cohort_epochs(run_dir)
                per_image = n if "BE" in name else 1  # each image trains n internal members of a BE rank
                for epoch in sorted({r["epoch"] for r in rows}):
                    # One row per network: a rank's images/s once per rank.
                    ranks = {r["member"]: r for r in rows if r["epoch"] == epoch}
                    seen = list(ranks.values())[::per_image]
                    speeds[name].append(sum(r["images_per_s"] for r in seen) * per_image)
    print(f"K = 2 cohort of small_cnn on digits (batch 64, views shared), {args.rounds} round(s):")
    for name, values in speeds.items():
        print(f"{name:<12} images/s per network, all ranks: {statistics.median(values):8.1f}")
    be, plain = (statistics.median(v) for v in speeds.values())
    print(f"ratio BE / plain: {be / plain:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="resnet20")
    parser.add_argument("--n", type=int, default=4)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--cohort", action="store_true", help="also compare inside a K = 2 cohort of real ranks")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--separate", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.arch, args.n, args.batch, args.steps, args.separate, args.threads)))
        return 0
    in_process(args)
    if args.cohort:
        in_cohort(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
