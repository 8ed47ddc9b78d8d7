"""Optimisers and learning-rate schedules.

The schedule is a pure function of training progress (fractional epochs), set on the
optimiser before every step: nothing to save, and resuming at any step is exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np
import torch

from cohort.config import BatchEnsembleConfig, OptimConfig, ScheduleConfig
from cohort.models.batch_ensemble import FACTOR_NAMES


def parameter_groups(
    net: torch.nn.Module, cfg: OptimConfig, batch_ensemble: BatchEnsembleConfig | None = None
) -> list[dict]:
    """The optimiser's parameter groups: BatchNorm's weights and biases in a group without
    weight decay when ``cfg.bn_weight_decay`` is off (ffcv-imagenet), else one group; and a
    BatchEnsemble's rank-1 factors, when it has them, in a last group of their own at
    ``fast_lr_scale`` times the learning rate (``lr_scale``, which ``set_lr`` reads) and
    ``fast_weight_decay`` (giung2's ``build_sgd_optimizer``: parameters named by ``SUFFIX_BE``)."""
    fast = [p for name, p in net.named_parameters() if name.rsplit(".", 1)[-1] in FACTOR_NAMES]
    norms = (
        []
        if cfg.bn_weight_decay
        else [
            p
            for m in net.modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
            for p in m.parameters(recurse=False)
        ]
    )
    apart = {id(p) for p in fast + norms}
    groups = [{"params": [p for p in net.parameters() if id(p) not in apart]}]
    if norms:
        groups.append({"params": norms, "weight_decay": 0.0})
    if fast:
        settings = batch_ensemble or BatchEnsembleConfig()
        groups.append({"params": fast, "lr_scale": settings.fast_lr_scale, "weight_decay": settings.fast_weight_decay})
    return groups


def build_optimizer(params: Iterable[torch.nn.Parameter] | list[dict], cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
        )
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), eps=cfg.eps, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(schedule: ScheduleConfig, progress: float, total_epochs: int) -> float:
    """Multiplier of the base LR after ``progress`` epochs (fractional) of ``total_epochs``.

    Linear warm-up reaches 1 at ``warmup_epochs``; then ``step`` multiplies by gamma at
    each milestone passed, ``step_lr`` as torch's ``StepLR`` stepped from an epoch on (``step_lr``),
    ``cosine`` anneals to 0 at the end, ``constant`` stays at 1.
    ``cyclic`` is ffcv-imagenet's (``get_cyclic_lr``, interpolated within each epoch as its
    training loop does): linear from 1e-4 to 1 at ``peak_epoch``, then to 0 at the end.
    ``warmup_linear_decay`` is giung2's ``WarmupLinearDecayLR`` (``warmup_linear_decay``).
    """
    if schedule.name == "cyclic":
        return float(np.interp(progress, [0.0, schedule.peak_epoch, total_epochs], [1e-4, 1.0, 0.0]))
    if schedule.name == "warmup_linear_decay":
        return warmup_linear_decay(schedule, progress)
    warmup = min(1.0, progress / schedule.warmup_epochs) if schedule.warmup_epochs > 0 else 1.0
    if schedule.name == "step":
        decay = schedule.gamma ** sum(progress >= m for m in schedule.milestones)
    elif schedule.name == "step_lr":
        decay = step_lr(schedule, progress)
    elif schedule.name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(progress / total_epochs, 1.0)))
    else:
        decay = 1.0
    return warmup * decay


def step_lr(schedule: ScheduleConfig, progress: float) -> float:
    """The LR factor of torch's ``StepLR(step_size, gamma)`` stepped as Diff-DML's code steps it
    (Luminova1996/Diff-DML ``train.py`` L126 builds it, L312-317 step it): once after each training
    epoch whose index (from 0) is at least ``step_begin`` (``SGD_lrdecay_begin``). Epoch e then
    trains after max(0, e − begin) steps, at gamma ** (max(0, e − begin) // step_size): on CIFAR
    (``dataset_utils/cifar.py`` L98-100: step 50, begin 50, gamma 0.1), 0.1 at epochs 0-99, 0.01 from
    100, 0.001 from 150, and so on. Constant within an epoch, as there."""
    stepped = max(0, math.floor(progress) - schedule.step_begin)
    return schedule.gamma ** (stepped // schedule.step_size)


def warmup_linear_decay(schedule: ScheduleConfig, progress: float) -> float:
    """The LR factor of cs-giung/giung2's ``WarmupLinearDecayLR``
    (``giung2/solver/scheduler/warmup_schedulers.py``, ``build_warmup_linear_decay_lr``), the
    schedule of Nam et al.'s (NeurIPS 2021) teachers and students (Diversity-Matters
    ``C100_WRN28x10_SGD.yaml`` and ``_BE4.yaml``: milestones [5, 150, 270], warm-up factor
    0.01, gamma 0.01, 300 epochs).

    With epochs counted from one (n = 1, 2, …) and ``milestones`` [m0, m1, m2]: linear from
    ``warmup_factor`` at n = 1 towards 1 over n < m0; 1 for m0 ≤ n < m1; linear from 1 at
    n = m1 towards ``gamma`` at n = m2; ``gamma`` from m2 on. The official code wraps it in a
    ``LambdaLR`` that its training scripts step once per epoch (``scheduler.step()`` after
    each training epoch), so the factor is constant within an epoch; so is this one: every
    step of 0-based epoch ``floor(progress)`` gets the official factor of that epoch, rather
    than a value interpolated between epochs (``cyclic`` interpolates, as its source does).
    """
    m0, m1, m2 = schedule.milestones
    n = math.floor(progress) + 1  # the official lambda counts the epoch in progress from one
    if n < m0:
        return schedule.warmup_factor + (1.0 - schedule.warmup_factor) * (n - 1) / (m0 - 1)
    if n < m1:
        return 1.0
    if n < m2:
        return 1.0 + (schedule.gamma - 1.0) * (n - m1) / (m2 - m1)
    return schedule.gamma


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` on every group, times the group's ``lr_scale`` where it has one (a BatchEnsemble's factors)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
