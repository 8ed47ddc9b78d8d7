"""``cohort report``: compare finished runs in one markdown table, with figures.

Reads each run's ``metrics.jsonl`` at its selected epoch (``selection.json``) or its last
evaluation, on the test split, and writes ``report.md`` plus PNG figures into the first
run directory: reliability diagrams of each member and the ensemble, accuracy / NLL / ECE /
disagreement against epoch, and the ensemble-size curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort.evaluate.metrics import DEFAULT_BINNING, Binning, ensemble_logits, equal_width_bins, probabilities
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, replacing
from cohort.run.selection import read_selection
from cohort.run.teacher_run import read_teachers_metrics

COLUMNS = ("acc", "nll", "ece", "mce", "c_nll", "c_ece")

RERUN = "rerun `cohort report`"
"""What to do once a failed write's cause (a full disk) is fixed."""


@dataclass
class Run:
    """What a report needs of one run directory."""

    path: Path
    name: str
    independent: bool
    rows: list[dict]
    epoch: int
    selected: bool
    reported: tuple[int, ...] = ()
    """The rows of its ``reported_members`` (``CohortConfig.reported_rows``)."""
    binning: Binning = DEFAULT_BINNING
    """How its calibration errors were binned (``train.calibration_bins``, ``calibration_binning``)."""
    member_names: tuple[str, ...] = ()
    """Its networks' names (``CohortConfig.member_names``)."""

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
        return cls(
            run.path,
            config.name,
            config.independent,
            rows,
            epoch,
            selected,
            tuple(config.reported_rows),
            Binning.of(config),
            tuple(config.member_names),
        )

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
            raise RunDirError(f"{self.dir.metrics_file} has no {split} evaluation at epoch {epoch}")
        return table

    def teachers(self) -> dict | None:
        """A student run's ``teacher_metrics.json`` (its teachers' metrics on val and test), or None."""
        path = self.dir.readable(self.dir.teacher_metrics_file)
        return read_teachers_metrics(path) if path.is_file() else None

    def predictions(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        path = self.dir.prediction_file(split, best=self.selected)
        if not path.is_file():
            raise RunDirError(f"{path} is missing; the run has not finished (or predictions were removed)")
        saved = np.load(path)
        logits, labels = saved["logits"], saved["labels"]
        members = sum(1 for key in self.at(split) if key != "ensemble")
        if logits.ndim != 3 or logits.shape[0] != members or logits.shape[1] != len(labels):
            raise RunDirError(
                f"{path} holds logits of shape {logits.shape} and {len(labels)} labels, but the run has "
                f"{members} members; the file does not belong to this run"
            )
        return logits, labels


def summary_table(runs: list[Run]) -> str:
    """Markdown: members' mean ± std and the ensemble, before and after temperature scaling."""
    header = (
        "| run | epoch | "
        + " | ".join(f"members {c}" for c in COLUMNS)
        + " | "
        + " | ".join(f"ensemble {c}" for c in COLUMNS)
        + " | disagreement |"
    )
    lines = [header, "|" + "---|" * (3 + 2 * len(COLUMNS))]
    for run in runs:
        if run.reported:
            lines.append(reported_row(run))
        lines.append(summary_row(run.label, str(run.epoch), run.at()))
        teachers = run.teachers()
        if teachers is not None:
            lines.append(
                summary_row(f"teachers of {run.label}", f"{teachers['epoch']} (theirs)", teachers["results"]["test"])
            )
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
    return f"| {REPORTED} {run.label}, reported: {reported_names(run)} | {run.epoch} | " + " | ".join(cells) + " | — |"


def reported_names(run: Run) -> str:
    """The reported members' names."""
    return ", ".join(run.member_names[m] for m in run.reported)


def binning_note(runs: list[Run]) -> str:
    """Which binning the table's calibration errors used, run by run where they differ."""
    used = {run.binning for run in runs}
    if len(used) == 1:
        return f"ECE, MCE and the other calibration errors: {next(iter(used)).describe()}."
    return "Calibration errors: " + "; ".join(f"{run.label}: {run.binning.describe()}" for run in runs) + "."


def reliability_figure(run: Run, out: RunDir) -> Path:
    import matplotlib.pyplot as plt

    logits, labels = run.predictions("test")
    panels = [(f"member {m}", probabilities(logits[m])) for m in range(len(logits))]
    panels.append(("ensemble", np.exp(ensemble_logits(logits))))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), squeeze=False)
    centres = (np.arange(15) + 0.5) / 15
    for ax, (title, probs) in zip(axes[0], panels):
        confidence, hit = probs.max(1), probs.argmax(1) == labels
        bins = equal_width_bins(confidence)
        counts = np.bincount(bins, minlength=15)
        accuracy = np.divide(np.bincount(bins, weights=hit, minlength=15), counts, out=np.zeros(15), where=counts > 0)
        ax.bar(centres, accuracy, width=1 / 15, edgecolor="black", color="tab:blue", label="accuracy")
        ax.plot([0, 1], [0, 1], "--", color="tab:red", label="perfect calibration")
        ax.set(title=title, xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=9)
    fig.suptitle(f"Reliability on test, {run.label}, epoch {run.epoch}")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    return save_figure(fig, out.figure("reliability"))


def curves_figure(runs: list[Run], out: RunDir) -> Path:
    import matplotlib.pyplot as plt

    panels = (("acc", "accuracy"), ("nll", "NLL"), ("ece", "ECE"), ("disagreement", "disagreement"))
    fig, axes = plt.subplots(2, 2, figsize=(10, 7))
    for run, color in zip(runs, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4):
        epochs = sorted({r["epoch"] for r in run.rows})
        for ax, (key, label) in zip(axes.flat, panels):
            tables = [run.at("val", e) for e in epochs]
            ax.plot(
                epochs, [t["ensemble"].get(key, np.nan) for t in tables], color=color, label=f"{run.label} ensemble"
            )
            if key != "disagreement":
                ax.plot(
                    epochs,
                    [np.mean([row[key] for k, row in t.items() if k != "ensemble"]) for t in tables],
                    "--",
                    color=color,
                    label=f"{run.label} members (mean)",
                )
            ax.set(xlabel="epoch", ylabel=label, title=f"validation {label}")
            ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, out.figure("curves"))


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


def write_report(paths: list[str]) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    runs = [Run.load(p) for p in paths]
    out = runs[0].dir
    table = summary_table(runs)
    figures = [reliability_figure(runs[0], out), curves_figure(runs, out), ensemble_size_figure(runs, out)]
    text = [
        "# Cohort report",
        "",
        "Test split at each run's selected epoch (or its last evaluation); "
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
    print(table)
    print(binning_note(runs))
    print(f"\nwrote {out.report_file} and {', '.join(f.name for f in figures)}")
    return out.report_file
