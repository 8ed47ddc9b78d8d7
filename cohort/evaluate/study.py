"""``cohort study``: run a set of configs over several seeds and tabulate them.

    cohort study configs/digits_*.yaml --seeds 0 1 2 --out runs/study

Each (config, seed) trains in ``OUT/<config name>/seed<N>`` through the same launcher as
``cohort train``; a run that already finished there is not trained again, so an
interrupted study continues where it stopped. The table gives, on the test split at each
run's last (or selected) evaluation, mean ± std over seeds of: the members' mean accuracy,
NLL and ECE, the ensemble's accuracy, NLL and ECE, and the cohort's disagreement; and a
table each of the disagreement and the mean pairwise KL against training progress (``curve_table``).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from cohort.config import CohortConfig, ConfigError, load_config
from cohort.errors import CohortError
from cohort.evaluate.report import NO_SPREAD, REPORTED, Run, binning_note, mean_std, reported_names
from cohort.preflight import check_seeds, plan_run
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, make_folder
from cohort.run.hold import RunHold

Launcher = Callable[[list[str], int], int]
"""Starts ``python -m cohort.train ARGV`` in K×R processes; returns their exit code."""


def members_mean(metric: str):
    return lambda t: np.mean([r.get(metric, np.nan) for k, r in t.items() if k != "ensemble"])


COLUMNS = (
    ("members acc", members_mean("acc")),
    ("members nll", members_mean("nll")),
    ("members ece", members_mean("ece")),
    ("members mce", members_mean("mce")),
    ("ensemble acc", lambda t: t["ensemble"]["acc"]),
    ("ensemble nll", lambda t: t["ensemble"]["nll"]),
    ("ensemble ece", lambda t: t["ensemble"]["ece"]),
    ("disagreement", lambda t: t["ensemble"]["disagreement"]),
)


class StudyStopped(CohortError):
    """A stop signal ended the run in progress (cleanly, at a checkpoint): the study stops too."""


def finished(run_dir: Path, config: CohortConfig) -> bool:
    """Whether the run needs no training: it trained all its epochs (``checkpoint_files.finished``)
    and its last evaluation is recorded (else ``resume=auto`` evaluates it again: the table
    reads it)."""
    epochs = config.train.epochs
    try:
        return checkpoint_files.finished(run_dir, epochs) and any(
            r["epoch"] == epochs - 1 for r in Run.load(run_dir).rows
        )
    except RunDirError:  # no run yet, or an incomplete one: train (resume=auto picks up its checkpoints)
        return False


def same_config(run_dir: Path, config: CohortConfig, path: str) -> None:
    """A finished run is reused only if it is a run of ``config`` (a config of that name may have
    changed since, or been renamed: ``configs/*_diffdml.yaml`` once held another method)."""
    try:
        RunDir(run_dir).check(config)
    except RunDirError as error:
        raise RunDirError(
            f"{str(error).removesuffix('; choose another run_dir=')}: a finished run the study would report for "
            f"{path} with seed {config.seed}; choose another --out, or move {run_dir} away"
        ) from None


def check_out(out: Path) -> None:
    """Refuse an ``--out`` that cannot hold the study's folders, before anything starts."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    parent = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not parent.is_dir():
        raise ConfigError(f"--out {out}: {parent} is a file, not a folder; choose another --out")
    make_folder(out, "--out", "choose another --out", ConfigError, keep=False)  # a symlink loop, /proc, read-only


def study_table(names: list[str], runs: dict[str, list[Run]]) -> str:
    """One row per config (mean ± std over its seeds); a config that names ``reported_members`` has
    a row of them first, marked, whose members' columns average the reported members alone."""
    lines = ["| config | seeds | " + " | ".join(c for c, _ in COLUMNS) + " |", "|---|---|" + "---|" * len(COLUMNS)]
    for name in names:
        first = runs[name][0]
        if first.reported:
            values = [
                [column(reported_only(run)) for title, column in COLUMNS if title.startswith("members")]
                for run in runs[name]
            ]
            cells = [mean_std(v) for v in zip(*values)]
            cells += ["—"] * (len(COLUMNS) - len(cells))
            label = f"{REPORTED} {name}, reported: {reported_names(first)}"
            lines.append(f"| {label} | {len(values)} | " + " | ".join(cells) + " |")
        values = [[column(run.at()) for _, column in COLUMNS] for run in runs[name]]
        cells = [mean_std(v) for v in zip(*values)]
        lines.append(f"| {name} | {len(values)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def reported_only(run: Run, split: str = "test", epoch: int | None = None) -> dict:
    """A run's table at its reported epoch with its reported members' rows alone."""
    table = run.at(split, epoch)
    return {member: table[member] for member in run.reported}


CALIBRATION = ("acc", "nll", "ece", "cw_ece", "adaece", "mce", "full_ece")
"""The members' metrics of ``calibration_table``, each before and after val temperature scaling."""


def calibration_table(names: list[str], runs: dict[str, list[Run]]) -> str:
    """The members' mean of every ``CALIBRATION`` metric, raw and after temperature scaling
    fitted on val (``c_``), mean ± std over seeds: the reported members first where a config names them."""
    keys = [*CALIBRATION, *(f"c_{m}" for m in CALIBRATION[1:])]
    lines = ["| config | " + " | ".join(f"members {k}" for k in keys) + " |", "|---|" + "---|" * len(keys)]
    for name in names:
        tables = (
            [(f"{REPORTED} {name}, reported: {reported_names(runs[name][0])}", reported_only)]
            if runs[name][0].reported
            else []
        )
        tables.append((name, lambda run: run.at()))
        for label, table_of in tables:
            values = [[members_mean(key)(table_of(run)) for key in keys] for run in runs[name]]
            lines.append(f"| {label} | " + " | ".join(mean_std(v) for v in zip(*values)) + " |")
    return "\n".join(lines)


CURVES = ("disagreement", "pairwise_kl")
"""The diversity metrics ``run_study`` follows through training (Diff-DML's claims are about them)."""
PROGRESS = (0.1, 0.25, 0.5, 0.75, 1.0)
"""Fractions of training at which ``curve_table`` reads a metric (configs may differ in epochs)."""


def curve_table(names: list[str], runs: dict[str, list[Run]], metric: str = "disagreement") -> str:
    """The ensemble's test ``metric`` against training progress, mean ± std over seeds: at each
    fraction f of ``PROGRESS``, the last evaluation at or before epoch f · epochs (the first
    evaluation when none is that early). Each cell names the epoch it read, counted from 1 as
    training prints it: with sparse evaluations two fractions can read one evaluation (10 % and
    25 % of 30 epochs with ``eval_every: 5`` both read epoch 5), and the table shows it.
    Configs of one member are left out."""
    lines = [
        "| config | " + " | ".join(f"{metric} at {f:.0%}" for f in PROGRESS) + " |",
        "|---|" + "---|" * len(PROGRESS),
    ]
    for name in names:
        if len({r["member"] for r in runs[name][0].rows}) <= 2:
            continue  # one member (and the ensemble, which is that member): no diversity to follow
        values = []
        for run in runs[name]:
            epochs = sorted({r["epoch"] for r in run.rows if r["split"] == "test"})
            at = [max([e for e in epochs if e + 1 <= f * (epochs[-1] + 1)] or epochs[:1]) for f in PROGRESS]
            values.append([(epoch, run.at("test", epoch)["ensemble"][metric]) for epoch in at])
        cells = []
        for column in zip(*values):
            read = sorted({epoch + 1 for epoch, _ in column})
            label = f"epoch {read[0]}" if len(read) == 1 else f"epochs {', '.join(map(str, read))}"
            cells.append(f"{mean_std([value for _, value in column])} ({label})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_study(config_paths: list[str], seeds: list[int], out: str, overrides: list[str], launch: Launcher) -> str:
    """Train each config for each seed that has no finished run in ``out``, through ``launch``
    (``cohort.launch.torchrun.launch_local``: ``cohort study`` passes it), then write ``study.md``."""
    # Every run is checked before anything trains (as `cohort train` checks one).
    configs = {path: load_config(path, overrides) for path in config_paths}
    names = [config.name for config in configs.values()]
    if len(set(names)) != len(names):
        raise ConfigError(f"the study's configs share names ({', '.join(names)}); give each config its own name")
    check_seeds(seeds)
    check_out(Path(out))
    todo: list[tuple[list[str], CohortConfig]] = []
    for path, config in configs.items():
        for seed in seeds:
            run_dir = Path(out) / config.name / f"seed{seed}"
            argv = [path, *overrides, f"seed={seed}", f"run_dir={run_dir}", "resume=auto", "train.progress=false"]
            if not finished(run_dir, config):
                run_config = load_config(argv[0], argv[1:])
                plan_run(run_config, write_data=True, local=True)
                todo.append((argv, run_config))
            else:
                same_config(run_dir, load_config(argv[0], argv[1:]), path)
    for argv, config in todo:
        print(f"study: training {config.name} with seed {config.seed} in {config.run_dir}", flush=True)
        with RunHold.acquire(config.run_dir, "cohort study") as hold, hold.for_children():
            code = launch(argv, config.world_size)
        if code != 0:
            raise RunDirError(
                f"{config.name} with seed {config.seed} failed (exit {code}; its error is above); "
                f"fix it and rerun the study: finished runs are kept"
            )
        if not finished(Path(config.run_dir), config):
            # The launcher returns 0 when a stop signal (Ctrl-C, SIGTERM) ended every rank
            # cleanly at a checkpoint: the study stops with it rather than start the next run.
            raise StudyStopped(
                f"study stopped during {config.name} with seed {config.seed} (a stop signal; it saved); "
                f"rerun the same command to continue: finished runs are kept"
            )
    runs = {name: [Run.load(Path(out) / name / f"seed{seed}") for seed in seeds] for name in names}
    table = study_table(names, runs)
    calibration = calibration_table(names, runs)
    curves = "\n\n".join(curve_table(names, runs, metric) for metric in CURVES)
    spread = f" (± {NO_SPREAD}: one seed, no spread)" if len(seeds) == 1 else ""
    binning = binning_note([run for name in names for run in runs[name][:1]])
    Path(out, "study.md").write_text(
        f"Test split, mean ± std over seeds {seeds}{spread}; {REPORTED}: a config's reported members "
        f"(reported_members). {binning}\n\n{table}\n\n"
        f"The members' calibration, before and after temperature scaling fitted on val (c_):\n\n{calibration}\n\n"
        f"The cohort's diversity during training (each cell names the epoch it read, counted from 1):\n\n{curves}\n"
    )
    print(table + (f"\n± {NO_SPREAD}: one seed, no spread" if spread else ""))
    print(binning)
    print(f"\n{calibration}")
    print(f"\n{curves}")
    print(f"\nwrote {Path(out, 'study.md')}")
    return table
