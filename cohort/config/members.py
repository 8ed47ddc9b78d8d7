"""Who is in the cohort: its members (``members:``), how a BatchEnsemble member is built
(``batch_ensemble:``), and the trained cohort the members may distil (``teacher:``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cohort.config.checks import ConfigError, choose
from cohort.config.names import ALL_POLICIES, ARCHITECTURE_NAMES, STRENGTH_RANGE, is_known_architecture


@dataclass
class MemberConfig:
    """One network of the cohort; it lives on its own rank (or R replica ranks)."""

    arch: str = "small_cnn"
    """Model name; see ``cohort.models.ARCHITECTURES``."""
    policy: str = "standard"
    """Augmentation policy name; see ``cohort.config.names.ALL_POLICIES``."""
    strength: float = 1.0
    """Policy strength in [0, 2]: 0 no augmentation, 1 the policy's default, 2 strongest."""
    name: str = ""
    """Display name; defaults to ``m{index}``."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Overrides of the cohort's ``optim`` for this member only (e.g. ``{lr: 0.05}``)."""
    schedule: dict[str, Any] = field(default_factory=dict)
    """Overrides of the cohort's ``schedule`` for this member only, as ``optim`` overrides ``optim:``
    (e.g. ``{name: constant}``: Diff-DML's auxiliaries keep their learning rate while the primary's
    decays; ``CohortConfig.member_schedule``)."""
    learns_from: list[int | str] | None = None
    """The peers this member's terms read (``loss.mimicry``, ``loss.diversity``), by index or name;
    None: every other member (DML). The exchange is unchanged: every member still sends its logits,
    and this member's terms read the rows of the chosen peers (``CohortConfig.peer_positions``).
    Diff-DML's code: the primary learns from its auxiliaries, each auxiliary from the primary only
    (``[primary]``); a one-way teacher → student pair: the teacher's mimicry weight 0."""
    blurpool: bool = False
    """Blur before every strided convolution of ≥ 16 input channels (BlurPool, Zhang 2019, as
    ffcv-imagenet applies it to its ResNets)."""
    loss: dict[str, float] = field(default_factory=dict)
    """Term weights for this member only (e.g. ``{mimicry: 0.5}``: a weaker or smaller peer
    that learns less from the others)."""
    batch_ensemble: int = 1
    """n: the member is a BatchEnsemble of n internal members sharing every weight
    (``cohort.models.batch_ensemble``; the ``batch_ensemble:`` section sets how), named
    ``<name>.<j>`` and counted as n members in predictions, metrics and reports; 1: a plain network."""

    def validate(self, where: str) -> None:
        """This member's own keys (``where``: ``members.<i>``); its optimiser is checked merged
        with the cohort's (``CohortConfig.member_optim``)."""
        if not is_known_architecture(self.arch):
            raise ConfigError(
                f"{where}.arch {self.arch!r} is unknown; valid: {', '.join(ARCHITECTURE_NAMES)}, "
                f"or tv.<torchvision model>"
            )
        choose(f"{where}.policy", self.policy, ALL_POLICIES)
        if not STRENGTH_RANGE[0] <= self.strength <= STRENGTH_RANGE[1]:
            raise ConfigError(
                f"{where}.strength must be in [{STRENGTH_RANGE[0]}, {STRENGTH_RANGE[1]}], got {self.strength}"
            )
        if self.batch_ensemble < 1:
            raise ConfigError(
                f"{where}.batch_ensemble must be >= 1 (1: a plain network, n: n internal members), "
                f"got {self.batch_ensemble}"
            )


