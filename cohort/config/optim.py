"""The optimiser and the learning-rate schedule: ``optim:`` (each member may override it,
``members.<i>.optim``) and ``schedule:``. ``cohort.train.optim`` builds and steps them."""

from __future__ import annotations

from dataclasses import dataclass, field

from cohort.config.checks import ConfigError, choose, refuse_nonfinite


@dataclass
class OptimConfig:
    name: str = "sgd"
    """``sgd`` or ``adamw``."""
    lr: float = 0.1
    """The peak learning rate, which the schedule (``schedule:``) multiplies by its factor."""
    momentum: float = 0.9
    """SGD's momentum (0: plain SGD); in [0, 1)."""
    nesterov: bool = False
    """Nesterov momentum (SGD with momentum > 0 only)."""
    weight_decay: float = 5e-4
    """L2 weight decay (SGD) or decoupled weight decay (AdamW)."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW only."""
    eps: float = 1e-8
    """AdamW only: the ε added to the root of the second moment (PyTorch's default; Keras'
    Adam, behind uncertainty-baselines' LeNet-5 numbers, uses 1e-7)."""
    bn_weight_decay: bool = True
    """Weight decay on BatchNorm's weights and biases too (ffcv-imagenet's recipe: false)."""

    def validate(self, where: str) -> None:
        refuse_nonfinite(self, where)
        choose(f"{where}.name", self.name, ("sgd", "adamw"))
        if len(self.betas) != 2 or not all(0 <= beta < 1 for beta in self.betas):
            raise ConfigError(
                f"{where}.betas must be two numbers in [0, 1) (AdamW's β1, β2), got {self.betas}; e.g. [0.9, 0.999]"
            )
        if not self.lr > 0:
            raise ConfigError(f"{where}.lr must be > 0, got {self.lr}")
        if not self.eps > 0:
            raise ConfigError(f"{where}.eps must be > 0, got {self.eps}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"{where}: need weight_decay >= 0 and 0 <= momentum < 1")
        if self.nesterov and (self.name != "sgd" or self.momentum == 0):
            raise ConfigError(f"{where}.nesterov needs name=sgd and momentum > 0")


SCHEDULES = ("step", "step_lr", "cosine", "constant", "cyclic", "warmup_linear_decay")
"""The learning-rate schedules ``cohort.train.optim.lr_factor`` knows."""


@dataclass
class ScheduleConfig:
    name: str = "step"
    """``step`` (multiply by ``gamma`` at ``milestones``), ``step_lr`` (torch's ``StepLR``: ×``gamma``
    every ``step_size`` epochs, stepped once per epoch from epoch ``step_begin`` on, as Diff-DML's
    ``train.py`` steps it; ``cohort.train.optim.step_lr``), ``cosine``, ``constant``, ``cyclic``
    (ffcv-imagenet's: linear from 1e-4 of the LR to the LR at ``peak_epoch``, then linear to 0
    at the last epoch), or ``warmup_linear_decay`` (cs-giung/giung2's ``WarmupLinearDecayLR``,
    ``cohort.train.optim.warmup_linear_decay``: ``milestones`` [m0, m1, m2], linear warm-up from
    ``warmup_factor`` over the epochs before m0, 1 until m1, linear down to ``gamma`` at m2,
    then ``gamma``; per epoch, as the official code steps it)."""
    milestones: list[int] = field(default_factory=list)
    """Epochs at which the step schedule multiplies the LR by ``gamma``; ``warmup_linear_decay``:
    its three milestones (the official [5, 150, 270] for 300 epochs)."""
    gamma: float = 0.1
    """``step``: the factor at each milestone; ``warmup_linear_decay``: the final factor (official 0.01)."""
    warmup_epochs: float = 0.0
    """Linear warm-up from 0, in (fractional) epochs, before the schedule proper."""
    peak_epoch: float = 2.0
    """``cyclic`` only: where the LR peaks."""
    warmup_factor: float = 0.01
    """``warmup_linear_decay`` only: the factor of its first epoch (giung2's ``WARMUP_FACTOR``)."""
    step_size: int = 0
    """``step_lr`` only: epochs between two multiplications by ``gamma`` (StepLR's ``step_size``;
    Diff-DML's ``SGD_lrdecay_step``, 50 on CIFAR)."""
    step_begin: int = 0
    """``step_lr`` only: the first epoch whose end steps the scheduler (Diff-DML's ``SGD_lrdecay_begin``,
    50 on CIFAR: with ``step_size`` 50 the first decay then reaches epoch 100, counted from 0)."""

    def validate(self, where: str = "schedule") -> None:
        choose(f"{where}.name", self.name, SCHEDULES)
        if self.name == "step_lr" and (self.step_size < 1 or self.step_begin < 0 or self.milestones):
            raise ConfigError(
                f"{where}: step_lr multiplies by gamma every step_size epochs from step_begin on: need "
                f"step_size >= 1, step_begin >= 0 and no milestones (e.g. step_size: 50, step_begin: 50), got "
                f"step_size {self.step_size}, step_begin {self.step_begin}, milestones {self.milestones}"
            )
        if self.name == "cyclic" and (self.peak_epoch <= 0 or self.warmup_epochs > 0):
            raise ConfigError(
                f"{where} cyclic climbs to its peak itself: need peak_epoch > 0 and warmup_epochs 0, "
                f"got peak_epoch {self.peak_epoch}, warmup_epochs {self.warmup_epochs}"
            )
        if self.name == "warmup_linear_decay":
            if len(self.milestones) != 3 or self.milestones[0] < 1 or self.warmup_epochs > 0:
                raise ConfigError(
                    f"{where} warmup_linear_decay warms up itself: need three milestones [m0, m1, m2] with "
                    f"m0 >= 1 (e.g. [5, 150, 270]) and warmup_epochs 0, got milestones {self.milestones}, "
                    f"warmup_epochs {self.warmup_epochs}"
                )
            if not 0 < self.warmup_factor <= 1:
                raise ConfigError(f"{where}.warmup_factor must be in (0, 1], got {self.warmup_factor}")
        if self.warmup_epochs < 0 or not self.gamma > 0:
            raise ConfigError(f"{where}: need warmup_epochs >= 0 and gamma > 0")
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError(f"{where}.milestones must increase, got {self.milestones}")
