"""Rank 0's record of a run: each evaluation's metric rows (``metrics.jsonl``), predictions,
TensorBoard scalars, the experiment trackers' copy of the rows (``cohort.train.tracking``), the
console line, the model selection, ``teacher_metrics.json``, and the final table. Other ranks hold a
recorder that records nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cohort.config import CohortConfig
from cohort.evaluate.metrics import DEFAULT_BINNING, Binning, evaluate_cohort
from cohort.run.directory import RunDir
from cohort.run.files import write_json
from cohort.run.selection import Selection
from cohort.run.teacher_run import TeacherPlan, read_teachers_metrics, teacher_predictions
from cohort.train.checkpointer import Position
from cohort.train.epoch_meter import EPOCH_STATS
from cohort.train.tracking import Tracking

TENSORBOARD_METRICS = ("acc", "nll", "ece", "c_nll", "c_ece", "disagreement", "pairwise_kl")
"""The evaluation metrics written to TensorBoard, per split and member (and the ensemble)."""


class Recorder:
    def __init__(
        self, config: CohortConfig, run: RunDir, is_main: bool, term_names: list[str], teachers: TeacherPlan | None
    ):
        self.config, self.run, self.is_main = config, run, is_main
        self.names = config.member_names  # a BatchEnsemble member's internal members are members here
        self.training_keys = [*term_names, "loss", *EPOCH_STATS]
        self.teachers = teachers
        train = config.train
        self.selection = Selection(
            train.select_by, run.path, config.reported_rows, train.baseline_acc, train.acc_threshold
        )
        self.tensorboard = None  # rank 0's SummaryWriter, when tensorboard is installed
        self.tracking = Tracking(config, run, self.names, self.training_keys)  # W&B, MLflow (track:)
        self.results: dict | None = None  # the latest evaluation's metrics

    @property
    def selects(self) -> bool:
        """Whether an evaluation may choose a new best checkpoint (``train.select_by``)."""
        return self.selection.metric is not None

    def start(self, resumed: tuple[Path, Position] | None) -> None:
        """Before the first epoch. ``resumed``: the checkpoint folder and the position the run
        continues from (``Checkpointer.resume``); evaluations after it are redone, so their rows go."""
        if not self.is_main:
            return
        if resumed is not None:
            folder, at = resumed
            self.run.drop_metrics_after(at.epoch - 1)
            self.selection.restore(at.epoch - 1)
            print(
                f"cohort: resuming {self.run.path} at epoch {at.epoch} batch {at.batch} (step {at.step}) "
                f"from {folder.name}",
                flush=True,
            )
        else:
            self.run.drop_metrics_after(-1)  # a crash before the first checkpoint: start over
        self.tensorboard = open_tensorboard(self.run, resumed[1].epoch if resumed is not None else None)
        self.tracking.start(self.run.read_metrics(notice=False))

    def evaluated(self, epoch: int, splits: tuple[str, ...]) -> bool:
        """Rank 0 (others: True): whether ``metrics.jsonl`` holds every row of ``epoch``'s
        evaluation (each split, each network and the ensemble). An incomplete one (its last line
        was torn) loses the rows it has, and is said to be evaluated again."""
        if not self.is_main:
            return True
        found = {(r["split"], r["member"]) for r in self.run.read_metrics(notice=False) if r["epoch"] == epoch}
        if found >= {(split, m) for split in splits for m in [*range(len(self.names)), "ensemble"]}:
            return True
        self.run.drop_metrics_after(epoch - 1)
        print(
            f"cohort: {self.run.metrics_file} lacks rows of the evaluation of epoch {epoch + 1} (its last line "
            f"was torn); evaluating it again from the checkpoint",
            flush=True,
        )
        return False

    def record(
        self,
        epoch: int,
        per_member: list[dict[str, float]],
        logits: dict[str, np.ndarray],
        labels: dict[str, np.ndarray],
        *,
        step: int,
    ) -> bool:
        """One evaluation after ``epoch``, at global optimiser step ``step``: every metric, rows,
        predictions, scalars, the trackers' copy, the console line; True when it is the best so
        far by ``train.select_by`` (its predictions are then kept as best)."""
        if not self.is_main:
            return False
        results = self.results = evaluate_cohort(logits, labels, Binning.of(self.config))
        for split in logits:
            self.run.save_predictions(split, logits[split], labels[split])
        rows = []
        for split, table in results.items():
            for member, values in table.items():
                row = {"epoch": epoch, "step": step, "split": split, "member": member, **values}
                if member != "ensemble":  # the training figures of the rank that holds this network
                    row.update(per_member[self.config.owner(member)])
                rows.append(row)
        self.run.append_metrics(rows)
        if self.tensorboard is not None:
            write_scalars(self.tensorboard, rows, self.training_keys, self.names)
        self.tracking.log(rows)
        if self.teachers is not None and not self.run.readable(self.run.teacher_metrics_file).is_file():
            self.record_teachers(labels)
        improved = self.selection.offer(epoch, results["val"])
        if improved:
            for split in logits:
                self.run.save_predictions(split, logits[split], labels[split], folder="best")
        self.print_epoch(epoch, per_member, results["val"], improved)
        return improved

    def print_epoch(self, epoch: int, per_member: list[dict[str, float]], val: dict, improved: bool) -> None:
        accs = " ".join(f"{self.names[m]} {val[m]['acc']:.3f}" for m in range(len(self.names)))
        # An evaluation done again from a checkpoint of an earlier version has no training figures.
        loss = float(np.mean([row.get("loss", np.nan) for row in per_member]))
        speed = sum(row.get("images_per_s", np.nan) for row in per_member)
        print(
            f"epoch {epoch + 1:>3}/{self.config.train.epochs}  loss {loss:.4f}  "
            f"val acc {accs}  ensemble {val['ensemble']['acc']:.3f}  nll {val['ensemble']['nll']:.4f}  "
            f"ece {val['ensemble']['ece']:.4f}  disagreement {val['ensemble']['disagreement']:.3f}  "
            f"{speed:.0f} img/s"
            f"{'  *' if improved and self.selection.metric else ''}",
            flush=True,
        )

    def record_teachers(self, labels: dict[str, np.ndarray]) -> None:
        """``teacher_metrics.json``: the teachers' metrics on val and test, from the predictions their
        run saved for the distilled checkpoint (once), for reports to compare with."""
        saved = teacher_predictions(self.teachers)
        note = ""
        if saved is None:
            note = f"{self.teachers.run_dir} saved no predictions for the distilled checkpoint"
        elif any(not np.array_equal(saved[split][1], labels[split]) for split in labels):
            note = f"{self.teachers.run_dir}'s saved predictions have other labels than this data"
        if note:
            print(f"cohort: no teachers' row in the report: {note}", flush=True)
            return
        results = evaluate_cohort(
            {s: saved[s][0] for s in labels}, {s: saved[s][1] for s in labels}, Binning.of(self.config)
        )
        write_json(
            self.run.teacher_metrics_file,
            {
                **self.teachers.record(),
                "results": {
                    split: {str(member): row for member, row in table.items()} for split, table in results.items()
                },
            },
        )

    def finish(self) -> None:
        """After the last epoch: close TensorBoard, print the final table (if this process
        evaluated), hand it and the report's files to the trackers."""
        if self.tensorboard is not None:
            self.tensorboard.close()
        if self.is_main:  # a finished run started again (resume=auto) brings its trackers up to date
            reported, binning = self.config.reported_rows, Binning.of(self.config)
            self.tracking.finish(
                print_summary(self.results, self.run, self.names, reported, binning) if self.results else ""
            )


