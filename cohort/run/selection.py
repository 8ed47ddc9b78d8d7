"""Model selection on the validation split (``train.select_by``); test never chooses anything.

Rank 0 keeps the best value seen and records the chosen epoch in ``RUN_DIR/selection.json``.
"""

from __future__ import annotations

from pathlib import Path

from cohort.config import parse_select_by
from cohort.config.names import LOWER_IS_BETTER
from cohort.run.directory import RunDir
from cohort.run.files import read_json, write_json

SELECTION_KEYS = {"select_by": str, "epoch": int, "value": float}
"""What ``selection.json`` holds: the criterion, the chosen epoch and its value."""


def read_selection(path: Path) -> dict:
    """A run's ``selection.json``; a malformed one (damage: it is written whole, ``write_json``)
    is a one-line RunDirError naming it and the fix."""
    return read_json(
        path,
        "delete it: `cohort report` then reads the run's last evaluation, and a resumed run selects again "
        "from its next one",
        SELECTION_KEYS,
        "the epoch train.select_by chose",
    )


class Selection:
    """Tracks the best validation value of ``select_by`` over evaluations.

    ``csmac`` (Diff-DML's selection, Luminova1996/Diff-DML ``train.py`` L488-531; its "test" set
    there is the validation split, the last 5,000 training images, L41 and
    ``dataset_utils/cifar.py`` L133-136) reads ``reported`` members' mean val accuracy and ECE (every
    member's when none is reported). Stage 1 keeps each evaluation whose accuracy beats the kept
    one's (strictly; the first from 0, as ``infos['overall_acc']`` starts at 0, L164) and moves to
    stage 2 once a kept accuracy exceeds a − c (L510-511); stage 2 keeps each evaluation whose
    accuracy exceeds a − c and whose accuracy − ECE beats the kept one's (strictly, L513; ties keep
    the earlier). The code compares percentages (accuracy and ECE × 100, a = 77.87, c = 1); these are
    fractions (a = 0.7787, c = 0.01), the same comparisons up to rounding. It evaluates after every
    epoch; here after every ``train.eval_every``-th."""

    def __init__(
        self,
        select_by: str,
        run_dir: Path,
        reported: list[int] | tuple[int, ...] = (),
        baseline_acc: float = 0.0,
        acc_threshold: float = 0.01,
    ):
        parsed = parse_select_by(select_by)
        self.select_by = select_by
        self.who, self.metric = parsed if parsed else (None, None)
        self.file = RunDir(run_dir).selection_file
        self.best: float | None = None
        self.reported, self.floor = list(reported), baseline_acc - acc_threshold
        self.acc, self.stage = 0.0, 1  # csmac: the kept evaluation's accuracy, and the stage

    def members(self, val_table: dict) -> list[dict]:
        """The rows a members' value averages: the reported members' (``csmac``), else every member's."""
        if self.who == "csmac" and self.reported:
            return [val_table[m] for m in self.reported]
        return [row for key, row in val_table.items() if key != "ensemble"]

    def value(self, val_table: dict, metric: str | None = None) -> float:
        metric = metric or self.metric
        if self.who == "ensemble":
            return val_table["ensemble"][metric]
        members = self.members(val_table)
        return sum(row[metric] for row in members) / len(members)

    def offer(self, epoch: int, val_table: dict) -> bool:
        """Record ``epoch`` if it beats the best so far; True when it does."""
        if self.metric is None:
            return False
        if self.who == "csmac":
            return self.offer_csmac(epoch, val_table)
        value = self.value(val_table)
        sign = 1.0 if self.metric.removeprefix("c_") in LOWER_IS_BETTER else -1.0
        if self.best is not None and sign * value >= sign * self.best:
            return False
        self.best = value
        write_json(self.file, {"select_by": self.select_by, "epoch": epoch, "value": value})
        return True

    def score(self, val_table: dict) -> float:
        """CSMAC's value of an evaluation: the members' accuracy − ECE (``members``)."""
        return self.value(val_table, "acc") - self.value(val_table, "ece")

    def offer_csmac(self, epoch: int, val_table: dict) -> bool:
        """CSMAC's two stages (the class docstring); the kept value is accuracy − ECE (``score``)."""
        acc, score = self.value(val_table, "acc"), self.score(val_table)
        if self.stage == 1:
            if not acc > self.acc:
                return False
            if acc > self.floor:
                self.stage = 2
        elif not (acc > self.floor and score > self.best):
            return False
        self.best, self.acc = score, acc
        write_json(
            self.file, {"select_by": self.select_by, "epoch": epoch, "value": score, "acc": acc, "stage": self.stage}
        )
        return True

    def restore(self, resumed_epoch: int) -> None:
        """After a resume: keep a selection made at or before the resumed epoch."""
        if self.file.is_file():
            saved = read_selection(self.file)
            if saved["epoch"] <= resumed_epoch:
                self.best = saved["value"]
                self.acc, self.stage = saved.get("acc", 0.0), saved.get("stage", 1)
            else:
                self.file.unlink()
