"""One rank's process: build the config, the mesh and the trainer, run it, and turn every
way it can end into an exit code and at most one line on stderr.

``python -m cohort.train`` (under torchrun or srun) and ``cohort submit``'s SLURM tasks
enter here. The trainer itself (``cohort.train.trainer``) knows nothing of exit codes, of which
rank prints an error, or of how a lost peer is diagnosed.
"""

from __future__ import annotations

import ctypes
import datetime
import os
import signal
import sys
import time
from dataclasses import dataclass

import torch.distributed as dist

from cohort.config import CohortConfig, load_config
from cohort.dist.mesh import Launch, detect_launch, join_cohort
from cohort.dist.node import Node, where
from cohort.dist.stopping import (
    INTERRUPTED_EXIT,
    LAUNCHER_PID_ENV,
    TIME_LIMIT_SIGNALS,
    Startup,
    Stopped,
    StoppedAtStartup,
    ignore_stop_signals,
)
from cohort.errors import CohortError
from cohort.preflight import plan_run
from cohort.run.attempts import MAX_STALLED, record_stall, stall_error
from cohort.run.directory import RunDir
from cohort.run.opening import open_run
from cohort.train.trainer import Trainer

USAGE = """Train a cohort: one member per rank (R replica ranks with DDP), learning from each other
through a logit exchange.

    torchrun --nproc-per-node K*R -m cohort.train CONFIG [key=value ...]
    cohort train CONFIG [key=value ...]       # the same; starts the K*R processes for you
"""


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        return 0 if argv else 2
    return run_worker(argv, detect_launch()).exit_code


@dataclass(frozen=True)
class WorkerExit:
    """How a rank's training ended: its exit code, and the signal that stopped it (0: none)."""

    exit_code: int
    stopped_by: int = 0


def run_worker(argv: list[str], launch: Launch, startup: Startup | None = None) -> WorkerExit:
    """Train this rank's part of the cohort (``argv``: CONFIG [key=value ...]); never raises
    for the errors a user can fix, and prints each of them once, as one line. ``startup``: the
    start-up guard its caller installed before its own imports (``cohort submit``'s task);
    else one from here: until the first step a stop signal ends the rank at once."""
    startup = startup or Startup()
    startup.install()
    startup.phase("imports")
    trainer = mesh = hold = config = None
    try:
        if launch.launcher == "torchrun":
            die_with_launcher()
        config = load_config(argv[0], argv[1:])
        # Before the process group: an error every rank meets alike is printed once, by rank 0.
        plan = plan_run(config)
        startup.phase("checks")
        mesh = join_cohort(config, launch)
        startup.phase("rendezvous")
        try:
            trainer = Trainer(plan, mesh, startup)
            hold = open_run(plan, mesh)
            trainer.fit()
        except Exception as error:
            shared = isinstance(error, Stopped) or (isinstance(error, CohortError) and error.shared)
            if not shared and not is_collective_failure(error):
                tell_peers_of_failure(mesh.store, launch.rank, error)  # this rank's own error
            raise
        except StoppedAtStartup:
            tell_peers(mesh.store, LEFT_AT_STARTUP_KEY.format(rank=launch.rank), "1")  # not a lost rank
            raise
        finally:
            if hold is not None:
                hold.release()
            mesh.close()
            ignore_stop_signals()
    except CohortError as error:
        # Leaving: the start-up's guard (``Startup``) would turn torchrun's SIGTERM to the other
        # ranks, once one has exited, into a traceback in the wait below.
        ignore_stop_signals()
        # An error every rank meets alike is printed once (by rank 0); an error of one rank
        # (its own loss went non-finite) by that rank (``cohort.errors``).
        if launch.rank == 0 or not error.shared:
            print(f"cohort: error: {error}", file=sys.stderr, flush=True)
        else:
            # torchrun stops every worker once one exits; a silent rank that exited first
            # could get rank 0 stopped before it prints the error they share.
            time.sleep(2.0)
        return WorkerExit(1)
    except StoppedAtStartup as stop:
        return stopped_at_startup(stop.signum, launch, config, startup)
    except KeyboardInterrupt:  # Ctrl-C before the stop handlers are installed (after the first step)
        if launch.rank == 0:
            print("cohort: interrupted (Ctrl-C) before training started; nothing was saved", file=sys.stderr)
        return WorkerExit(INTERRUPTED_EXIT)
    except Stopped as stop:
        if launch.rank == 0:
            print(f"cohort: {stop}", flush=True)
        return WorkerExit(0, stop.signum)
    except RuntimeError as error:
        # gloo and NCCL report a dead or stalled peer as a RuntimeError from the collective.
        if mesh is None or not is_collective_failure(error):
            raise
        signum = startup.received or (trainer.stops.received if trainer is not None else 0)
        if signum and left_at_startup(mesh.store, launch.world_size):
            # This rank was signalled too, and a peer still starting up left at once on it.
            return stopped_at_startup(signum, launch, config, startup, trainer.step if trainer else None)
        step = trainer.step if trainer is not None else 0
        print(
            f"cohort: error: {lost_peers_message(mesh.store, launch, config, step, mesh.nodes)}",
            file=sys.stderr,
            flush=True,
        )
        return WorkerExit(1)
    return WorkerExit(0)


