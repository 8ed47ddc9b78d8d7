"""How the members train and where: ``train:`` (epochs, evaluation and checkpoint cadence,
devices, threads, timeouts, model selection)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from cohort.config.checks import ConfigError, choose
from cohort.config.names import SELECTABLE


@dataclass
class TrainConfig:
    epochs: int = 30
    """Training epochs: full passes over the training order (``max_steps_per_epoch`` may cut them
    short). At most ``MAX_EPOCHS`` (100,000): the longest published schedules are a few thousand
    epochs (MAE pre-trains for 1,600), and a long study of a tiny data set stays far below; a
    value past it is a slip (a step count, or a power of ten too many) that would train until
    killed, a checkpoint every epoch. ``cohort.preflight`` also keeps the run's steps within
    what checkpoint folders can number (``step-NNNNNNNNN``)."""
    eval_every: int = 1
    """Evaluate on val (and test) every this many epochs, and after the last one."""
    checkpoint_every: int = 0
    """Save a checkpoint every this many epochs (0: only after the last epoch)."""
    checkpoint_every_steps: int = 0
    """Also save one every this many optimiser steps (0: never mid-epoch)."""
    on_nonfinite: str = "stop"
    """A non-finite loss or logits: ``stop`` (one line naming member and step) or
    ``skip_step`` (every rank skips that optimiser step; counted as ``skipped_steps``)."""
    keep_last: int = 3
    """Keep the newest this many complete step checkpoints (0: keep all)."""
    device: str = "auto"
    """``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""
    bf16: bool = False
    """bf16 autocast (CUDA only)."""
    channels_last: bool = False
    """channels_last memory format (CUDA only)."""
    compile: bool = False
    """``torch.compile`` the member's training forward (``cohort.train.compiled``; inductor, which
    needs a C compiler on the CPU and Triton on CUDA). Checkpoints keep the plain module's
    keys, so a compiled member's checkpoint loads uncompiled (``cohort eval``, as a teacher);
    ``resume=auto`` refuses the switch as any other change of the config (compiled kernels
    round differently). Evaluation runs uncompiled. The first steps of a run, and of every
    resume, wait for the compilation."""
    members_per_gpu: int | str = "auto"
    """Member ranks sharing one GPU (CUDA only; ``cohort.dist.placement``): a divisor n of K,
    or ``auto``: one rank per GPU when the node has enough GPUs, else the smallest n that
    fits (a one-GPU machine holds the whole cohort). With n > 1 the logit exchange travels
    over gloo through host memory and a member's DDP all-reduce over NCCL."""
    flip_tta: bool = False
    """Evaluate on each image and its left-right mirror, averaging the logits (ffcv-imagenet's
    ``lr_tta``, which sums them: the same top-1; the mean keeps NLL and ECE on one scale)."""
    threads_per_rank: int = 0
    """torch CPU threads per rank; 0: the machine's cores divided among local ranks. At most
    ``MAX_THREADS_PER_RANK`` (1,024, more than any node's cores): OpenMP starts them all at the
    first parallel operation: 20,000 and one matrix product aborted a process here ("libgomp: Thread
    creation failed")."""
    max_local_ranks: int = 0
    """``cohort train`` refuses to start more than this many processes (K × R ranks) on the
    machine; 0: four per core this process may use (``cohort.preflight.local_rank_bound``).
    Ranks step in lockstep, each with its torch and loader threads, so past a few per core a
    step waits on the scheduler and collectives near ``dist_timeout_s``. ``cohort submit``
    places its tasks with SLURM and is not bound by it."""
    pin_cores: bool = False
    """Pin each local rank, and the loader threads it starts, to its own share of the cores
    (Linux ``sched_setaffinity``), so that ranks in lockstep do not take each other's cores."""
    dist_timeout_s: float = 300.0
    """Collectives that wait longer than this fail instead of hanging. Finite, and at least
    ``MIN_DIST_TIMEOUT_S`` (1 s): healthy ranks wait on each other for seconds at a time (a
    peer's first batch, rank 0 writing a checkpoint), and torch counts the timeout in
    milliseconds, so a shorter one fails a healthy cohort (or rounds to nothing). At most
    ``MAX_DIST_TIMEOUT_S`` (one day): a stalled peer holds every other rank (and its GPUs) that
    long before the run stops, and torch's own default is 30 minutes; past a day it is a slip
    (milliseconds for seconds), not a wait anyone means."""
    trace: bool = False
    """Write ``trace/member{m}-replica{r}.jsonl``: per-step losses and batch digests."""
    max_steps_per_epoch: int = 0
    """Cut epochs short (0: full epochs). For smoke tests and benchmarks."""
    progress: bool = True
    """tqdm progress bar on rank 0."""
    select_by: str = "last"
    """Model selection on the validation split: ``last``, ``val_<ensemble|members>_<metric>``
    (e.g. ``val_ensemble_nll``; ``members`` is the members' mean; acc is maximised, the
    rest minimised), or ``csmac`` (Diff-DML's two-stage rule on the ``reported_members``' mean,
    every member's without them: ``baseline_acc``, ``acc_threshold``; ``cohort.run.selection``).
    The selected epoch's checkpoint is ``checkpoints/best``, its predictions ``predictions/best``.
    The test split never chooses anything."""
    baseline_acc: float = 0.0
    """``select_by: csmac``'s a, as a fraction (Diff-DML's ``--baseline_acc`` 77.87 is 0.7787): the
    val accuracy of the cross-entropy baseline. 0: unset (``csmac`` refuses it)."""
    acc_threshold: float = 0.01
    """``select_by: csmac``'s c, as a fraction (the code's ``--acc_threshold`` 1, in points): from the
    first evaluation whose val accuracy exceeds a − c on, keep the best val accuracy − val ECE."""
    calibration_bins: int = 15
    """M, the equal-width bins of ECE, class-wise ECE, MCE and full ECE, and the equal-mass bins of
    adaptive ECE (Diff-DML's ``metric.py``: 10)."""
    calibration_binning: str = "upper"
    """Which bin holds a probability p: ``upper``, bin b holds (b/M, (b+1)/M] (Guo et al., giung2,
    MDCA's code); ``floor``, bin floor(p·M), 1.0 in the last (Diff-DML's ``metric.py``, torchmetrics).
    Every table names the binning it used (``cohort.evaluate.metrics.Binning``)."""

    def validate(self) -> None:
        choose("train.device", self.device, ("cpu", "cuda", "auto"))
        if self.epochs > MAX_EPOCHS:
            raise ConfigError(
                f"train.epochs {self.epochs} is more than {MAX_EPOCHS:,} epochs, which no schedule means (the "
                f"longest published are a few thousand); set the epochs to train (train.max_steps_per_epoch cuts "
                f"each epoch short)"
            )
        if self.epochs < 1 or self.eval_every < 1 or self.checkpoint_every < 0 or self.max_steps_per_epoch < 0:
            raise ConfigError(
                "train: need epochs >= 1, eval_every >= 1, checkpoint_every >= 0, max_steps_per_epoch >= 0"
            )
        choose("train.on_nonfinite", self.on_nonfinite, ("stop", "skip_step"))
        if self.checkpoint_every_steps < 0 or self.keep_last < 0:
            raise ConfigError("train: need checkpoint_every_steps >= 0 and keep_last >= 0")
        parse_select_by(self.select_by)
        if self.select_by == "csmac" and not 0 < self.baseline_acc <= 1:
            percent = (
                f" ({self.baseline_acc:g} % is {self.baseline_acc / 100:g})" if 1 < self.baseline_acc <= 100 else ""
            )
            raise ConfigError(
                f"train.select_by csmac needs train.baseline_acc, the cross-entropy baseline's val accuracy as a "
                f"fraction in (0, 1]{percent}, got {self.baseline_acc:g}; e.g. train.baseline_acc=0.7787"
            )
        if not 0 <= self.acc_threshold < 1:
            raise ConfigError(
                f"train.acc_threshold must be in [0, 1) (a fraction: 0.01 is one point), got {self.acc_threshold:g}"
            )
        if self.calibration_bins < 1:
            raise ConfigError(f"train.calibration_bins must be >= 1, got {self.calibration_bins}")
        choose("train.calibration_binning", self.calibration_binning, CALIBRATION_BINNINGS)
        if not MIN_DIST_TIMEOUT_S <= self.dist_timeout_s < math.inf:
            raise ConfigError(
                f"train.dist_timeout_s must be a finite number of seconds >= {MIN_DIST_TIMEOUT_S:g}, "
                f"got {self.dist_timeout_s:g}; the default is 300"
            )
        if self.dist_timeout_s > MAX_DIST_TIMEOUT_S:
            raise ConfigError(
                f"train.dist_timeout_s {self.dist_timeout_s:g} is more than a day ({MAX_DIST_TIMEOUT_S:g} s), how "
                f"long a stalled peer would hold every rank; give it in seconds (the default is 300)"
            )
        if not 0 <= self.threads_per_rank <= MAX_THREADS_PER_RANK:
            raise ConfigError(
                f"train.threads_per_rank must be >= 0 (0: the cores shared among the ranks) and at most "
                f"{MAX_THREADS_PER_RANK:,} (more than any node's cores), got {self.threads_per_rank}"
            )
        if self.max_local_ranks < 0:
            raise ConfigError(
                f"train.max_local_ranks must be >= 0 (0: four ranks per core), got {self.max_local_ranks}"
            )


