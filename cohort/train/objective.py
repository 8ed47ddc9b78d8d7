"""A member's training objective: a weighted sum of named terms, built from ``config.loss``.

    total = Σ_name  weight(name, member, progress) · term_name(inputs)

Each term is a small class in ``TERMS``, registered together with its config class under the
name of its config section (``loss.<name>``), with a docstring citing its source; importing
this module checks that the registered terms are ``LossConfig``'s fields, in order, with their
types (``check_registry``). A term reads what it declares in its config's ``NEEDS``
(``peers``: the other members' detached logits; ``partners``: the member's own logits on
CS-KD's same-class partners, without gradient; ``teachers``: frozen teachers' logits on a
perturbed batch); each need selects a provider the step runs (``cohort.train.inputs``), and the
objective returns the total and every term by name, which is all the trainer logs, sums,
checkpoints and prints. A new method is a new term here (plus, where it reads a new kind of
input, a provider), and the training loop does not change.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch

from cohort.config import (
    CohortConfig,
    CrossEntropyConfig,
    CSKDConfig,
    DistillConfig,
    DiversityConfig,
    FocalConfig,
    LossConfig,
    MDCAConfig,
    MimicryConfig,
    TermConfig,
)
from cohort.train.losses import (
    cross_entropy,
    cskd_loss,
    distillation_loss,
    diversity_loss,
    focal_loss,
    mdca_loss,
    mimicry_loss,
    sigmoid_rampup,
)


@dataclass
class LossInputs:
    """What the terms of one member read at one step.

    For a BatchEnsemble member of n internal members, every tensor field but ``labels`` carries
    a leading axis of n (``logits`` ``[n, B, C]``, ``peers`` ``[n, P, B, C]``, ...), and
    ``internal(j)`` is internal member j's inputs, in the shapes below."""

    logits: torch.Tensor
    """This member's logits on the batch's anchors ``[B, C]`` (float32, with gradients)."""
    labels: torch.Tensor
    """``[B]``; ``IGNORE_LABEL`` where hidden."""
    progress: float
    """Training progress in (fractional) epochs, for ramp-ups."""
    peers: torch.Tensor | None = None
    """The other members' logits ``[K−1, B, C]``, detached (terms that need ``peers``)."""
    partners: torch.Tensor | None = None
    """This member's logits ``[B, C]`` on each anchor's same-class partner, computed in train
    mode without gradient (terms that need ``partners``)."""
    teachers: torch.Tensor | None = None
    """The logits ``[J, B, C]`` of the teachers this member learns from, on x′ (terms that need
    ``teachers``; ``cohort.train.teachers``)."""
    perturbed: torch.Tensor | None = None
    """This member's logits ``[B, C]`` on x′, with gradients; None when x′ = x (use ``logits``)."""

    def internal(self, j: int) -> LossInputs:
        """Internal member j's inputs, from a BatchEnsemble member's (whose tensors lead with n)."""
        stacked = ("logits", "peers", "partners", "teachers", "perturbed")
        return dataclasses.replace(
            self, **{name: getattr(self, name)[j] for name in stacked if getattr(self, name) is not None}
        )


class Term:
    """One named term. ``config`` is its own section of ``LossConfig``; ``loss`` the whole
    section, for the settings a term shares with another (DPLO reads mimicry's T)."""

    config_class: ClassVar[type[TermConfig]]
    """The class of its section of ``LossConfig`` (``register`` sets it)."""

    def __init__(self, config: TermConfig, loss: LossConfig):
        self.config, self.loss = config, loss

    @property
    def needs(self) -> tuple[str, ...]:
        return self.config.NEEDS

    def weight_factor(self, progress: float) -> float:
        """Multiplier of the term's weight at ``progress`` (1: no schedule)."""
        return 1.0

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        raise NotImplementedError


TERMS: dict[str, type[Term]] = {}


