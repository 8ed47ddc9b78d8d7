"""Start a cohort's K×R processes on this machine through torchrun's own API.

Equivalent to ``torchrun --standalone --nproc-per-node K*R -m cohort.train CONFIG ...`` (or
``-m cohort.evaluate.worker RUN_DIR ...``):
torchrun picks a free rendezvous port, watches the workers and, when one fails, stops
the others, so an error on any rank ends the whole cohort instead of hanging it.

SIGTERM and SIGINT (Ctrl-C) to this process are handled here, not by torchrun's agent (which
would forward them, wait 30 s, SIGKILL and raise a ``SignalException`` traceback): the first
is forwarded to the workers as SIGTERM, a stop signal (``cohort.dist.stopping``), and the agent
goes on watching them while they agree on a step, save and exit; then one line, exit 0.
A second SIGINT is forwarded as SIGINT: the workers stop at once, without saving.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
from pathlib import Path

from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.run import get_args_parser, run

from cohort.dist.stopping import LAUNCHER_PID_ENV


def launch_local(arguments: list[str], nproc: int, max_restarts: int = 0, module: str = "cohort.train") -> int:
    """Run ``python -m MODULE ARGUMENTS`` in ``nproc`` local processes (``cohort.train``:
    CONFIG [key=value ...]; ``cohort.evaluate.worker``: RUN_DIR [options]); returns their exit code."""
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
            # SIGTERM and SIGINT are this module's (LauncherSignals); the agent keeps the others.
            "--signals-to-handle",
            "SIGHUP,SIGQUIT",
            "--module",
            module,
            *arguments,
        ]
    )
    # The workers (this process's children) stop when it dies: ``cohort.train.worker.die_with_launcher``.
    outer = os.environ.get(LAUNCHER_PID_ENV)
    os.environ[LAUNCHER_PID_ENV] = str(os.getpid())
    signals = LauncherSignals(module)
    signals.install()
    try:
        try:
            run(args)
        finally:
            signals.running = False
    except ChildFailedError as failure:
        rank, info = failure.get_first_failure()
        if signals.received:
            print(
                f"cohort: stopped by {signals.name} to the launcher, but rank {rank} exited with code "
                f"{info.exitcode}, not cleanly; continue with resume=auto from the last complete checkpoint",
                file=sys.stderr,
            )
        else:
            print(f"cohort: rank {rank} exited with code {info.exitcode}; its error is printed above", file=sys.stderr)
        return info.exitcode if isinstance(info.exitcode, int) and info.exitcode > 0 else 1
    except (SignalException, NoWorkers) as stop:
        # SIGHUP or SIGQUIT (the agent's: it stopped the workers), or a stop before any worker started.
        signum = stop.sigval if isinstance(stop, SignalException) else stop.signum
        print(f"cohort: stopped by {signal.Signals(signum).name} before the workers could save", file=sys.stderr)
        return 128 + signum
    finally:
        signals.restore()
        # Not left behind for other torchrun cohorts this process may start (tests call main()).
        if outer is None:
            os.environ.pop(LAUNCHER_PID_ENV, None)
        else:
            os.environ[LAUNCHER_PID_ENV] = outer
    if signals.received:
        print(
            f"cohort: stopped by {signals.name} to the launcher; every rank ended cleanly "
            "(where it saved is printed above); continue with resume=auto",
            file=sys.stderr,
        )
    return 0


class NoWorkers(Exception):
    """A stop signal reached the launcher before it had started any worker."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class LauncherSignals:
    """SIGTERM and SIGINT to the launcher: the first is forwarded to the workers as SIGTERM
    (a stop signal, ``cohort.dist.stopping``); a second SIGINT is forwarded as SIGINT (a second
    Ctrl-C: stop at once). The agent keeps watching the workers meanwhile, so their exit
    codes decide the launcher's."""

    SIGNALS = (signal.SIGTERM, signal.SIGINT)

    def __init__(self, module: str):
        self.module = module
        self.received = 0  # the first of SIGNALS to arrive (0: none)
        self.running = True  # whether the agent may still start workers
        self.previous: dict[int, object] = {}

    @property
    def name(self) -> str:
        return signal.Signals(self.received).name

    def install(self) -> None:
        if threading.current_thread() is threading.main_thread():
            self.previous = {signum: signal.signal(signum, self.request) for signum in self.SIGNALS}

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def request(self, signum, frame) -> None:
        if self.received and signum != signal.SIGINT:
            return  # the stop is under way already
        forward = signal.SIGINT if self.received else signal.SIGTERM
        self.received = self.received or signum
        workers = worker_pids(self.module)
        if not workers and self.running:
            raise NoWorkers(signum)  # the agent's cleanup stops any it starts meanwhile
        for pid in workers:
            try:
                os.kill(pid, forward)
            except ProcessLookupError:
                pass  # it exited meanwhile


def worker_pids(module: str) -> list[int]:
    """This process's children that run ``python -m MODULE`` (the agent's workers), from /proc."""
    me, pids = os.getpid(), []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            if parent == me and module in (entry / "cmdline").read_bytes().decode(errors="replace").split("\0"):
                pids.append(int(entry.name))
        except (OSError, ValueError, IndexError):
            continue  # gone meanwhile, or not ours to read
    return pids