def stopped_at_startup(
    signum: int, launch: Launch, config: CohortConfig | None, startup: Startup, step: int | None = None
) -> WorkerExit:
    """A stop signal before the first step (``cohort.dist.stopping.Startup``): this rank left at
    once, saving nothing; or (``step``: where this rank was) a peer still starting up did, on
    the same signal, and this rank's next collective failed. Rank 0 says so with the start-up's
    phases; a time limit's warning is counted (``cohort.run.attempts``), and the
    ``MAX_STALLED``-th in a row ends the job with one line instead of another requeue."""
    if launch.rank != 0:
        return WorkerExit(0, signum)
    name = signal.Signals(signum).name
    run = RunDir(config.run_dir) if config is not None else None
    if signum in TIME_LIMIT_SIGNALS and run is not None and run.config_file.is_file():
        try:
            stalled = record_stall(run, name, startup.describe())
            if stalled >= MAX_STALLED:
                raise stall_error(run, stalled, name, startup.describe())
        except CohortError as error:
            print(f"cohort: error: {error}", file=sys.stderr, flush=True)
            return WorkerExit(1)
    where = (
        f"at step {step}, where a peer still starting up left at once on it: nothing saved since the last checkpoint"
        if startup.done and step is not None
        else f"during start-up, {startup.describe()}, before the first step: nothing new to save"
    )
    print(f"cohort: stopped by {name} {where}; continue with resume=auto", flush=True)
    return WorkerExit(0, signum)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>

LAUNCHER_DEATH_SIGNAL = signal.SIGTERM
"""What a torchrun worker receives when its launcher dies (``kill -9`` of ``cohort train``, or
of torchrun's agent). SIGTERM is a stop signal (``cohort.dist.stopping``): every rank gets it at
once, and the gloo process groups connect the ranks to each other, not through the agent,
so they can still agree on a step, save there and exit 0, ready for ``resume=auto``. Where
that cannot complete (a peer already gone), the collective fails or times out and the rank
exits non-zero within ``train.dist_timeout_s``, so a worker never outlives its launcher for
long. SIGKILL would end the workers at once, but throw away the steps since the last
checkpoint; before its first step (``cohort.dist.stopping.Startup``), SIGTERM ends a worker at once."""


def die_with_launcher(signum: int = LAUNCHER_DEATH_SIGNAL) -> None:
    """Ask Linux to send ``signum`` to this process when its parent (torchrun's agent) dies;
    if the parent died before the call, send it now. Nothing elsewhere than Linux.

    The kernel signals on the exit of the parent *thread* that forked this process: the
    agent starts its workers from its main thread, which lives as long as the agent."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
        return  # not worth failing a run over: the worker then only lacks this guarantee
    # The parent may have died between this process's start and the call: it was then
    # reparented (to init or a subreaper). ``cohort train`` says which parent to expect; under
    # a bare torchrun, whose agent may itself be process 1 in a container, nothing is checked.
    launcher = os.environ.get(LAUNCHER_PID_ENV, "")
    if launcher.isdigit() and os.getppid() != int(launcher):
        os.kill(os.getpid(), signum)


def is_collective_failure(error: Exception) -> bool:
    if not isinstance(error, RuntimeError):
        return False
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        marker in text for marker in ("gloo", "Timed out", "Connection closed by peer", "NCCL", "timed out")
    )


FAILED_KEY = "cohort/failed/{rank}"
"""Where a rank that fails with an error of its own says so, for its peers' message."""
LEFT_AT_STARTUP_KEY = "cohort/left-at-startup/{rank}"
"""Where a rank that a stop signal ended before its first step says so: its peers already
training, signalled too, then stop as it did instead of reporting it lost (or failed)."""