def register(name: str, config_class: type[TermConfig]) -> Callable[[type[Term]], type[Term]]:
    """Register a term class under ``name`` with ``config_class``: the field of ``LossConfig``
    that configures it, and that field's type."""

    def add(cls: type[Term]) -> type[Term]:
        cls.config_class = config_class
        TERMS[name] = cls
        return cls

    return add


def check_registry(terms: dict[str, type[Term]], loss: type = LossConfig) -> None:
    """Raise TypeError unless ``terms`` registers exactly the fields of ``loss``, in their order,
    each with its field's type as its config class: the config's ``loss:`` section and the
    objective then name one set of terms, and a term added to one alone fails at import."""
    hints = typing.get_type_hints(loss)
    fields = {f.name: hints[f.name] for f in dataclasses.fields(loss)}
    for name, config_class in fields.items():
        if name not in terms:
            raise TypeError(
                f"{loss.__name__}.{name} ({config_class.__name__}) has no registered term; "
                f"register its class with @register({name!r}, {config_class.__name__})"
            )
        if terms[name].config_class is not config_class:
            raise TypeError(
                f"term {name} ({terms[name].__name__}) is registered with "
                f"{terms[name].config_class.__name__}, but {loss.__name__}.{name} is "
                f"{config_class.__name__}"
            )
    extra = [name for name in terms if name not in fields]
    if extra:
        raise TypeError(
            f"term {extra[0]} ({terms[extra[0]].__name__}) is registered, but {loss.__name__} "
            f"has no field {extra[0]}; add one of type {terms[extra[0]].config_class.__name__}"
        )
    if list(terms) != list(fields):
        raise TypeError(
            f"terms are registered in the order {', '.join(terms)}, but {loss.__name__}'s "
            f"fields are {', '.join(fields)}; register them in the fields' order"
        )