MIN_DIST_TIMEOUT_S = 1.0
"""The shortest ``train.dist_timeout_s`` a config may set (see its docstring)."""
MAX_DIST_TIMEOUT_S = 86_400.0
"""The longest ``train.dist_timeout_s``: one day (see its docstring)."""
MAX_EPOCHS = 100_000
"""The most ``train.epochs`` a config may set (see its docstring)."""
MAX_THREADS_PER_RANK = 1024
"""The most ``train.threads_per_rank`` (see its docstring)."""


CALIBRATION_BINNINGS = ("upper", "floor")
"""The bin rules of ``train.calibration_binning``."""


def parse_select_by(select_by: str) -> tuple[str, str] | None:
    """``val_<who>_<metric>`` → (who, metric); ``csmac`` → ("csmac", "csmac"); ``last`` → None.
    Raises ConfigError otherwise."""
    if select_by == "last":
        return None
    if select_by == "csmac":
        return "csmac", "csmac"
    parts = select_by.split("_", 2)
    if len(parts) != 3 or parts[0] != "val" or parts[1] not in ("ensemble", "members") or parts[2] not in SELECTABLE:
        if select_by.startswith("test"):
            raise ConfigError(f"train.select_by {select_by!r} selects on test; select on val (e.g. val_ensemble_nll)")
        raise ConfigError(
            f"train.select_by {select_by!r} is not valid; use last, csmac or val_<ensemble|members>_<metric>, "
            f"metric one of: {', '.join(SELECTABLE)}"
        )
    return parts[1], parts[2]
