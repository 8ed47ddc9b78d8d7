"""The teachers' run directory, checked before any process starts (no torch, no FFCV).

A student cohort names a finished run in ``teacher.run_dir`` (``cohort.config.TeacherConfig``).
``check_teacher`` reads that run's config, chooses its checkpoint and checks, each failure
one line naming the file or key: the checkpoint is complete (its marker and every member's
part), the teachers' architectures are known, they were trained on the same data (class
count, dataset, split sizes), and there are enough teachers for the mapping. The
``TeacherPlan`` it returns is all the trainer needs to load them (``cohort.train.teachers``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort.config import CohortConfig, ConfigError
from cohort.data.folder import DataError, read_meta
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, read_json
from cohort.run.predictions import check_predictions, read_predictions

DATA_KEYS = ("dataset", "num_classes", "image_size", "sizes")
"""What of two data folders' ``meta.json`` must agree for a teacher to teach on the other."""


@dataclass(frozen=True)
class TeacherPlan:
    run_dir: Path
    folder: Path
    """The checkpoint the teachers are loaded from."""
    archs: tuple[str, ...]
    """Teacher j's architecture, j = 0..J−1."""
    mapping: str
    """``one_to_one`` or ``mean`` (``TeacherConfig.resolved_mapping``)."""
    epoch: int
    """The epoch whose weights the checkpoint holds."""
    blurpool: tuple[bool, ...] = ()
    """Teacher j's ``blurpool`` setting (empty: none has it)."""
    finished: bool = True
    """Whether the teachers' run had trained all its epochs (an unfinished one is distilled only
    when ``teacher.checkpoint`` names ``best`` or ``last`` on purpose)."""

    @property
    def size(self) -> int:
        return len(self.archs)

    def record(self) -> dict:
        """What a student run writes down about its teachers (``teacher_plan.json``)."""
        return {
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.folder),
            "archs": list(self.archs),
            "mapping": self.mapping,
            "epoch": self.epoch,
            "finished": self.finished,
        }


def choose_checkpoint(run: RunDir, which: str) -> Path:
    """The teachers' checkpoint folder for ``teacher.checkpoint`` = ``which``; raises RunDirError."""
    best = checkpoint_files.best_dir(run.path)
    if which == "best" or (which == "auto" and (best / checkpoint_files.MARKER).is_file()):
        if not (best / checkpoint_files.MARKER).is_file():
            raise RunDirError(
                f"{best / checkpoint_files.MARKER} is missing: teacher.run_dir {run.path} has no complete "
                f"best checkpoint (it trained without train.select_by); set teacher.checkpoint=last"
            )
        return best
    last = checkpoint_files.latest_complete(run.path)
    if last is None:
        raise RunDirError(
            f"{run.checkpoints} holds no complete checkpoint: teacher.run_dir {run.path} has not finished "
            f"training (or its checkpoints were removed); finish it with resume=auto first"
        )
    return last


def check_teacher(config: CohortConfig, meta: dict) -> TeacherPlan | None:
    """The plan for loading ``config``'s teachers, or None without ``teacher.run_dir``.
    ``meta`` is the students' data folder's ``meta.json``."""
    if not config.teacher.enabled:
        return None
    run = RunDir(config.teacher.run_dir)
    if not run.config_file.is_file():
        raise RunDirError(
            f"teacher.run_dir {run.path} is not a cohort run directory ({run.config_file} is missing); "
            f"name the run_dir of a finished `cohort train`"
        )
    # Validation names a teacher architecture this version does not know.
    teacher_config = run.load_config(role="teacher.run_dir")
    folder = choose_checkpoint(run, config.teacher.checkpoint)
    finished = checkpoint_files.finished(run.path, teacher_config.train.epochs)
    if not finished and config.teacher.checkpoint == "auto":
        newest = checkpoint_files.latest_complete(run.path)
        at = checkpoint_files.position(checkpoint_files.read_marker(newest)) if newest else "none but best/"
        raise RunDirError(
            f"teacher.run_dir {run.path} has not finished: its newest complete checkpoint ({at}) is short "
            f"of its {teacher_config.train.epochs} epochs (killed, or still training); finish it with "
            f"`cohort train {run.config_file} run_dir={run.path} resume=auto`, "
            f"or distil it as it is with teacher.checkpoint=last (or best)"
        )
    teachers = teacher_config.num_members
    missing = [j for j in range(teachers) if not (folder / f"member-{j}.pt").is_file()]
    if missing:
        raise RunDirError(
            f"{folder / f'member-{missing[0]}.pt'} is missing from a checkpoint marked complete; "
            f"set teacher.checkpoint to another one, or retrain the teachers"
        )
    check_same_data(run, teacher_config, config, meta)
    ensembles = [i for i, m in enumerate(teacher_config.members) if m.batch_ensemble > 1]
    if ensembles:
        raise ConfigError(
            f"teacher.run_dir {run.path}'s member {ensembles[0]} is a BatchEnsemble (members.{ensembles[0]}."
            f"batch_ensemble in its config.yaml); cohort distils teachers that are plain networks: train them "
            f"as separate members"
        )
    # A BatchEnsemble student of n counts as n students: internal member j learns from its own teacher.
    students = len(config.member_names)
    mapping = config.teacher.resolved_mapping(students)
    if mapping == "one_to_one" and students > teachers:
        counted = (
            f"{students} students ({config.num_members} members, BatchEnsembles counting each internal member)"
            if students > config.num_members
            else f"{students} students"
        )
        raise ConfigError(
            f"members: {counted} but teacher.run_dir {run.path} holds {teachers} teachers, and with "
            f"teacher.mapping one_to_one student m learns from teacher m; use at most {teachers} students, "
            f"or teacher.mapping=mean"
        )
    plan = TeacherPlan(
        run.path,
        folder,
        tuple(m.arch for m in teacher_config.members),
        mapping,
        checkpoint_files.weights_epoch(folder),
        tuple(m.blurpool for m in teacher_config.members),
        finished,
    )
    check_teacher_predictions(plan)
    return plan