@register("ce", CrossEntropyConfig)
class CrossEntropy(Term):
    """Cross-entropy with optional label smoothing, over the samples whose label is not hidden;
    0 with zero gradient on a batch with none (``cohort.train.losses.cross_entropy``)."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return cross_entropy(inputs.logits, inputs.labels, self.config.label_smoothing)


@register("focal", FocalConfig)
class Focal(Term):
    """Focal loss −(1 − p_y)^γ log p_y, batch mean over labelled samples (Lin et al. 2017; as
    the calibration baseline of Mukhoti et al. 2020 and MDCA's code ``FocalLoss``)."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return focal_loss(inputs.logits, inputs.labels, self.config.gamma)


@register("mdca", MDCAConfig)
class MDCA(Term):
    """MDCA (Hebbalaguppe et al., CVPR 2022; official code mdca-loss/MDCA-Calibration): the
    mean over classes of |batch-mean confidence − batch frequency|, on this rank's labelled
    samples (with R replicas: its local shard, as the official single-GPU code sees its batch)."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return mdca_loss(inputs.logits, inputs.labels)


@register("cskd", CSKDConfig)
class ClassWiseSelfKD(Term):
    """CS-KD (Yun et al., CVPR 2020; official code alinlab/cs-kd): T²·KL(p_partner^T ‖ p_anchor^T),
    batch mean, the partner a sample of the anchor's class seen by the same network in train
    mode without gradient. The partners come from the cohort's order (``cohort.data.order``)."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        return cskd_loss(inputs.logits, inputs.partners, self.config.temperature)


@register("mimicry", MimicryConfig)
class Mimicry(Term):
    """DML's mimicry term (paper: Zhang et al., CVPR 2018; official code YingZhangDUT/Deep-Mutual-Learning):
    T² · D(p_peer^T ‖ p_own^T), ``pairwise`` (mean over peers; the official code sums, equal
    for K = 2) or ``peer_mean``; or KDCL's ensemble targets (Guo et al., CVPR 2020,
    ``cohort.train.losses.kdcl_target``); KL or JS. ``rampup_epochs``: sigmoid ramp-up of λ (ONE, ours to offer)."""

    def weight_factor(self, progress: float) -> float:
        return sigmoid_rampup(progress, self.config.rampup_epochs)

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        c = self.config
        return mimicry_loss(
            inputs.logits,
            inputs.peers,
            target=c.target,
            divergence=c.divergence,
            temperature=c.temperature,
            labels=inputs.labels,
        )


@register("diversity", DiversityConfig)
class Diversity(Term):
    """DPLO as the summary of Diff-DML (CVPR 2025) reads it: our formulation, written when no code
    was known (``cohort.train.losses.diversity_loss``; the code, Luminova1996/Diff-DML, differentiates
    the objectives instead, docs/methods.md "Diff-DML, two readings"). It reads mimicry's temperature."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        c = self.config
        return diversity_loss(
            inputs.logits,
            inputs.peers,
            inputs.labels,
            kind=c.kind,
            margin=c.margin,
            temperature=self.loss.mimicry.temperature,
        )


@register("distill", DistillConfig)
class Distillation(Term):
    """Ensemble distillation (Nam et al., NeurIPS 2021; official code cs-giung/giung2,
    ``projects/Diversity-Matters/scripts/train_student.py``): T²·KL(p_teacher^T(x′) ‖ p_student^T(x′)),
    batch mean, x′ the teachers' perturbation of the clean batch (``teacher.perturbation``).
    CE, like every other term, reads the clean batch: the student runs on both, as there."""

    def __call__(self, inputs: LossInputs) -> torch.Tensor:
        student = inputs.perturbed if inputs.perturbed is not None else inputs.logits
        return distillation_loss(student, inputs.teachers, self.config.temperature)


check_registry(TERMS)  # at import, not when a run first builds an objective


class Objective:
    """The terms of one member's objective with their weights, and their weighted sum.

    A BatchEnsemble member of n (``internal_members``) is n members here: each internal member's
    terms on its own inputs (``LossInputs.internal``), and the mean over them of the total and of
    every term, as the official code's losses average over the n-times repeated batch
    (cs-giung/giung2, ``train_student.py``: one cross-entropy over ``labels.repeat(n)``)."""

    def __init__(self, terms: dict[str, tuple[Term, float]], internal_members: int = 1):
        self.terms = terms
        self.internal_members = internal_members

    @property
    def names(self) -> list[str]:
        """The terms' names, in summation order (``loss``, the total, is not among them)."""
        return list(self.terms)

    @property
    def needs(self) -> set[str]:
        return {need for term, _ in self.terms.values() for need in term.needs}

    def __call__(self, inputs: LossInputs) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """The total loss, and every term (and ``loss``, the total) detached, for logging. A term
        whose input is absent at this step (peers between two exchanges of ``exchange.every``,
        or before codistillation's first refresh) sits the step out, logged as 0; with every
        term out, the total is None: the member has nothing to learn at this step."""
        if self.internal_members == 1:
            return self.weighted_sum(inputs)
        each = [self.weighted_sum(inputs.internal(j)) for j in range(self.internal_members)]
        totals = [t for t, _ in each]
        total = None if totals[0] is None else torch.stack(totals).mean()
        return total, {name: torch.stack([values[name] for _, values in each]).mean() for name in each[0][1]}

    def weighted_sum(self, inputs: LossInputs) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """One network's total and terms."""
        total, values = None, {}
        for name, (term, weight) in self.terms.items():
            if any(getattr(inputs, need) is None for need in term.needs):
                values[name] = torch.zeros((), device=inputs.logits.device)
                continue
            value = term(inputs)
            values[name] = value.detach()
            weighted = weight * term.weight_factor(inputs.progress) * value
            total = weighted if total is None else total + weighted
        values["loss"] = total.detach() if total is not None else torch.zeros((), device=inputs.logits.device)
        return total, values


def build_objective(config: CohortConfig, member: int) -> Objective:
    """Member ``member``'s objective: the terms enabled for it (``CohortConfig.enabled_terms``)."""
    sections = config.loss.terms()
    return Objective(
        {
            name: (TERMS[name](sections[name], config.loss), weight)
            for name, weight in config.enabled_terms(member).items()
        },
        config.members[member].batch_ensemble,
    )
