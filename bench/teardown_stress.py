"""Exit right after stopping an epoch early, many times, with the cores busy: does the process abort?

    .venv/bin/python bench/teardown_stress.py [--runs 24] [--burners 2] [--batch 512]

A training epoch cut short (``train.max_steps_per_epoch``, a stop signal, the end of a step
budget) closes its FFCV loader while the loader's prefetch thread may still be decoding the
next batches in numba's compiled, TBB-parallel pipeline. If the process then exits before that
thread is done, the C++ runtime tears TBB down under it and the process dies with SIGABRT,
"terminate called without an active exception": a finished rank reported as failed (it
happened to a distillation test in the suite, on a busy machine). ``MemberLoader.epoch`` now
stops the thread and waits for it (``cohort.data.loader.stop_prefetch``).

Each run is a fresh process that reads one batch of a training epoch, closes it and exits at
once, while ``--burners`` processes spin on the cores. The variants alternate:
``close-only`` (FFCV's close() alone, as at first: the wait set to 0 s), ``close-and-join``
(close(), then wait for the thread, which notices the close after its queue's 0.5 s put
timeout) and ``stop-prefetch`` (cohort's now: the thread's batch list emptied and its queue
drained until it ends). It prints the aborts of each and the mean time the close took, side
by side. A probe, not a test: the abort needs the thread to be mid-batch at exit, which a
busy machine makes likely, not certain.
"""

from __future__ import annotations

import argparse
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VARIANTS = ("close-only", "close-and-join", "stop-prefetch")
CLOSE_TOOK = "close took "


def child(root: Path, variant: str, batch: int) -> None:
    import torch

    from cohort.data import loader as loader_module

    if variant == "close-only":
        loader_module.PREFETCH_STOP_TIMEOUT_S = 0.0
    elif variant == "close-and-join":

        def close_and_join(batches) -> None:
            batches.close()
            batches.join(timeout=60.0)

        loader_module.stop_prefetch = close_and_join
    loader = loader_module.MemberLoader(
        root,
        "train",
        member=0,
        replica=0,
        replicas=1,
        seed=0,
        policy="crop",
        batch_size=batch,
        num_workers=2,
        device=torch.device("cpu"),
        train=True,
    )
    batches = loader.epoch(0)
    next(batches)
    started = time.perf_counter()
    batches.close()  # the process exits right after
    print(f"{CLOSE_TOOK}{time.perf_counter() - started:.4f}", flush=True)


def burn(stop_at: float) -> None:
    while time.time() < stop_at:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=24, help="runs of each variant")
    parser.add_argument("--burners", type=int, default=2, help="processes spinning on the cores meanwhile")
    parser.add_argument("--batch", type=int, default=512, help="batch size (a larger batch is longer in flight)")
    parser.add_argument("--root", default=str(REPO / "data" / "digits"), help="a `cohort data digits` folder")
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.root)
    if args.child:
        child(root, args.child, args.batch)
        return
    from cohort.data.datasets import ensure_data

    ensure_data(str(root), "digits")
    aborts = dict.fromkeys(VARIANTS, 0)
    took: dict[str, list[float]] = {variant: [] for variant in VARIANTS}
    burners = [
        multiprocessing.Process(target=burn, args=(time.time() + 3600,), daemon=True) for _ in range(args.burners)
    ]
    for process in burners:
        process.start()
    started = time.perf_counter()
    try:
        for run in range(args.runs):
            for variant in VARIANTS:
                done = subprocess.run(
                    [sys.executable, __file__, "--root", str(root), "--batch", str(args.batch), "--child", variant],
                    cwd=REPO,
                    capture_output=True,
                    text=True,
                    timeout=600,
                )
                took[variant] += [
                    float(line[len(CLOSE_TOOK) :]) for line in done.stdout.splitlines() if line.startswith(CLOSE_TOOK)
                ]
                if done.returncode != 0:
                    aborts[variant] += 1
                    last = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
                    print(f"run {run + 1} {variant}: exit {done.returncode}: {last}", flush=True)
    finally:
        for process in burners:
            process.terminate()
    print(
        f"\n{args.runs} runs of each variant, {args.burners} burners, batch {args.batch}, "
        f"{time.perf_counter() - started:.0f} s"
    )
    for variant in VARIANTS:
        mean = sum(took[variant]) / max(1, len(took[variant]))
        print(f"{variant:<15} {aborts[variant]:>3} / {args.runs} aborted, close took {mean * 1000:6.1f} ms on average")


if __name__ == "__main__":
    main()
