"""Train a cohort, one process per rank (``cohort train`` starts them for you):

    torchrun --nproc-per-node K*R -m cohort.train CONFIG [key=value ...]
    srun python -m cohort.train CONFIG [key=value ...]

Only the entry point: a rank's process (exit codes, one-line errors, lost peers) is
``cohort.train.worker``, its training loop ``cohort.train.trainer``, the checks before it starts
``cohort.preflight``.
"""

import sys

from cohort.train.worker import main

if __name__ == "__main__":
    sys.exit(main())