def open_tensorboard(run: RunDir, resumed_at: int | None):
    """A TensorBoard writer into ``RUN_DIR/tensorboard`` when tensorboard is installed, else None.
    A resumed run first drops the events from its resumed epoch on (they are redone)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run.tensorboard), purge_step=resumed_at)


def write_scalars(writer, rows: list[dict], training_keys: list[str], names: list[str]) -> None:
    """One evaluation's ``metrics.jsonl`` rows as scalars at step = epoch: ``<split>/<metric>/<member>``
    for ``TENSORBOARD_METRICS``, and ``train/<key>/<member>`` for the epoch's training figures
    (loss terms, lr, images/s, data and exchange seconds)."""
    for row in rows:
        who = names[row["member"]] if row["member"] != "ensemble" else "ensemble"
        for key in TENSORBOARD_METRICS:
            if key in row:
                writer.add_scalar(f"{row['split']}/{key}/{who}", row[key], row["epoch"])
        if row["split"] == "val" and row["member"] != "ensemble":
            for key in training_keys:
                if key in row:
                    writer.add_scalar(f"train/{key}/{who}", row[key], row["epoch"])
    writer.flush()


def print_summary(
    results: dict[str, dict],
    run: RunDir,
    names: list[str],
    reported: list[int] = (),
    binning: Binning = DEFAULT_BINNING,
) -> str:
    """The final table: accuracy, NLL, ECE and MCE of each member and the ensemble, val and test;
    the ``reported`` rows (``reported_members``) first, marked ``*`` (printed, and returned)."""
    lines = [
        "",
        f"{'':<10} {'val acc':>8} {'val nll':>8} {'test acc':>9} {'test nll':>9} {'test ece':>9} {'test mce':>9}",
    ]
    others = [m for m in range(len(names)) if m not in reported]
    for key in [*reported, *others, "ensemble"]:
        label = names[key] + (" *" if key in reported else "") if key != "ensemble" else "ensemble"
        v, t = results["val"][key], results["test"][key]
        lines.append(
            f"{label:<10} {v['acc']:>8.4f} {v['nll']:>8.4f} {t['acc']:>9.4f} {t['nll']:>9.4f} {t['ece']:>9.4f}"
            f" {t['mce']:>9.4f}"
        )
    teachers = run.readable(run.teacher_metrics_file)
    if teachers.is_file():
        saved = read_teachers_metrics(teachers)["results"]
        v, t = saved["val"]["ensemble"], saved["test"]["ensemble"]
        lines.append(
            f"{'teachers':<10} {v['acc']:>8.4f} {v['nll']:>8.4f} {t['acc']:>9.4f} {t['nll']:>9.4f} {t['ece']:>9.4f}"
            f" {t.get('mce', float('nan')):>9.4f}   (their ensemble, {teachers.name})"
        )
    if reported:
        lines.append("* reported (reported_members)")
    lines.append(f"ECE and MCE: {binning.describe()}")
    lines.append(f"\nrun directory: {run.path}")
    print("\n".join(lines), flush=True)
    return "\n".join(lines).strip("\n")