def check_same_data(run: RunDir, teacher_config: CohortConfig, config: CohortConfig, meta: dict) -> None:
    """Teachers trained on another data folder (class count, dataset or split sizes) are refused."""
    root = Path(teacher_config.data.root)
    try:
        theirs = read_meta(root)
    except DataError:
        raise RunDirError(
            f"{root / 'meta.json'} is missing: the teachers' data.root (in {run.config_file}) is gone, "
            f"so cohort cannot check that they learnt the students' data; restore it"
        ) from None
    if theirs["num_classes"] != meta["num_classes"]:
        raise RunDirError(
            f"teacher.run_dir {run.path} has {theirs['num_classes']} classes (its data.root {root}) but "
            f"data.root {config.data.root} has {meta['num_classes']}; distil teachers of the same classes"
        )
    for key in DATA_KEYS:
        if theirs.get(key) != meta.get(key):
            raise RunDirError(
                f"teacher.run_dir {run.path} was trained on another data folder ({root}: {key} "
                f"{theirs.get(key)!r}; data.root {config.data.root}: {meta.get(key)!r}); set data.root={root} "
                f"or distil teachers of this data"
            )


RECORDED_TEACHERS = ("run_dir", "checkpoint", "archs", "mapping", "epoch")
"""What of ``TeacherPlan.record`` names the teachers a resumed student must keep (``finished``
only describes them, and records of earlier versions lack it)."""


def check_teacher_record(run_dir: Path, plan: TeacherPlan) -> None:
    """A resumed student keeps its teachers: the checkpoint its ``teacher_plan.json`` recorded at
    the start, not another that ``teacher.checkpoint: auto`` resolves to now (the teachers' run
    went on training, or selected another epoch)."""
    run = RunDir(run_dir)
    record = run.readable(run.teacher_plan_file)
    if not record.is_file():
        return
    before = read_json(
        record,
        "delete it if teacher.run_dir and teacher.checkpoint still name the teachers this run started with "
        "(it is written again), or choose another run_dir=",
        {"checkpoint": str, "epoch": int},
        "the teachers this run distils",
    )
    if any(before.get(key) != value for key, value in plan.record().items() if key in RECORDED_TEACHERS):
        raise RunDirError(
            f"{record} says this run distils {before['checkpoint']} (epoch {before['epoch']}), but "
            f"teacher.run_dir now gives {plan.folder} (epoch {plan.epoch}); set teacher.run_dir and "
            f"teacher.checkpoint to the recorded ones, or choose another run_dir="
        )


def teacher_prediction_files(plan: TeacherPlan) -> dict[str, Path] | None:
    """The teachers' saved val and test predictions of the plan's checkpoint, or None when the
    run saved none for that epoch (then the student's report has no teachers' row)."""
    run = RunDir(plan.run_dir)
    best = plan.folder.name == "best"
    if not best:
        evaluated = [row["epoch"] for row in run.read_metrics(notice=False)]
        if not evaluated or max(evaluated) != plan.epoch:
            return None
    files = {split: run.prediction_file(split, best) for split in ("val", "test")}
    return files if all(path.is_file() for path in files.values()) else None


TEACHER_PREDICTIONS_FIX = "delete it (the students' reports then have no teachers' row), or retrain the teachers"
"""What to do with a teacher run's predictions file that cohort did not write."""


def check_teacher_predictions(plan: TeacherPlan) -> None:
    """The teachers' predictions a student's first evaluation reads (``teacher_predictions``),
    checked from their headers before any process starts: a damaged one is one line now."""
    for path in (teacher_prediction_files(plan) or {}).values():
        check_predictions(path, TEACHER_PREDICTIONS_FIX, plan.size)


def teacher_predictions(plan: TeacherPlan) -> dict[str, tuple[np.ndarray, np.ndarray]] | None:
    """The teachers' saved val/test logits and labels for the plan's checkpoint (``teacher_prediction_files``)."""
    files = teacher_prediction_files(plan)
    if files is None:
        return None
    return {split: read_predictions(path, TEACHER_PREDICTIONS_FIX, plan.size) for split, path in files.items()}


def read_teachers_metrics(path: Path) -> dict:
    """A student run's ``teacher_metrics.json`` (``cohort.train.recorder``): its teachers' epoch, and their
    metrics on val and test by member (``results[split]["ensemble"]``); a malformed one is a
    one-line RunDirError naming it and the fix."""
    fix = "delete it: reports then have no teachers' row, and a resumed run writes it again at its next evaluation"
    saved = read_json(path, fix, {"epoch": int, "results": dict}, "the teachers' metrics")
    for split in ("val", "test"):
        table = saved["results"].get(split)
        if not isinstance(table, dict) or not isinstance(table.get("ensemble"), dict):
            raise RunDirError(f"{path} has no {split} results of the teachers' ensemble; {fix}")
    return saved
