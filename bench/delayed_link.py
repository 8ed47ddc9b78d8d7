"""A training rank whose exchange collectives each wait first, as over a slow link (for
``bench/exchange_modes.py``'s ``delay`` setting; never used by cohort itself).

    COHORT_BENCH_DELAY_S=0.02 PYTHONPATH=bench torchrun ... -m delayed_link CONFIG [key=value ...]

This kernel has no netem to delay loopback traffic, so the delay is added in the process: a
sleep before every ``all_gather`` (the logit exchange) and ``broadcast`` (codistillation's
refresh) of a tensor. Evaluation's gathers and the checkpoints' broadcasts wait too, outside
the epoch's timed steps.
"""

import functools
import os
import sys
import time

import torch.distributed as dist

from cohort.train.worker import main


def delayed(collective, seconds: float):
    @functools.wraps(collective)
    def wait_then(*args, **kwargs):
        time.sleep(seconds)
        return collective(*args, **kwargs)

    return wait_then


if __name__ == "__main__":
    delay = float(os.environ["COHORT_BENCH_DELAY_S"])
    dist.all_gather = delayed(dist.all_gather, delay)
    dist.broadcast = delayed(dist.broadcast, delay)
    sys.exit(main())
