"""``cohort report``: compare finished runs in one markdown table, with figures.

Reads each run's ``metrics.jsonl`` on the test split at three epochs: the selected one
(``selection.json``, else the last evaluation), the best on validation (``Run.best_epoch``) and
the last, and writes ``report.md`` plus PNG figures into the first run directory: a reliability
diagram of each member and of the ensemble with the confidence histogram under it (Guo et al.,
ICML 2017, Fig. 1: a bin's accuracy means little without its count), accuracy / NLL / ECE /
disagreement against epoch with every member's curve beside their mean, and the ensemble-size
curve. Members are named as the config names them (``config.member_names``) everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cohort.config.names import LOWER_IS_BETTER
from cohort.evaluate.metrics import DEFAULT_BINNING, Binning, ensemble_logits, equal_width_bins, probabilities
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, replacing
from cohort.run.predictions import read_predictions, rewrite_fix
from cohort.run.selection import Selection, read_selection
from cohort.run.teacher_run import read_teachers_metrics
from cohort.run.tracking import attach, each

COLUMNS = ("acc", "nll", "ece", "mce", "c_nll", "c_ece")

RERUN = "rerun `cohort report`"
"""What to do once a failed write's cause (a full disk) is fixed."""


BEST_BY = "val_ensemble_nll"
"""What "best" means for a run that selects nothing (``train.select_by: last``): the lowest validation
ensemble NLL (the criterion DML's successors select by; accuracy ties more often on small splits).
A run that selects uses its own ``train.select_by``. Never the test split."""


