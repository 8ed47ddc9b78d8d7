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
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.name!r}")


def lr_factor(schedule: ScheduleConfig, progress: float, total_epochs: int) -> float:
    """Multiplier of the base LR after ``progress`` epochs (fractional) of ``total_epochs``.

    Linear warm-up reaches 1 at ``warmup_epochs``; then ``step`` multiplies by gamma at
    each milestone passed, ``cosine`` anneals to 0 at the end, ``constant`` stays at 1.
    ``cyclic`` is ffcv-imagenet's (``get_cyclic_lr``, interpolated within each epoch as its
    training loop does): linear from 1e-4 to 1 at ``peak_epoch``, then to 0 at the end.
    """
    if schedule.name == "cyclic":
        return float(np.interp(progress, [0.0, schedule.peak_epoch, total_epochs], [1e-4, 1.0, 0.0]))
    warmup = min(1.0, progress / schedule.warmup_epochs) if schedule.warmup_epochs > 0 else 1.0
    if schedule.name == "step":
        decay = schedule.gamma ** sum(progress >= m for m in schedule.milestones)
    elif schedule.name == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * min(progress / total_epochs, 1.0)))
    else:
        decay = 1.0
    return warmup * decay


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """``lr`` on every group, times the group's ``lr_scale`` where it has one (a BatchEnsemble's factors)."""
    for group in optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"] if "lr_scale" in group else lr
