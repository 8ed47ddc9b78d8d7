"""The checks before any training or evaluation process starts, in one place.

    plan_run(config)                          → RunPlan   cohort train, cohort submit, every worker
                                                          (``local=True``: cohort train, every rank on this machine)
    plan_eval(run_dir, checkpoint, split, …)  → EvalPlan  cohort eval (one process, --distributed, every rank)

Each turns what a user asked for into what the processes need, or stops at the first problem
with a one-line error naming the culprit and the fix (``cohort.errors``): the data folder
checked whole, the labelled set of a semi-supervised run, the teachers' checkpoint, the run
directory's verdict, the trackers (``cohort.run.tracking.check_trackers``: package, store,
server). The launchers call them before starting anything, and every rank calls them again
on the files it is about to read (a rank cannot trust a check made on another node, or
minutes earlier), so a trainer or an evaluator takes a plan and checks nothing itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cohort.config import CohortConfig, ConfigError
from cohort.config.names import FIXED_INPUT_ARCHITECTURES
from cohort.data.datasets import ensure_data, writes_digits
from cohort.data.folder import DataError, check_beton, check_data, check_root
from cohort.data.labelled import check_labelled
from cohort.dist.memory import check_copies_fit
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError, make_folder
from cohort.run.selection import read_selection
from cohort.run.teacher_run import TeacherPlan, check_teacher, check_teacher_record
from cohort.run.tracking import check_trackers, read_record


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


def plan_run(config: CohortConfig, write_data: bool = False, local: bool = False) -> RunPlan:
    """Check a training run before it starts. ``write_data``: write the digits data first when its
    folder is missing (the launchers; a worker only reads, since its peers would write alongside).
    ``local``: every rank will run on this machine (``cohort train``): no more of them than
    ``local_rank_bound`` allows (checked first, before the data is written), and
    codistillation's copies fit its memory (``cohort.dist.memory``)."""
    if local:
        check_local_ranks(config)
    if write_data:
        write_missing_data(config)
    meta = check_data(config.data.root, config.data.batch_size, config.replicas)
    check_run_length(config, meta)
    check_input_size(config, meta)
    check_batch_ensembles(config, meta)
    if local:
        check_copies_fit(config, meta)
    labelled = check_labelled(config)
    teachers = check_teacher(config, meta)
    run = RunDir(config.run_dir)
    continues = run.check(config)
    if continues and config.resume == "auto":
        check_records(run, teachers)
    check_trackers(config, run)
    return RunPlan(config, meta, labelled, teachers, continues)


def write_missing_data(config: CohortConfig) -> None:
    """The digits data where ``data.root`` lacks it (``ensure_data``), into a folder made first
    through ``make_folder``: a path that cannot be created (a symlink loop, /proc, a read-only
    disk) is one line naming it, not the writer's traceback."""
    root, dataset = config.data.root, config.data.dataset
    check_root(Path(root))
    if writes_digits(root, dataset):
        fix = "set data.root to a folder that can be written (the digits are written there on the first run)"
        make_folder(root, "data.root", fix, DataError)
    ensure_data(root, dataset)


def check_records(run: RunDir, teachers: TeacherPlan | None) -> None:
    """The files a resumed run reads back, each read as it will be (a damaged one is one line
    naming it, before any process starts): ``metrics.jsonl`` (a torn last line is recovered
    later, by rank 0), ``selection.json``, the teachers' record, the newest checkpoint's marker,
    ``tracking.json``."""
    run.read_metrics(notice=False)
    if run.selection_file.is_file():
        read_selection(run.selection_file)
    if teachers is not None:
        check_teacher_record(run.path, teachers)
    checkpoint_files.latest_complete(run.path)
    read_record(run)


def check_seeds(seeds: list[int]) -> None:
    """Refuse a seed listed twice (``cohort study``, ``cohort submit --seeds``): it would train one
    run (into one folder) and count it twice, a spread of 0 in a study's table that no second
    run measured."""
    repeated = next((seed for seed in seeds if seeds.count(seed) > 1), None)
    if repeated is not None:
        raise ConfigError(
            f"--seeds lists seed {repeated} {seeds.count(repeated)} times ({' '.join(map(str, seeds))}): a seed is "
            f"one run in one folder (seed{repeated}/), which would train once and count twice; list each seed once"
        )


