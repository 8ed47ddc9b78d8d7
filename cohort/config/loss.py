"""The training objective's terms: ``loss:``, one section per named term (``cohort.train.objective``
holds the terms themselves, registered under the same names)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import ClassVar

from cohort.config.checks import ConfigError, choose


@dataclass
class TermConfig:
    """One named term of the training objective (``cohort.train.objective``): on when its weight > 0.

    ``NEEDS`` says what the term reads besides the member's own logits and labels
    (``peers``: the other members' logits, through the exchange; ``partners``: CS-KD's
    same-class partners; ``teachers``: a trained cohort's logits); each need some member's
    objective declares selects one provider the training step runs (``cohort.train.inputs``).
    """

    weight: float = 0.0
    """The term's weight in every member's objective (``members.<i>.loss`` overrides it per member)."""
    NEEDS: ClassVar[tuple[str, ...]] = ()

    def enabled(self, weight: float) -> bool:
        """Whether the term is part of an objective that gives it ``weight``."""
        return weight > 0

    def validate(self, where: str) -> None:
        if self.weight < 0:
            raise ConfigError(f"{where}.weight must be >= 0, got {self.weight}")


@dataclass
class CrossEntropyConfig(TermConfig):
    """Cross-entropy with the labels (the hidden ones of a semi-supervised run left out)."""

    weight: float = 1.0
    """On by default: every method adds its terms to cross-entropy."""
    label_smoothing: float = 0.0
    """ε of label smoothing (Szegedy et al. 2016): the target puts 1 − ε on the label and ε/C on every class."""

    def validate(self, where: str) -> None:
        super().validate(where)
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"{where}.label_smoothing must be in [0, 1), got {self.label_smoothing}")


@dataclass
class FocalConfig(TermConfig):
    """Focal loss (Lin et al. 2017), the calibration baseline of Mukhoti et al. 2020 and MDCA's
    code. Usually in place of CE: ``loss.ce.weight=0 loss.focal.weight=1``."""

    gamma: float = 1.0
    """γ in −(1 − p_y)^γ log p_y (0: cross-entropy)."""

    def validate(self, where: str) -> None:
        super().validate(where)
        if self.gamma < 0:
            raise ConfigError(f"{where}.gamma must be >= 0, got {self.gamma}")


@dataclass
class MDCAConfig(TermConfig):
    """MDCA, the multi-class difference in confidence and accuracy (Hebbalaguppe et al., CVPR 2022),
    added to CE or focal loss; its weight is the paper's β (1 in its code)."""


@dataclass
class KDTermConfig(TermConfig):
    """A knowledge-distillation term: T²·KL between tempered softmaxes of a target and the member."""

    temperature: float = 4.0
    """T (4 in CS-KD's and in Nam et al.'s official code; the latter's README commands pass 1)."""

    def validate(self, where: str) -> None:
        super().validate(where)
        if not self.temperature > 0:
            raise ConfigError(f"{where}.temperature must be > 0, got {self.temperature}")


@dataclass
class CSKDConfig(KDTermConfig):
    """Class-wise self-knowledge distillation (Yun et al., CVPR 2020); its weight is λ_cls
    (1 on CIFAR-100, 3 on CUB). Each step then reads ``data.batch_size`` anchors and as many
    same-class partners."""

    NEEDS: ClassVar[tuple[str, ...]] = ("partners",)


@dataclass
class DistillConfig(KDTermConfig):
    """Knowledge distillation from a trained cohort (``teacher:``; Hinton et al. 2015, with the
    input perturbations of Nam et al., NeurIPS 2021): T²·KL(p_teacher^T(x′) ‖ p_student^T(x′)),
    batch mean. Its weight is the paper's α (0.9, with ``loss.ce.weight`` 1 − α = 0.1)."""

    NEEDS: ClassVar[tuple[str, ...]] = ("teachers",)


MIMICRY_TARGETS = ("pairwise", "peer_mean", "ensemble_mean", "ensemble_min_logit")


@dataclass
class MimicryConfig(TermConfig):
    """DML's mimicry term (Zhang et al. 2018). Zero weight for every member gives the
    independent baseline and skips the logit exchange."""

    weight: float = 1.0
    """λ."""
    target: str = "pairwise"
    """``pairwise`` (mean of KL to each peer), ``peer_mean`` (KL to the peers' mean), or
    KDCL's ensemble targets built from every member's logits, its own included:
    ``ensemble_mean`` (their mean) and ``ensemble_min_logit`` (per class, the smallest
    logit relative to the true class's; needs every label)."""
    divergence: str = "kl"
    """``kl`` or ``js`` (Jensen–Shannon)."""
    temperature: float = 1.0
    """T of the tempered softmaxes compared (the paper's 1); the term is scaled by T²."""
    rampup_epochs: float = 0.0
    """Sigmoid ramp-up of λ over this many epochs (0: full weight from the start)."""
    NEEDS: ClassVar[tuple[str, ...]] = ("peers",)

    def validate(self, where: str) -> None:
        super().validate(where)
        choose(f"{where}.target", self.target, MIMICRY_TARGETS)
        choose(f"{where}.divergence", self.divergence, ("kl", "js"))
        if not self.temperature > 0 or self.rampup_epochs < 0:
            raise ConfigError(f"{where}: need temperature > 0 and rampup_epochs >= 0")


@dataclass
class DiversityConfig(TermConfig):
    """DPLO as the summary of Diff-DML reads it, a diversity-preserving term (our formulation, written
    when no code was known; see ``cohort.train.losses``). The code's DPLO is a differentiated objective:
    auxiliaries without CE that learn from the primary alone (``members.<i>.learns_from``)."""

    kind: str = "none"
    """``none``, ``margin`` (push apart peers closer than ``margin`` in KL) or
    ``nontarget`` (reward disagreement on the non-target classes)."""
    weight: float = 0.0
    """β."""
    margin: float = 0.1
    """m, in nats of KL (``margin`` only)."""
    NEEDS: ClassVar[tuple[str, ...]] = ("peers",)

    def enabled(self, weight: float) -> bool:
        return weight > 0 and self.kind != "none"

    def validate(self, where: str) -> None:
        choose(f"{where}.kind", self.kind, ("none", "margin", "nontarget"))
        if self.weight < 0 or self.margin < 0:
            raise ConfigError(
                f"{where}: weight and margin must be >= 0, got weight {self.weight}, margin {self.margin}"
            )
        if self.kind != "none" and self.weight == 0:
            raise ConfigError(f"{where}.kind is {self.kind} but {where}.weight is 0; set a weight, or kind: none")


@dataclass
class LossConfig:
    """The objective of every member: a weighted sum of named terms (``cohort.train.objective``).

    Each field is one term, named by the field; ``members.<i>.loss`` overrides weights
    per member. Override a setting by name: ``loss.mimicry.weight=0``. Each term's class in
    ``cohort.train.objective`` is registered with the field's name and type, checked there at import.
    """

    ce: CrossEntropyConfig = field(default_factory=CrossEntropyConfig)
    """Cross-entropy (``CrossEntropyConfig``)."""
    focal: FocalConfig = field(default_factory=FocalConfig)
    """Focal loss (``FocalConfig``)."""
    mdca: MDCAConfig = field(default_factory=MDCAConfig)
    """MDCA (``MDCAConfig``)."""
    cskd: CSKDConfig = field(default_factory=CSKDConfig)
    """CS-KD (``CSKDConfig``)."""
    mimicry: MimicryConfig = field(default_factory=MimicryConfig)
    """DML's mimicry (``MimicryConfig``)."""
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    """The summary's reading of Diff-DML's DPLO, our formulation (``DiversityConfig``)."""
    distill: DistillConfig = field(default_factory=DistillConfig)
    """Distillation from teachers (``DistillConfig``)."""

    def terms(self) -> dict[str, TermConfig]:
        """Every term's settings by name, in the order the objective sums them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def validate(self) -> None:
        for name, term in self.terms().items():
            term.validate(f"loss.{name}")
