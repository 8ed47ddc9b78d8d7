"""Stop requests: a signal caught on one rank, agreed on by every rank, so that all of them save
at the same step and stop cleanly (SLURM's preemption and time limits, ``scancel``)."""

from __future__ import annotations

import os
import signal
import sys

from cohort.dist.mesh import CohortMesh

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGUSR2)
"""Each asks for an agreed checkpoint and a clean stop: SIGTERM from SLURM's preemption,
``scontrol requeue`` or ``scancel``, or from ``cohort train``'s launcher when it is stopped
(``launch/torchrun.py``) or dies; SIGINT from Ctrl-C; SIGUSR1/SIGUSR2 as SLURM's ``--signal``
before a time limit (SIGUSR2 is submitit's, which then requeues the job)."""

INTERRUPTED_EXIT = 130
"""The exit code of a rank that a second Ctrl-C (SIGINT) stopped at once, without saving:
128 + SIGINT, as a shell reports a process that Ctrl-C ended."""

LAUNCHER_PID_ENV = "COHORT_LAUNCHER_PID"
"""Set by ``cohort train``'s launcher to its process id: its workers check that their parent
is still this process once they asked to be signalled when it dies (``cohort.train.worker``)."""

SIGNAL_CHECK_EVERY = 8
"""Steps between the collective checks for a stop signal: often enough to stop within
seconds, rare enough not to lock independent members into step with each other."""


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint every rank agreed on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


class StopSignals:
    """The first of ``STOP_SIGNALS`` this rank received, and the one the cohort agrees on."""

    def __init__(self, mesh: CohortMesh):
        self.mesh = mesh
        self.received = 0  # which of STOP_SIGNALS arrived first on this rank (0: none yet)

    def install(self) -> None:
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.request)

    def request(self, signum, frame) -> None:
        """One of STOP_SIGNALS: finish the step, agree with the other ranks, checkpoint, stop.
        A SIGINT after a stop was asked for (a second Ctrl-C) stops this rank at once: no
        checkpoint, no traceback, exit code ``INTERRUPTED_EXIT``."""
        if not self.received:
            self.received = signum
        elif signum == signal.SIGINT:
            if self.mesh.is_main:
                print(
                    "cohort: stopped at once by a second SIGINT, without saving; "
                    "continue with resume=auto from the last complete checkpoint",
                    file=sys.stderr,
                    flush=True,
                )
            sys.stdout.flush()
            # At once: not through the trainer's cleanup, whose collectives would wait for
            # peers that are exiting too.
            os._exit(INTERRUPTED_EXIT)

    def agreed(self, step: int) -> int:
        """At every ``SIGNAL_CHECK_EVERY``-th step, the stop signal any rank received (the highest
        number if several), else 0; a collective there. Every rank learns it, so all of them
        save at this step, even those SLURM did not signal."""
        if step % SIGNAL_CHECK_EVERY:
            return 0
        return self.mesh.max_over_ranks(self.received)


def stopped(signum: int, step: int, saved: str) -> Stopped:
    """The stop after the agreed checkpoint ``saved`` at ``step``."""
    return Stopped(
        f"stopped by {signal.Signals(signum).name} at step {step} after saving {saved}; continue with resume=auto",
        signum,
    )


def ignore_stop_signals() -> None:
    """Training is over (finished, or saved and stopped): a stop signal now has nothing to
    save, and Python's default action would kill the exiting process, turning a finished SLURM
    job into FAILED (a --signal that lands just after the last step)."""
    for signum in STOP_SIGNALS:
        signal.signal(signum, signal.SIG_IGN)