def check_run_length(config: CohortConfig, meta: dict) -> None:
    """Refuse a run of more optimiser steps than checkpoint folders can number
    (``checkpoint_files.STEP_DIGITS``): past 10 ** 9 the newest would sort before the older
    ones, and a resume would start from an old checkpoint. Counted from the training split's
    size in ``meta.json`` (full batches per replica, ``train.max_steps_per_epoch``), an upper
    bound where only labelled samples are read."""
    samples = meta.get("sizes", {}).get("train") if isinstance(meta.get("sizes"), dict) else None
    if not isinstance(samples, int):
        return  # a folder written before sizes were recorded: nothing to count from
    per_epoch = max(1, samples // (config.data.batch_size * config.replicas))
    if config.train.max_steps_per_epoch:
        per_epoch = min(per_epoch, config.train.max_steps_per_epoch)
    steps, most = config.train.epochs * per_epoch, 10**checkpoint_files.STEP_DIGITS - 1
    if steps > most:
        raise ConfigError(
            f"train.epochs {config.train.epochs} × {per_epoch:,} steps per epoch = {steps:,} steps, more than "
            f"checkpoint folders can number ({most:,}); train fewer epochs, or cut them with "
            f"train.max_steps_per_epoch"
        )


LOCAL_RANKS_PER_CORE = 4
"""``train.max_local_ranks`` 0: at most this many ranks per core a local launch may start."""


def usable_cores() -> int:
    """The cores this process may run on (its affinity, which cgroups and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def local_rank_bound(config: CohortConfig) -> int:
    """The most ranks ``cohort train`` starts on this machine: ``train.max_local_ranks``, or
    (0) ``LOCAL_RANKS_PER_CORE`` per usable core. Ranks step in lockstep, each with its torch
    and loader threads: past a few per core each step waits on the scheduler, the collectives
    near ``train.dist_timeout_s`` (1,000 members on 2 cores would start 1,000 processes)."""
    return config.train.max_local_ranks or LOCAL_RANKS_PER_CORE * usable_cores()


def check_local_ranks(config: CohortConfig) -> None:
    """Refuse a local launch of more ranks (K × R processes) than ``local_rank_bound``."""
    bound, world = local_rank_bound(config), config.world_size
    if world > bound:
        why = (
            f"train.max_local_ranks {bound}"
            if config.train.max_local_ranks
            else f"{LOCAL_RANKS_PER_CORE} per core, {usable_cores()} cores"
        )
        raise ConfigError(
            f"the cohort would start K×R = {config.num_members}×{config.replicas} = {world} processes on this "
            f"machine, more than {bound} ({why}); train fewer members or replicas, spread them over nodes with "
            f"`cohort submit`, or raise train.max_local_ranks"
        )


def input_sizes(config: CohortConfig, meta: dict) -> list[int]:
    """The image sides the networks will be given: training's (the data's, or the progressive
    resolutions' ends with ``data.random_resized_crop``) and evaluation's."""
    side, resolution = meta["image_size"], config.data.resolution
    train = {resolution.at(0, side), resolution.max_res or side} if config.data.random_resized_crop else {side}
    evaluation = (resolution.eval_res or side) if meta.get("decoder") == "center_crop" else side
    return sorted(train | {evaluation})


def check_input_size(config: CohortConfig, meta: dict) -> None:
    """Refuse a torchvision architecture (``tv.*``) or one of ``FIXED_INPUT_ARCHITECTURES``
    that cannot take the data's images (torchvision's ViTs need 224 px; AlexNet or Inception v3
    pool 32 px away; ``lenet5`` takes 28 px), found by building the network on
    PyTorch's meta device (shapes, no weights, no arithmetic) and passing it one image of each
    of ``input_sizes``: about a second per architecture, and only when a member uses one. Other
    errors of that dry run (a model that cannot be built on the meta device) prove nothing and
    are left to training."""
    archs = sorted(
        {
            (m.arch, m.blurpool)
            for m in config.members
            if m.arch.startswith("tv.") or m.arch in FIXED_INPUT_ARCHITECTURES
        }
    )
    if not archs:
        return
    import torch

    from cohort.models import build_model

    for arch, blurpool in archs:
        try:
            with torch.device("meta"):
                net = build_model(
                    arch, meta["num_classes"], *config.data.input_statistics(meta), blurpool=blurpool
                ).eval()
        except Exception:  # not buildable on the meta device: nothing learnt
            continue
        for side in input_sizes(config, meta):
            try:
                with torch.device("meta"), torch.no_grad():
                    net(torch.empty(1, 3, side, side))
            except (AssertionError, RuntimeError, ValueError) as error:
                reason = (str(error).splitlines() or [type(error).__name__])[0]
                if "meta" in reason.lower():  # the dry run's own limit, not the model's
                    break
                member = next(i for i, m in enumerate(config.members) if (m.arch, m.blurpool) == (arch, blurpool))
                raise DataError(
                    f"members.{member}.arch {arch} cannot take {side} px images (data.root {config.data.root}, "
                    f"image_size {meta['image_size']}): {reason[:120]}; choose an architecture for {side} px "
                    f"images (e.g. resnet56, wrn28_10, tv.resnet50), or data of the size {arch} needs "
                    f"(torchvision's ViTs: 224 px; lenet5: 28 px, e.g. `cohort data fashion-mnist`)"
                ) from None


def check_batch_ensembles(config: CohortConfig, meta: dict) -> None:
    """Refuse a ``members.<i>.batch_ensemble`` n > 1 whose architecture has layers with weights
    that BatchEnsemble cannot share (``cohort.models.batch_ensemble.share_layers``: LayerNorm,
    attention, embeddings), found by building it on PyTorch's meta device (no weights)."""
    wrapped = sorted({(m.arch, m.blurpool, m.batch_ensemble) for m in config.members if m.batch_ensemble > 1})
    if not wrapped:
        return
    import torch

    from cohort.models import build_model

    for arch, blurpool, size in wrapped:
        try:
            with torch.device("meta"):
                build_model(
                    arch, meta["num_classes"], *config.data.input_statistics(meta), blurpool, batch_ensemble=size
                )
        except ValueError as error:
            member = next(i for i, m in enumerate(config.members) if (m.arch, m.blurpool) == (arch, blurpool))
            raise ConfigError(
                f"members.{member}.batch_ensemble {size}: {arch} cannot be a BatchEnsemble: {error}; choose an "
                f"architecture of convolutions, linear layers and BatchNorm (e.g. small_cnn, resnet32, wrn28_10)"
            ) from None


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
    if replicas is not None and replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, not {replicas} (leave it out for the run's R)")
    replicas = config.replicas if replicas is None else replicas
    return EvalPlan(run, config, meta, folder, split, eval_betons(config, split, data, meta), replicas)


def checkpoint_folder(run: RunDir, which: str) -> Path:
    """The complete checkpoint ``which`` names: ``last``, ``best`` or a folder."""
    if which == "last":
        folder = checkpoint_files.latest_complete(run.path)
        if folder is None:
            raise RunDirError(
                f"{run.checkpoints} holds no complete checkpoint; train first (checkpoints need COMPLETE.json)"
            )
        return folder
    folder = checkpoint_files.best_dir(run.path) if which == "best" else Path(which)
    if not (folder / checkpoint_files.MARKER).is_file():
        hint = (
            "train with train.select_by=val_ensemble_nll (or similar)"
            if which == "best"
            else "pick a complete checkpoint"
        )
        raise RunDirError(f"{folder / checkpoint_files.MARKER} is missing: not a complete checkpoint; {hint}")
    checkpoint_files.read_marker(folder)  # a damaged one is named now, not after predicting
    return folder


def eval_betons(config: CohortConfig, split: str, data: str | None, meta: dict) -> dict[str, Path]:
    """The ``.beton`` of each split to predict: val (for the temperatures) and ``split``. A
    ``--data`` file outside the run's data folder (which ``check_data`` checked) is checked the
    same way against the run's classes and image size (``meta``)."""
    root = Path(config.data.root)
    betons = {"val": root / "val.beton", split: Path(data) if data else root / f"{split}.beton"}
    for path in betons.values():
        if not path.is_file():
            raise RunDirError(f"{path} is missing; pass --data with a .beton written by `cohort data`")
    if data:
        side = meta["image_size"] if meta.get("decoder") != "center_crop" else 0
        check_beton(
            Path(data),
            meta["num_classes"],
            f"`cohort data` (the {meta['num_classes']} classes of the run's data, {meta['image_size']} px)",
            side,
            expected_by=f"the run's data ({Path(config.data.root) / 'meta.json'}, for --data)",
        )
    return betons
