"""Frozen teachers for ensemble distillation, and the input perturbations that reveal
where they disagree (Nam et al., "Diversity Matters When Learning From Ensembles",
NeurIPS 2021; official code cs-giung/giung2, ``projects/Diversity-Matters/scripts/train_student.py``).

At each step a student rank computes x′ from its clean batch x (``perturb``) and the
teachers' logits on x′ (``logits``); the ``distill`` term compares them with the student's
logits on x′ (``cohort.train.objective``). Perturbations, all clipped to [0, 1] pixels:

- ``none``:     x′ = x (plain KD; the student then runs once, as in the official code).
- ``gaussian``: x′ = x + (s/255)·ε, ε ~ N(0, 1).
- ``ods``:      one teacher j, drawn uniformly; y = softmax(teacher_j(x)/T); w ~ U[−1, 1] of
                y's shape; g = ∇ₓ Σ(w ⊙ y); x′ = x + (s/255)·√D·g/‖g‖₂ per example.
- ``confods``:  the ODS step scaled, per example, by teacher j's confidence max_c y_c.

Where the cohort layout differs from the official code (one process holding every model):

- **The draws** (teacher j, w, ε) come from generators seeded by (cohort seed, step,
  replica), not from the global RNG: every student rank of a replica group draws the same
  ones without a message, and a resumed run draws them again exactly with no new state.
- **Placement**: every student rank holds the teachers it may need (teacher m, and for ODS
  or the mean every teacher) and computes x′ itself, so no x′ crosses the network. With
  one clean view per step (``views: shared``, which the config requires for ODS) every rank
  computes the same x′. docs/methods.md "Where the teachers live" gives the measured costs.
- Teachers run in eval mode with ``requires_grad`` off: ODS differentiates with respect to
  x only, and their BatchNorm statistics never move.
"""

from __future__ import annotations

import math
from contextlib import AbstractContextManager, nullcontext

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cohort.config import CohortConfig
from cohort.run import checkpoint_files
from cohort.run.teacher_run import TeacherPlan

DRAW_STREAM = 0x0D5
"""Mixed into the seed of the perturbations' draws, so they share no stream with the data order."""


def step_seed(seed: int, step: int, replica: int, stream: int) -> int:
    """A 63-bit seed that is a pure function of (cohort seed, step, replica, stream)."""
    return int(np.random.SeedSequence([seed, step, replica, DRAW_STREAM, stream]).generate_state(2, np.uint64)[0] >> 1)


def chosen_teacher(seed: int, step: int, teachers: int) -> int:
    """ODS's teacher at ``step``: uniform over ``teachers``, the same on every rank."""
    return int(np.random.default_rng(step_seed(seed, step, 0, 1)).integers(teachers))


def step_generator(seed: int, step: int, replica: int, device: torch.device) -> torch.Generator:
    """The generator of w (ODS) or ε (Gaussian) at ``step`` for replica ``replica``'s shard."""
    return torch.Generator(device=device).manual_seed(step_seed(seed, step, replica, 2))


