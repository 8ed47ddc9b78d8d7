"""The checks before any training or evaluation process starts, in one place.

    plan_run(config)                          → RunPlan   cohort train, cohort submit, every worker
    plan_eval(run_dir, checkpoint, split, …)  → EvalPlan  cohort eval (one process, --distributed, every rank)

Each turns what a user asked for into what the processes need, or stops at the first problem
with a one-line error naming the culprit and the fix (``cohort.errors``): the data folder
checked whole, the labelled set of a semi-supervised run, the teachers' checkpoint, the run
directory's verdict. The launchers call them before starting anything, and every rank calls
them again on the files it is about to read (a rank cannot trust a check made on another
node, or minutes earlier), so a trainer or an evaluator takes a plan and checks nothing itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort import checkpoint
from cohort.config import CohortConfig
from cohort.data.datasets import check_data, ensure_data
from cohort.data.labelled import check_labelled
from cohort.run_dir import RunDir, RunDirError
from cohort.teacher_run import TeacherPlan, check_teacher


@dataclass(frozen=True)
class RunPlan:
    """A training run that may start: its config and what the checks found."""

    config: CohortConfig
    meta: dict
    """The data folder's ``meta.json`` (``check_data``)."""
    labelled: np.ndarray | None
    """The labelled training samples of a semi-supervised run (``check_labelled``; None: every label is known)."""
    teachers: TeacherPlan | None
    """The teachers to distil (``check_teacher``; None: no teachers)."""
    continues: bool
    """The run directory already holds this run (``resume=auto`` continues it); else it is new."""


def plan_run(config: CohortConfig, write_data: bool = False) -> RunPlan:
    """Check a training run before it starts. ``write_data``: write the digits data first when its
    folder is missing (the launchers; a worker only reads, since its peers would write alongside)."""
    if write_data:
        ensure_data(config.data.root, config.data.dataset)
    meta = check_data(config.data.root, config.data.batch_size, config.replicas)
    labelled = check_labelled(config)
    teachers = check_teacher(config, meta)
    continues = RunDir(config.run_dir).check(config)
    return RunPlan(config, meta, labelled, teachers, continues)


@dataclass(frozen=True)
class EvalPlan:
    """A trained run's checkpoint to evaluate, and the files to predict."""

    run: RunDir
    config: CohortConfig
    """The run's config, as it trained."""
    meta: dict
    folder: Path
    """The checkpoint folder (complete)."""
    split: str
    betons: dict[str, Path]
    """The ``.beton`` of each split to predict: val (for the temperatures) and ``split``."""
    replicas: int
    """Replicas per member of a distributed evaluation (``--replicas``; default: the run's R)."""


def plan_eval(
    run_dir: str, which: str = "best", split: str = "test", data: str | None = None, replicas: int | None = None
) -> EvalPlan:
    """Check an evaluation before it starts: the run, its checkpoint, its data, the files to predict."""
    run = RunDir(run_dir)
    config = run.load_config()
    folder = checkpoint_folder(run, which)
    meta = check_data(config.data.root)  # a truncated .beton is reported, not crashed on
    return EvalPlan(run, config, meta, folder, split, eval_betons(config, split, data), replicas or config.replicas)


def checkpoint_folder(run: RunDir, which: str) -> Path:
    """The complete checkpoint ``which`` names: ``last``, ``best`` or a folder."""
    if which == "last":
        folder = checkpoint.latest_complete(run.path)
        if folder is None:
            raise RunDirError(
                f"{run.checkpoints} holds no complete checkpoint; train first (checkpoints need COMPLETE.json)"
            )
        return folder
    folder = checkpoint.best_dir(run.path) if which == "best" else Path(which)
    if not (folder / checkpoint.MARKER).is_file():
        hint = (
            "train with train.select_by=val_ensemble_nll (or similar)"
            if which == "best"
            else "pick a complete checkpoint"
        )
        raise RunDirError(f"{folder / checkpoint.MARKER} is missing: not a complete checkpoint; {hint}")
    return folder


def eval_betons(config: CohortConfig, split: str, data: str | None) -> dict[str, Path]:
    """The ``.beton`` of each split to predict: val (for the temperatures) and ``split``."""
    root = Path(config.data.root)
    betons = {"val": root / "val.beton", split: Path(data) if data else root / f"{split}.beton"}
    for path in betons.values():
        if not path.is_file():
            raise RunDirError(f"{path} is missing; pass --data with a .beton written by `cohort data`")
    return betons