def tell_peers(store: dist.Store, key: str, text: str) -> None:
    """Set ``key`` in the rendezvous store before this rank exits, for its peers' message."""
    try:
        store.set_timeout(datetime.timedelta(seconds=5))
        store.set(key, text)
    except Exception:  # the store is gone: the peers will say they lost this rank
        pass


def tell_peers_of_failure(store: dist.Store, rank: int, error: Exception) -> None:
    """Record ``error`` (its type and first line) in the rendezvous store before this rank exits,
    so that its peers, whose collectives then fail, name it instead of reporting a lost peer."""
    tell_peers(
        store, FAILED_KEY.format(rank=rank), f"{type(error).__name__}: {(str(error).splitlines() or [''])[0]}"[:200]
    )


def left_at_startup(store: dist.Store, world_size: int) -> bool:
    """Whether a rank recorded that a stop signal ended it before its first step (``LEFT_AT_STARTUP_KEY``)."""
    try:
        store.set_timeout(datetime.timedelta(seconds=5))
        return any(store.check([LEFT_AT_STARTUP_KEY.format(rank=r)]) for r in range(world_size))
    except Exception:  # the store went down with its host
        return False


def lost_peers_message(
    store: dist.Store, launch: Launch, config: CohortConfig, step: int, nodes: list[Node] | None = None
) -> str:
    """Say why this rank's collective failed, through the rendezvous store: a peer that failed
    with an error of its own (``tell_peers_of_failure``) is named with its error; otherwise,
    the members that stopped answering and, given every rank's node (``CohortMesh.nodes``),
    where they ran: a node whose every rank is silent is named as lost whole.

    Every surviving rank records itself in the store and waits a moment for the others;
    the ranks that never appear are the dead or stalled ones. The store is torchrun's
    agent's (it outlives the workers, not its node); elsewhere it may be gone, and then we say so.
    """
    member, replicas = launch.rank // config.replicas, config.replicas
    on = (lambda rank: f" on {nodes[rank]}") if nodes else (lambda rank: "")
    here = f"member {member} (rank {launch.rank}) stopped at step {step}{on(launch.rank)}"
    try:
        store.set_timeout(datetime.timedelta(seconds=5))
        store.set(f"cohort/alive/{launch.rank}", str(step))
        time.sleep(2.0)  # for the others to say they live, or that they failed
        failed = [r for r in range(launch.world_size) if store.check([FAILED_KEY.format(rank=r)])]
        if failed:
            rank = failed[0]
            error = store.get(FAILED_KEY.format(rank=rank)).decode(errors="replace")
            return (
                f"{here}: member {rank // replicas} (rank {rank}{on(rank)}) failed with an error ({error}), printed "
                f"in full above; fix that, then continue with resume=auto"
            )
        silent = [r for r in range(launch.world_size) if not store.check([f"cohort/alive/{r}"])]
        missing = sorted({r // replicas for r in silent})
        who = f"member(s) {', '.join(map(str, missing))} stopped answering" if missing else "a peer failed"
        if nodes and silent:
            who += f" ({where(silent, nodes)})"
    except Exception:  # the store went down with its host: under torchrun, the agent serving it
        store_at = f"{launch.master_addr}:{launch.master_port}"
        who = f"the rendezvous store at {store_at} is gone, likely with the node serving it"
    return (
        f"member {member} (rank {launch.rank}) lost the cohort at step {step}{on(launch.rank)}: {who} (dead, or "
        f"stalled longer than train.dist_timeout_s={config.train.dist_timeout_s:g}s); continue with resume=auto"
    )
