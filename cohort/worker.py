"""One rank's process: build the config, the mesh and the trainer, run it, and turn every
way it can end into an exit code and at most one line on stderr.

``python -m cohort.train`` (under torchrun or srun) and ``cohort submit``'s SLURM tasks
enter here. The trainer itself (``cohort.train``) knows nothing of exit codes, of which
rank prints an error, or of how a lost peer is diagnosed.
"""

from __future__ import annotations

import datetime
import signal
import sys
import time
from dataclasses import dataclass

import torch.distributed as dist

from cohort.config import CohortConfig, load_config
from cohort.data.datasets import check_data
from cohort.data.labelled import check_labelled
from cohort.errors import CohortError
from cohort.mesh import CohortMesh, Launch, configure_threads, detect_launch, pick_device
from cohort.teacher_run import check_teacher
from cohort.train import STOP_SIGNALS, Stopped, Trainer


def main(argv: list[str] | None = None) -> int:
    from cohort import train

    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(train.__doc__)
        return 0 if argv else 2
    return run_worker(argv, detect_launch()).exit_code


@dataclass(frozen=True)
class WorkerExit:
    """How a rank's training ended: its exit code, and the signal that stopped it (0: none)."""

    exit_code: int
    stopped_by: int = 0


def run_worker(argv: list[str], launch: Launch) -> WorkerExit:
    """Train this rank's part of the cohort (``argv``: CONFIG [key=value ...]); never raises
    for the errors a user can fix, and prints each of them once, as one line."""
    trainer = None
    try:
        config = load_config(argv[0], argv[1:])
        # Before the process group: an error every rank meets alike is printed once, by rank 0.
        meta = check_data(config.data.root, config.data.batch_size, config.replicas)
        labelled = check_labelled(config)
        teachers = check_teacher(config, meta)
        configure_threads(config, launch.local_world_size, launch.local_rank)
        device, placement = pick_device(config.train.device, launch, config.train.members_per_gpu,
                                        config.num_members, config.replicas)
        mesh = CohortMesh(config.num_members, config.replicas, launch, device, config.train.dist_timeout_s, placement)
        try:
            trainer = Trainer(config, mesh, meta, labelled, teachers)
            trainer.fit()
        finally:
            mesh.close()
            # Training is over (finished, or saved and stopped): a stop signal now has nothing
            # to save, and Python's default action would kill the exiting process, turning a
            # finished SLURM job into FAILED (a --signal that lands just after the last step).
            for signum in STOP_SIGNALS:
                signal.signal(signum, signal.SIG_IGN)
    except CohortError as error:
        # An error every rank meets alike is printed once (by rank 0); an error of one rank
        # (its own loss went non-finite) by that rank (``cohort.errors``).
        if launch.rank == 0 or not error.shared:
            print(f"cohort: error: {error}", file=sys.stderr, flush=True)
        else:
            # torchrun stops every worker once one exits; a silent rank that exited first
            # could get rank 0 stopped before it prints the error they share.
            time.sleep(2.0)
        return WorkerExit(1)
    except Stopped as stop:
        if launch.rank == 0:
            print(f"cohort: {stop}", flush=True)
        return WorkerExit(0, stop.signum)
    except RuntimeError as error:
        # gloo and NCCL report a dead or stalled peer as a RuntimeError from the collective.
        if trainer is None or not is_collective_failure(error):
            raise
        print(f"cohort: error: {lost_peers_message(trainer.mesh.store, launch, config, trainer.step)}",
              file=sys.stderr, flush=True)
        return WorkerExit(1)
    return WorkerExit(0)


def is_collective_failure(error: RuntimeError) -> bool:
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        marker in text for marker in ("gloo", "Timed out", "Connection closed by peer", "NCCL", "timed out"))


def lost_peers_message(store: dist.Store, launch: Launch, config: CohortConfig, step: int) -> str:
    """Name the members that stopped answering, through the rendezvous store.

    Every surviving rank records itself in the store and waits a moment for the others;
    the ranks that never appear are the dead or stalled ones. The store is torchrun's
    agent's (it outlives the workers); elsewhere it may be gone, and then we say so.
    """
    member = launch.rank // config.replicas
    try:
        store.set_timeout(datetime.timedelta(seconds=5))
        store.set(f"cohort/alive/{launch.rank}", str(step))
        time.sleep(2.0)
        silent = [r for r in range(launch.world_size) if not store.check([f"cohort/alive/{r}"])]
        missing = sorted({r // config.replicas for r in silent})
        who = f"member(s) {', '.join(map(str, missing))} stopped answering" if missing else "a peer failed"
    except Exception:  # the store went down with its host rank
        who = "a peer died or stalled (the rendezvous store is gone too)"
    return (f"member {member} (rank {launch.rank}) lost the cohort at step {step}: {who} (dead, or stalled "
            f"longer than train.dist_timeout_s={config.train.dist_timeout_s:g}s); continue with resume=auto")