@dataclass
class BatchEnsembleConfig:
    """How members with ``members.<i>.batch_ensemble`` n > 1 are built and trained (Wen et al.,
    ICLR 2020; defaults as the official code of Nam et al. 2021, cs-giung/giung2)."""

    init: str = "normal"
    """The rank-1 factors' start: ``normal`` N(1, ``init_std``) (giung2's) or ``random_sign``
    ±1 with P(+1) = ``sign_probability`` (uncertainty-baselines' ``random_sign_init`` > 0)."""
    init_std: float = 0.5
    """``normal``: the factors' standard deviation around 1 (giung2's 0.5)."""
    sign_probability: float = 0.5
    """``random_sign``: the probability of +1."""
    fast_lr_scale: float = 0.5
    """The factors' learning rate, as a multiple of the member's (giung2's configs: BASE_LR_BE = BASE_LR / 2)."""
    fast_weight_decay: float = 0.0
    """The factors' weight decay (giung2's default WEIGHT_DECAY_BE 0; its C100_WRN28x10_BE4.yaml sets 5e-4).
    Member biases take the member's learning rate and weight decay, as there."""
    siblings_are_peers: bool = False
    """Whether an internal member reads its own BatchEnsemble's other members as peers (mimicry,
    diversity). Off: its peers are the other members of the cohort alone, and a BatchEnsemble's
    internal members learn from one another only through their shared weights, as the paper trains
    them (cross-entropy only). On: DML among every internal member too (no public code does it)."""

    def validate(self) -> None:
        choose("batch_ensemble.init", self.init, ("normal", "random_sign"))
        if not self.init_std > 0 or not 0 < self.sign_probability < 1:
            raise ConfigError("batch_ensemble: need init_std > 0 and 0 < sign_probability < 1")
        if not self.fast_lr_scale > 0 or self.fast_weight_decay < 0:
            raise ConfigError("batch_ensemble: need fast_lr_scale > 0 and fast_weight_decay >= 0")


PERTURBATIONS = ("none", "gaussian", "ods", "confods")
TEACHER_CHECKPOINTS = ("auto", "best", "last")
TEACHER_MAPPINGS = ("auto", "one_to_one", "mean")


@dataclass
class TeacherConfig:
    """A finished cohort run that the members distil (``loss.distill``; ``cohort.train.teachers``).

    Its checkpoint is checked before any process starts (``cohort.run.teacher_run``); its
    networks run in eval mode, frozen, and never train."""

    run_dir: str = ""
    """The teachers' run directory (empty: no teachers)."""
    checkpoint: str = "auto"
    """``best`` (its ``train.select_by`` choice), ``last`` (its newest complete checkpoint), or
    ``auto`` (best when the run selected one, else last)."""
    mapping: str = "auto"
    """``one_to_one``: student m learns from teacher m; ``mean``: every student from the mean of
    the teachers' probabilities; ``auto``: one_to_one, or mean when the cohort has one student.
    Students are ``member_names``: a BatchEnsemble member's internal member j is a student of its
    own (the official ``train_student.py`` gives teacher j the batch's block j)."""
    perturbation: str = "none"
    """The input x′ on which teacher and student are compared: ``none`` (x′ = x, plain KD),
    ``gaussian`` (x + (s/255)·N(0, 1)), ``ods`` (one step along the gradient of a random
    projection of one teacher's output; Nam et al. 2021) or ``confods`` (ODS scaled by that
    teacher's confidence). Always clipped to [0, 1]."""
    step_size: float = 1.0
    """s, in pixel levels of 1/255 (the official code's 1)."""

    @property
    def enabled(self) -> bool:
        return bool(self.run_dir)

    def resolved_mapping(self, students: int) -> str:
        if self.mapping != "auto":
            return self.mapping
        return "mean" if students == 1 else "one_to_one"

    def validate(self) -> None:
        """The section's own keys (its run directory is checked later, with the data:
        ``cohort.run.teacher_run.check_teacher``; the rules between it and the objective are
        ``cohort.config.rules``)."""
        choose("teacher.checkpoint", self.checkpoint, TEACHER_CHECKPOINTS)
        choose("teacher.mapping", self.mapping, TEACHER_MAPPINGS)
        choose("teacher.perturbation", self.perturbation, PERTURBATIONS)
        if not self.step_size > 0:
            raise ConfigError(f"teacher.step_size must be > 0, got {self.step_size}")