def gaussian_perturbation(x: torch.Tensor, step_size: float, generator: torch.Generator) -> torch.Tensor:
    """x + (s/255)·ε, ε ~ N(0, 1), clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return (x + (step_size / 255.0) * noise).clamp_(0.0, 1.0)


def ods_direction(
    teacher: nn.Module,
    x: torch.Tensor,
    w: torch.Tensor,
    temperature: float,
    autocast: AbstractContextManager | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(g, y): g = ∇ₓ Σ(w ⊙ softmax(teacher(x)/T)) and y = that softmax (Output Diversified
    Sampling, Tashiro et al. 2020, as Nam et al. use it). Only x receives a gradient."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), autocast or nullcontext():
        logits = teacher(x)
        # bf16 logits (autocast) are scored in float32; float64 ones (the tests') stay float64.
        y = torch.softmax(logits.to(torch.promote_types(logits.dtype, torch.float32)) / temperature, dim=1)
        (g,) = torch.autograd.grad((w * y).sum(), x)
    return g.detach(), y.detach()


def ods_perturbation(
    x: torch.Tensor, direction: torch.Tensor, step_size: float, confidence: torch.Tensor | None = None
) -> torch.Tensor:
    """x + (s/255)·√D·g/‖g‖₂ per example (times max_c y_c per example for ConfODS), clipped to [0, 1]."""
    flat = direction.flatten(1).float()
    unit = F.normalize(flat, p=2, dim=1).view_as(direction)
    step = (step_size / 255.0) * math.sqrt(flat.shape[1]) * unit
    if confidence is not None:
        step = step * confidence.view(-1, *([1] * (x.dim() - 1)))
    return (x + step.to(x.dtype)).clamp_(0.0, 1.0)


def trace_fields(drawn: dict) -> dict:
    """What ``Teachers.perturb`` drew, as trace numbers: tensors by their float64 sum (a digest
    that equal draws on two ranks share), the teacher index as it is. Summing copies from the
    device, so the trainer calls this only when it writes a trace."""
    return {
        key: float(value.double().sum()) if isinstance(value, torch.Tensor) else value for key, value in drawn.items()
    }


class Teachers:
    """The teachers one student rank holds, frozen, and what it computes with them."""

    def __init__(
        self,
        config: CohortConfig,
        plan: TeacherPlan,
        member: int,
        meta: dict,
        device: torch.device,
        autocast: AbstractContextManager,
        channels_last: bool,
    ):
        self.plan, self.member, self.seed = plan, member, config.seed
        self.perturbation = config.teacher.perturbation
        self.step_size = config.teacher.step_size
        self.temperature = config.loss.distill.temperature
        self.autocast, self.channels_last = autocast, channels_last
        self.num_classes = meta["num_classes"]
        # Student m reads teacher m (one_to_one) or all of them (mean); ODS may pick any one.
        # Students are networks: a BatchEnsemble member's internal members read teachers of their own.
        self.targets = list(range(plan.size)) if plan.mapping == "mean" else list(config.member_rows(member))
        held = range(plan.size) if plan.mapping == "mean" or self.perturbation in ("ods", "confods") else self.targets
        self.nets = {j: self.load(j, meta, device) for j in held}

    def load(self, j: int, meta: dict, device: torch.device) -> nn.Module:
        net = checkpoint_files.load_model(
            self.plan.folder,
            j,
            self.plan.archs[j],
            meta,
            device,
            blurpool=bool(self.plan.blurpool and self.plan.blurpool[j]),
            whose="the teachers' config",
            fix="set teacher.checkpoint to another checkpoint",
        )
        if self.channels_last:
            net = net.to(memory_format=torch.channels_last)
        return net.requires_grad_(False)

    def perturb(self, x: torch.Tensor, step: int, replica: int) -> tuple[torch.Tensor | None, dict]:
        """x′ for the clean model input ``x`` at ``step`` (None for ``none``: x′ = x), and what
        was drawn: ``x_prime``, and for ODS ``teacher`` (j) and ``w`` (``trace_fields`` turns
        them into numbers for the trace, only when there is one)."""
        if self.perturbation == "none":
            return None, {}
        generator = step_generator(self.seed, step, replica, x.device)
        drawn = {}
        if self.perturbation == "gaussian":
            x_prime = gaussian_perturbation(x, self.step_size, generator)
        else:
            j = chosen_teacher(self.seed, step, self.plan.size)
            w = torch.rand((len(x), self.num_classes), generator=generator, device=x.device) * 2.0 - 1.0
            direction, y = ods_direction(self.nets[j], x, w, self.temperature, self.autocast)
            confidence = y.max(dim=1).values if self.perturbation == "confods" else None
            x_prime = ods_perturbation(x, direction, self.step_size, confidence)
            drawn = {"teacher": j, "w": w}
        return x_prime, {"x_prime": x_prime, **drawn}

    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The logits ``[J, B, C]`` of the teachers this student learns from, on ``x``."""
        with self.autocast:
            return torch.stack([self.nets[j](x).float() for j in self.targets])
