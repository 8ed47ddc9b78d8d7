"""Start a cohort's K×R processes on this machine through torchrun's own API.

Equivalent to ``torchrun --standalone --nproc-per-node K*R -m cohort.train CONFIG ...`` (or
``-m cohort.eval_worker RUN_DIR ...``):
torchrun picks a free rendezvous port, watches the workers and, when one fails, stops
the others, so an error on any rank ends the whole cohort instead of hanging it.
"""

from __future__ import annotations

import logging
import os
import sys

from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from cohort.stopping import LAUNCHER_PID_ENV


def launch_local(arguments: list[str], nproc: int, max_restarts: int = 0, module: str = "cohort.train") -> int:
    """Run ``python -m MODULE ARGUMENTS`` in ``nproc`` local processes (``cohort.train``:
    CONFIG [key=value ...]; ``cohort.eval_worker``: RUN_DIR [options]); returns their exit code."""
    # torchrun warns about OMP_NUM_THREADS when it is unset; cohort.train sets torch's
    # thread count itself (train.threads_per_rank), so say so and silence the warning.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The agent's own logs repeat what the failing rank already printed in one line.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    args = get_args_parser().parse_args(
        [
            "--standalone",
            "--nproc-per-node",
            str(nproc),
            "--max-restarts",
            str(max_restarts),
            "--monitor-interval",
            "0.5",
            "--module",
            module,
            *arguments,
        ]
    )
    # The workers (this process's children) stop when it dies: ``cohort.worker.die_with_launcher``.
    outer = os.environ.get(LAUNCHER_PID_ENV)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    try:
        run(args)
    except ChildFailedError as failure:
        rank, info = failure.get_first_failure()
        print(f"cohort: rank {rank} exited with code {info.exitcode}; its error is printed above", file=sys.stderr)
        return info.exitcode if isinstance(info.exitcode, int) and info.exitcode > 0 else 1
    finally:
        # Not left behind for other torchrun cohorts this process may start (tests call main()).
        if outer is None:
            os.environ.pop(LAUNCHER_PID_ENV, None)
        else:
            os.environ[LAUNCHER_PID_ENV] = outer
    return 0