@dataclass
class Run:
    """What a report needs of one run directory."""

    path: Path
    name: str
    independent: bool
    rows: list[dict]
    epoch: int
    selected: bool
    names: list[str] = field(default_factory=list)
    """The members' names (``config.member_names``), in the order of the rows' ``member`` indices."""
    select_by: str = "last"
    reported: tuple[int, ...] = ()
    """The rows of its ``reported_members`` (``CohortConfig.reported_rows``)."""
    binning: Binning = DEFAULT_BINNING
    """How its calibration errors were binned (``train.calibration_bins``, ``calibration_binning``)."""

    @classmethod
    def load(cls, path: str | Path) -> Run:
        run = RunDir(path)
        run.require_run()
        rows = run.read_metrics()
        if not rows:
            raise RunDirError(f"{run.metrics_file} is missing or empty: {run.path} has not finished an evaluation")
        config = run.load_config()
        selected = run.selection_file.is_file()
        epoch = read_selection(run.selection_file)["epoch"] if selected else max(r["epoch"] for r in rows)
        names, select_by = config.member_names, config.train.select_by
        reported, binning = tuple(config.reported_rows), Binning.of(config)
        return cls(
            run.path, config.name, config.independent, rows, epoch, selected, names, select_by, reported, binning
        )

    def member_name(self, member: int | str) -> str:
        """A row's member as the config names it (``ensemble`` stays)."""
        if member == "ensemble":
            return member
        return self.names[member] if member < len(self.names) else f"member {member}"

    @property
    def evaluated(self) -> list[int]:
        """The epochs with a validation evaluation, in order."""
        return sorted({r["epoch"] for r in self.rows if r["split"] == "val" and r["member"] == "ensemble"})

    @property
    def best_by(self) -> str:
        return self.select_by if self.select_by != "last" else BEST_BY

    def best_epoch(self) -> int:
        """The epoch whose validation ``best_by`` is best (the first of equals, as selection keeps
        it); for ``csmac``, its score alone (the reported members' accuracy − ECE), without its
        threshold: the best CSMAC could have kept."""
        selection = Selection(self.best_by, self.path, self.reported)
        if selection.who == "csmac":
            return max(self.evaluated, key=lambda epoch: selection.score(self.at("val", epoch)))
        sign = 1.0 if selection.metric.removeprefix("c_") in LOWER_IS_BETTER else -1.0
        return min(self.evaluated, key=lambda epoch: sign * selection.value(self.at("val", epoch)))

    def epochs(self) -> list[tuple[str, int]]:
        """The rows of the report's table: the selected epoch, the best on validation, the last."""
        chosen = f"selected ({self.select_by})" if self.selected else "selected (last)"
        best = "best val acc − ECE" if self.best_by == "csmac" else f"best {self.best_by}"
        return [(chosen, self.epoch), (best, self.best_epoch()), ("last", self.evaluated[-1])]

    @property
    def dir(self) -> RunDir:
        return RunDir(self.path)

    @property
    def label(self) -> str:
        """The config's name and the run folder's (runs of one config differ by folder)."""
        return f"{self.name} ({self.path.name})"

    def at(self, split: str = "test", epoch: int | None = None) -> dict:
        """``{member: row}`` of one evaluation."""
        epoch = self.epoch if epoch is None else epoch
        table = {r["member"]: r for r in self.rows if r["epoch"] == epoch and r["split"] == split}
        if "ensemble" not in table:
            raise RunDirError(
                f"{self.dir.metrics_file} has no {split} evaluation at epoch {epoch}; if its last line was torn, "
                f"resume the run (`cohort train {self.dir.config_file} run_dir={self.path} resume=auto`): a run "
                f"resumed at the end of an epoch whose evaluation is incomplete evaluates it again"
            )
        return table

    def teachers(self) -> dict | None:
        """A student run's ``teacher_metrics.json`` (its teachers' metrics on val and test), or None."""
        path = self.dir.readable(self.dir.teacher_metrics_file)
        return read_teachers_metrics(path) if path.is_file() else None

    def predictions(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """The logits and labels of the reported epoch: the run's own (``predictions/``, or
        ``best/`` when it selected), else ``cohort eval``'s of the same checkpoint (``eval/best/``,
        or the newest complete checkpoint's), when it evaluated the reported epoch."""
        checkpoint = "best" if self.selected else "last"
        path = self.dir.prediction_file(split, best=self.selected)
        if not path.is_file():
            path = self.eval_predictions(split) or path
        if not path.is_file():
            raise RunDirError(
                f"{path} is missing; the run has not finished (or its predictions were removed: write them "
                f"with `cohort eval {self.path} --checkpoint {checkpoint}`)"
            )
        members = sum(1 for key in self.at(split) if key != "ensemble")
        return read_predictions(path, rewrite_fix(self.path, checkpoint), members)

    def eval_predictions(self, split: str) -> Path | None:
        """``cohort eval``'s predictions of the checkpoint whose epoch this report reads, or None."""
        folder = checkpoint_files.best_dir(self.path) if self.selected else checkpoint_files.latest_complete(self.path)
        if folder is None:
            return None
        evaluation = self.dir.evaluation(folder.name)
        path = evaluation.prediction_file(split)
        rows = evaluation.read_metrics() if path.is_file() else []
        return path if rows and all(row["epoch"] == self.epoch for row in rows) else None


def summary_table(runs: list[Run]) -> str:
    """Markdown: members' mean ± std and the ensemble, before and after temperature scaling, at
    each run's selected, best and last epoch (counted from 1, as training prints them)."""
    header = (
        "| run | at | epoch | "
        + " | ".join(f"members {c}" for c in COLUMNS)
        + " | "
        + " | ".join(f"ensemble {c}" for c in COLUMNS)
        + " | disagreement |"
    )
    lines = [header, "|" + "---|" * (4 + 2 * len(COLUMNS))]
    for run in runs:
        if run.reported:
            lines.append(reported_row(run))
        for at, epoch in run.epochs():
            lines.append(summary_row(f"{run.label} | {at}", str(epoch + 1), run.at(epoch=epoch)))
        teachers = run.teachers()
        if teachers is not None:
            theirs = f"{teachers['epoch'] + 1} (theirs)"
            lines.append(summary_row(f"teachers of {run.label} | theirs", theirs, teachers["results"]["test"]))
    return "\n".join(lines)


NO_SPREAD = "—"
"""The std of a single value: one run (or one member) has no spread, and ``± 0.0000`` would
read as a spread measured to be zero."""


def mean_std(values) -> str:
    """``mean ± std`` (numpy's population std) to four places; ``mean ± —`` for one value."""
    values = np.asarray(values, dtype=float)
    spread = f"{np.std(values):.4f}" if len(values) > 1 else NO_SPREAD
    return f"{np.mean(values):.4f} ± {spread}"


def summary_row(label: str, epoch: str, table: dict) -> str:
    members = [row for key, row in table.items() if key != "ensemble"]
    cells = [mean_std([m.get(c, np.nan) for m in members]) for c in COLUMNS]
    cells += [f"{table['ensemble'].get(c, np.nan):.4f}" for c in COLUMNS]
    return f"| {label} | {epoch} | " + " | ".join(cells) + f" | {table['ensemble'].get('disagreement', 0.0):.4f} |"


REPORTED = "★"
"""The mark of a run's reported members (``reported_members``) in every table."""


def reported_row(run: Run) -> str:
    """The run's reported members alone, above its row of every member and the ensemble: the
    members' cells over the reported ones, the ensemble's left to the row below."""
    table = run.at()
    cells = [mean_std([table[m].get(c, np.nan) for m in run.reported]) for c in COLUMNS]
    cells += ["—"] * len(COLUMNS)
    label = f"{REPORTED} {run.label}, reported: {reported_names(run)} | {run.epochs()[0][0]}"
    return f"| {label} | {run.epoch + 1} | " + " | ".join(cells) + " | — |"


def reported_names(run: Run) -> str:
    """The reported members' names."""
    return ", ".join(run.names[m] for m in run.reported)


def binning_note(runs: list[Run]) -> str:
    """Which binning the table's calibration errors used, run by run where they differ."""
    used = {run.binning for run in runs}
    if len(used) == 1:
        return f"ECE, MCE and the other calibration errors: {next(iter(used)).describe()}."
    return "Calibration errors: " + "; ".join(f"{run.label}: {run.binning.describe()}" for run in runs) + "."


def reliability_figure(run: Run, out: RunDir) -> Path:
    return save_figure(draw_reliability(run), out.figure("reliability"))


def draw_reliability(run: Run):
    """A reliability diagram per member and for the ensemble (test, 15 equal-width bins, as the
    ECE), each above its confidence histogram with the mean confidence and the accuracy marked:
    the figure (row 0: diagrams, row 1: histograms), not yet saved."""
    import matplotlib.pyplot as plt

    logits, labels = run.predictions("test")
    table = run.at("test")
    panels = [(run.member_name(m), probabilities(logits[m]), table[m]) for m in range(len(logits))]
    panels.append(("ensemble", np.exp(ensemble_logits(logits)), table["ensemble"]))
    fig, axes = plt.subplots(
        2, len(panels), figsize=(3.2 * len(panels), 5.2), squeeze=False, sharex=True, height_ratios=(3, 1.3)
    )
    centres = (np.arange(15) + 0.5) / 15
    for (diagram, histogram), (title, probs, row) in zip(axes.T, panels):
        confidence, hit = probs.max(1), probs.argmax(1) == labels
        bins = equal_width_bins(confidence)
        counts = np.bincount(bins, minlength=15)
        accuracy = np.divide(np.bincount(bins, weights=hit, minlength=15), counts, out=np.zeros(15), where=counts > 0)
        diagram.bar(centres, accuracy, width=1 / 15, edgecolor="black", color="tab:blue", label="accuracy of the bin")
        gap = np.where(counts > 0, np.abs(centres - accuracy), 0.0)  # hatched: the bin's part of the ECE
        low = np.minimum(centres, accuracy)
        diagram.bar(centres, gap, bottom=low, width=1 / 15, fill=False, hatch="///", edgecolor="tab:red", lw=0)
        diagram.bar([0], [0], fill=False, hatch="///", edgecolor="tab:red", lw=0, label="gap to the diagonal")
        diagram.plot([0, 1], [0, 1], "--", color="tab:red", label="perfect calibration")
        diagram.set(title=f"{title}\nacc {row['acc']:.3f}  ECE {row['ece']:.3f}", ylabel="accuracy", ylim=(0, 1))
        diagram.set_xlim(0, 1)
        histogram.bar(centres, counts / counts.sum(), width=1 / 15, edgecolor="black", color="tab:gray")
        histogram.axvline(confidence.mean(), color="tab:orange", linestyle="--", label="mean confidence")
        histogram.axvline(hit.mean(), color="black", linestyle=":", label="accuracy")
        histogram.set(xlabel="confidence", ylabel="share of samples", ylim=(0, 1))
    handles = [*axes[0][0].get_legend_handles_labels()[0], *axes[1][0].get_legend_handles_labels()[0]]
    fig.legend(handles, [h.get_label() for h in handles], loc="lower center", ncol=5, fontsize=8)
    fig.suptitle(f"Reliability on test, {run.label}, epoch {run.epoch + 1}")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig


def curves_figure(runs: list[Run], out: RunDir) -> Path:
    return save_figure(draw_curves(runs), out.figure("curves"))


def draw_curves(runs: list[Run]):
    """Validation accuracy, NLL, ECE and disagreement against epoch (from 1): the ensemble, the
    members' mean and each member (one run: a colour per member, named; several: the run's
    colour, thin), so a member that lags shows."""
    import matplotlib.pyplot as plt

    panels = (("acc", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("disagreement", "disagreement"))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    for r, run in enumerate(runs):
        epochs = run.evaluated
        tables = [run.at("val", e) for e in epochs]
        x = [e + 1 for e in epochs]
        own = "black" if len(runs) == 1 else colors[r]
        prefix = "" if len(runs) == 1 else f"{run.label} "
        members = [k for k in tables[-1] if k != "ensemble"]
        for ax, (key, _) in zip(axes.flat, panels):
            ax.plot(x, [t["ensemble"].get(key, np.nan) for t in tables], color=own, lw=2.2, label=f"{prefix}ensemble")
            if key == "disagreement":
                continue
            for i, m in enumerate(members):
                ax.plot(
                    x,
                    [t[m][key] for t in tables],
                    color=colors[(i + 1) % len(colors)] if len(runs) == 1 else own,
                    lw=1.1,
                    alpha=0.85 if len(runs) == 1 else 0.35,
                    label=run.member_name(m) if len(runs) == 1 else (f"{prefix}each member" if i == 0 else None),
                )
            ax.plot(
                x,
                [np.mean([t[m][key] for m in members]) for t in tables],
                "--",
                color=own,
                lw=1.6,
                label=f"{prefix}members (mean)",
            )
    for ax, (_, label) in zip(axes.flat, panels):
        ax.set(xlabel="epoch", ylabel=label, title=f"validation {label}")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def ensemble_size_figure(runs: list[Run], out: RunDir) -> Path:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for run in runs:
        sizes = run.at()["ensemble"]["subensembles"]
        for ax, key in zip(axes, ("nll", "c_nll")):
            ax.plot([s["size"] for s in sizes], [s[key] for s in sizes], "o-", label=run.label)
    for ax, title in zip(axes, ("NLL", "calibrated NLL")):
        ax.set(xlabel="ensemble size (members averaged)", ylabel=title, title=f"test {title} against ensemble size")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out.figure("ensemble_size"))


def save_figure(fig, path: Path) -> Path:
    """``fig`` as a PNG at ``path``, whole or not at all (``replacing``); the figure is closed."""
    import matplotlib.pyplot as plt

    try:
        with replacing(path, "wb", then=RERUN) as f:
            fig.savefig(f, format="png", dpi=110)
    finally:
        plt.close(fig)
    return path


def build_report(paths: list[str]) -> tuple[Path, list[Path], str]:
    """``report.md`` and the figures, written into the first run: their paths, and the table. Prints nothing."""
    import matplotlib

    matplotlib.use("Agg")
    runs = [Run.load(p) for p in paths]
    out = runs[0].dir
    table = summary_table(runs)
    figures = [reliability_figure(runs[0], out), curves_figure(runs, out), ensemble_size_figure(runs, out)]
    text = [
        "# Cohort report",
        "",
        "Test split at each run's selected epoch (train.select_by, or its last evaluation), its best "
        f"epoch on val (by its train.select_by, else {BEST_BY}) and its last, epochs counted from 1; "
        "`c_` metrics after temperature scaling fitted on val. A student run "
        "(teacher.run_dir) is followed by its teachers' row, from `teacher_metrics.json`. "
        f"A run that names reported_members has a row of them first, marked {REPORTED}.",
        binning_note(runs),
        "",
        table,
        "",
    ]
    text += [f"![{f.stem}]({f.name})" for f in figures]
    with replacing(out.report_file, then=RERUN) as f:
        f.write("\n".join(text) + "\n")
    return out.report_file, figures, table


def write_report(paths: list[str]) -> Path:
    """``cohort report``: ``build_report``, the table printed, and the files kept with the first
    run's tracked runs (``tracking.json``), if it has any."""
    report, figures, table = build_report(paths)
    print(table)
    print(binning_note([Run.load(path) for path in paths]))
    print(f"\nwrote {report} and {', '.join(f.name for f in figures)}")
    trackers = attach(RunDir(paths[0]))
    for path in (report, *figures):
        trackers = each(trackers, lambda tracker, path=path: tracker.artifact(path, "report"))
    each(trackers, lambda tracker: tracker.close(None))
    return report
