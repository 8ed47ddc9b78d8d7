"""Attempts of a run that a time limit's warning stopped before their first step, counted so
that a SLURM job whose time limit leaves no room to start stops instead of requeueing forever.

    RUN_DIR/stalled.json   {"checkpoint_step", "stalled", "signal", "startup"}: the attempts in a
                           row since the run's newest checkpoint that ended before their first step

Each requeued attempt starts from the newest checkpoint: its interpreter, torch, the data's
checks, the rendezvous, the models and FFCV's compiled loaders come first (``Startup``'s phases).
When the warning before the time limit (``TIME_LIMIT_SIGNALS``) comes before the first step,
the rank leaves at once (``cohort.dist.stopping``), nothing is saved, and the job would be
requeued to start the same way again. Rank 0 counts such attempts here; a new checkpoint is
progress and starts the count again (an attempt that trained but saved nothing made none).
After ``MAX_STALLED`` in a row it stops the job with one line naming the time limit and the
start-up it measured (``stall_error``).
"""

from __future__ import annotations

import os
import shutil
import subprocess

from cohort.errors import CohortError
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import read_json, write_json

MAX_STALLED = 3
"""Attempts in a row, with no checkpoint between them, that a time limit's warning stopped
before their first step, after which the job stops instead of requeueing. One can be bad luck
(a node slow to start, a cold file cache after the requeue), two in a row still; three, each a
queue wait and a full start-up, say that the time limit leaves no room to start."""


class StalledError(CohortError):
    """A time limit too short for a rank to start: the message names it and the start-up measured."""

    shared = False  # rank 0 alone counts and decides


def record_stall(run: RunDir, signal_name: str, startup: str) -> int:
    """Count one more attempt stopped by ``signal_name`` before its first step (``startup``: its
    phases, ``Startup.describe``); returns how many in a row since the run's newest checkpoint."""
    newest = checkpoint_files.latest_complete(run.path)
    step = checkpoint_files.read_marker(newest)["step"] if newest is not None else 0
    fix = "delete it (it only counts attempts that stalled before their first step)"
    before = (
        read_json(run.stalled_file, fix, {"checkpoint_step": int, "stalled": int}) if run.stalled_file.is_file() else {}
    )
    stalled = before["stalled"] + 1 if before.get("checkpoint_step") == step else 1
    record = {"checkpoint_step": step, "stalled": stalled, "signal": signal_name, "startup": startup}
    write_json(run.stalled_file, record, indent=1)
    return stalled


def slurm_time_limit() -> str:
    """This SLURM job's time limit as SLURM shows it (``00:01:00``), or "" outside SLURM."""
    job = os.environ.get("SLURM_JOB_ID")
    if not job or shutil.which("scontrol") is None:
        return ""
    shown = subprocess.run(["scontrol", "show", "job", "--oneliner", job], capture_output=True, text=True)
    fields = dict(item.split("=", 1) for item in shown.stdout.split() if "=" in item)
    return fields.get("TimeLimit", "")


def stall_error(run: RunDir, stalled: int, signal_name: str, startup: str) -> StalledError:
    """The one line that stops a job whose time limit leaves no room to start."""
    limit = slurm_time_limit()
    return StalledError(
        f"{stalled} attempts in a row were stopped by {signal_name}, the warning before the job's time limit"
        f"{f' ({limit})' if limit else ''}, before their first step, with no checkpoint in between "
        f"({run.stalled_file}): the time limit leaves no room to start, and a requeue would only repeat it; this "
        f"start-up took {startup} when the warning came; raise the time limit (cohort submit --time, sbatch "
        f"--time) or send the warning later (--signal-delay-s), then submit again: the run continues from its "
        f"last checkpoint"
    )
