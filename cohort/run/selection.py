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
    """Tracks the best validation value of ``select_by`` over evaluations."""

    def __init__(self, select_by: str, run_dir: Path):
        parsed = parse_select_by(select_by)
        self.select_by = select_by
        self.who, self.metric = parsed if parsed else (None, None)
        self.file = RunDir(run_dir).selection_file
        self.best: float | None = None

    def value(self, val_table: dict) -> float:
        if self.who == "ensemble":
            return val_table["ensemble"][self.metric]
        members = [row for key, row in val_table.items() if key != "ensemble"]
        return sum(row[self.metric] for row in members) / len(members)

    def offer(self, epoch: int, val_table: dict) -> bool:
        """Record ``epoch`` if it beats the best so far; True when it does."""
        if self.metric is None:
            return False
        value = self.value(val_table)
        sign = 1.0 if self.metric.removeprefix("c_") in LOWER_IS_BETTER else -1.0
        if self.best is not None and sign * value >= sign * self.best:
            return False
        self.best = value
        write_json(self.file, {"select_by": self.select_by, "epoch": epoch, "value": value})
        return True

    def restore(self, resumed_epoch: int) -> None:
        """After a resume: keep a selection made at or before the resumed epoch."""
        if self.file.is_file():
            saved = read_selection(self.file)
            if saved["epoch"] <= resumed_epoch:
                self.best = saved["value"]
            else:
                self.file.unlink()
