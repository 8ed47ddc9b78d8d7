"""Stop requests: a signal caught on one rank, agreed on by every rank, so that all of them save
at the same step and stop cleanly (SLURM's preemption and time limits, ``scancel``); and, before
a rank's first step, a stop that ends it at once (``Startup``), with its start-up timed.

No torch here: ``cohort submit``'s tasks guard their start-up with ``Startup`` before they
import torch (seconds, on a loaded node)."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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


STARTUP_PHASES = ("imports", "checks", "rendezvous", "trainer", "first step")
"""A rank's start-up, in order: the process's start to its worker's first line (the interpreter,
torch, submitit), the config and the data's checks (``cohort.preflight``), joining the process
groups, building the trainer (models, FFCV loaders) and opening and resuming the run, then the
first step (the first batch: FFCV compiles the training pipeline there)."""

STARTUP_STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""The stop signals that end a rank at once during its start-up. SIGINT is left to Python:
Ctrl-C then is a KeyboardInterrupt, one line and exit 130 (``cohort.train.worker``)."""

TIME_LIMIT_SIGNALS = (signal.SIGUSR1, signal.SIGUSR2)
"""The stop signals that announce a SLURM time limit: ``slurm/train.sbatch`` passes on SIGUSR1,
submitit's ``--signal`` is SIGUSR2 (SIGTERM is preemption, ``scontrol requeue`` or ``scancel``)."""


def process_age() -> float:
    """Seconds since this process started (Linux: ``/proc/self/stat``'s start time against the
    system's uptime); 0.0 where that cannot be read."""
    try:
        started = int(Path("/proc/self/stat").read_text().rpartition(")")[2].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, uptime - started / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


class StoppedAtStartup(BaseException):
    """A stop signal before this rank's first step: it leaves at once, saving nothing (it has
    trained nothing since its checkpoint). A BaseException, as KeyboardInterrupt is: the
    start-up's own ``except Exception`` (a model's dry run, a library's) must not swallow it."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class Startup:
    """A rank's start-up, from its process's start to the end of its first step: each phase of
    ``STARTUP_PHASES`` timed, and a stop signal meanwhile (``STARTUP_STOP_SIGNALS``) ends the rank
    at once (``StoppedAtStartup``).

    Before this, a rank signalled during its start-up went on starting up: under submitit,
    whose own handlers only log SIGTERM on every task and requeue from rank 0 alone, the other
    ranks then waited for SLURM's SIGKILL (its ``KillWait``, 30 s) after every requeue; and a
    time limit whose warning came before the first step requeued the job with nothing done,
    again and again (``cohort.run.attempts`` now counts such attempts)."""

    def __init__(self):
        self.began = self.mark = time.monotonic() - process_age()  # the first phase starts with the process
        self.phases: dict[str, float] = {}
        self.received = 0  # the stop signal that ended the start-up (0: none)
        self.done = False  # the first step is done: stops are agreed on from here (``StopSignals``)

    def install(self) -> None:
        for signum in STARTUP_STOP_SIGNALS:
            signal.signal(signum, self.stop_now)

    def stop_now(self, signum, frame) -> None:
        if self.received or self.done:  # leaving already, or training: not ours to handle
            return
        self.received = signum
        raise StoppedAtStartup(signum)

    def phase(self, name: str) -> None:
        """The phase ``name`` of ``STARTUP_PHASES`` ended now; a stop signal received during it
        whose exception was lost ends the start-up here."""
        if self.received and not self.done:
            # ``stop_now``'s exception goes nowhere when the signal lands in a ctypes callback
            # (numba compiling FFCV's pipeline calls back into Python through llvmlite:
            # "Exception ignored on calling ctypes callback function"); the rank then trained on
            # and the job, its time-limit warning lost, was not requeued.
            raise StoppedAtStartup(self.received)
        now = time.monotonic()
        self.phases[name], self.mark = now - self.mark, now
        self.done = self.done or name == STARTUP_PHASES[-1]

    @property
    def seconds(self) -> float:
        """Since the process started."""
        return time.monotonic() - self.began

    def describe(self) -> str:
        """``23.4 s (imports 5.1 s, checks 0.8 s, ..., trainer 9.0 s so far)``: the phases done, and
        the one in progress."""
        parts = [f"{name} {seconds:.1f} s" for name, seconds in self.phases.items()]
        if not self.done:
            current = next(name for name in STARTUP_PHASES if name not in self.phases)
            parts.append(f"{current} {time.monotonic() - self.mark:.1f} s so far")
        return f"{self.seconds:.1f} s ({', '.join(parts)})"


class StopSignals:
    """The first of ``STOP_SIGNALS`` this rank received, and the one the cohort agrees on.

    With a ``startup`` still running, its guard stays until the first step is done
    (``agreed`` then installs this one's handlers and rank 0 prints the start-up's phases): a
    stop before it ends the rank at once, one after it is agreed on and saved."""

    def __init__(self, mesh: CohortMesh, startup: Startup | None = None):
        self.mesh, self.startup = mesh, startup
        self.received = 0  # which of STOP_SIGNALS arrived first on this rank (0: none yet)

    def install(self) -> None:
        """Before the first epoch: this one's handlers, or, while a start-up runs, the end of its
        ``trainer`` phase (its guard stays until the first step)."""
        if self.startup is not None and not self.startup.done:
            self.startup.phase("trainer")
            return
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.request)

    def first_step_done(self) -> None:
        """The start-up is over: rank 0 says how long it took, and stops are agreed on from here."""
        self.startup.phase("first step")
        if self.mesh.is_main:
            print(f"cohort: started in {self.startup.describe()}", flush=True)
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
        """After each step: at every ``SIGNAL_CHECK_EVERY``-th, the stop signal any rank received
        (the highest number if several), else 0; a collective there. Every rank learns it, so all
        of them save at this step, even those SLURM did not signal. (After the first step of a
        start-up, that start-up ends: ``first_step_done``.)"""
        if self.startup is not None and not self.startup.done:
            self.first_step_done()
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
