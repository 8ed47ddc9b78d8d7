"""The typed configuration tree of a cohort run.

A run is described by one ``CohortConfig``: loaded from a YAML file in ``configs/``,
changed by ``key=value`` overrides with dotted paths (``optim.lr=0.05``,
``members.1.arch=resnet56``), validated before any process starts, and dumped to
``RUN_DIR/config.yaml``. Unknown keys and wrong types are errors that name the key.

This module is the schema (the dataclasses and their checks); reading, overriding, building
and dumping are the generic engine's, ``cohort.typed_tree``, its errors raised as ``ConfigError``.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cohort import typed_tree
from cohort.data.policies import ALL_POLICIES, CROP_FREE_POLICIES, STRENGTH_RANGE, auto_policies
from cohort.errors import CohortError
from cohort.metric_names import SELECTABLE
from cohort.model_names import ARCHITECTURE_NAMES, is_known_architecture

# config_to_dict and dump_config are the engine's, re-exported with the schema.
from cohort.typed_tree import TreeError, build, config_to_dict, dump_config, read_yaml  # noqa: F401


class ConfigError(CohortError, TreeError):
    """A configuration problem; its message is one line naming the key and the fix (a ValueError,
    as every ``TreeError``)."""


@dataclass
class OptimConfig:
    name: str = "sgd"
    """``sgd`` or ``adamw``."""
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW only."""
    eps: float = 1e-8
    """AdamW only: the ε added to the root of the second moment (PyTorch's default; Keras'
    Adam, behind uncertainty-baselines' LeNet-5 numbers, uses 1e-7)."""
    bn_weight_decay: bool = True
    """Weight decay on BatchNorm's weights and biases too (ffcv-imagenet's recipe: false)."""

    def validate(self, where: str) -> None:
        refuse_nonfinite(self, where)
        _choose(f"{where}.name", self.name, ("sgd", "adamw"))
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


SCHEDULES = ("step", "cosine", "constant", "cyclic", "warmup_linear_decay")
"""The learning-rate schedules ``cohort.optim.lr_factor`` knows."""


@dataclass
class ScheduleConfig:
    name: str = "step"
    """``step`` (multiply by ``gamma`` at ``milestones``), ``cosine``, ``constant``, ``cyclic``
    (ffcv-imagenet's: linear from 1e-4 of the LR to the LR at ``peak_epoch``, then linear to 0
    at the last epoch), or ``warmup_linear_decay`` (cs-giung/giung2's ``WarmupLinearDecayLR``,
    ``cohort.optim.warmup_linear_decay``: ``milestones`` [m0, m1, m2], linear warm-up from
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

    def validate(self) -> None:
        _choose("schedule.name", self.name, SCHEDULES)
        if self.name == "cyclic" and (self.peak_epoch <= 0 or self.warmup_epochs > 0):
            raise ConfigError(
                f"schedule cyclic climbs to its peak itself: need peak_epoch > 0 and warmup_epochs 0, "
                f"got peak_epoch {self.peak_epoch}, warmup_epochs {self.warmup_epochs}"
            )
        if self.name == "warmup_linear_decay":
            if len(self.milestones) != 3 or self.milestones[0] < 1 or self.warmup_epochs > 0:
                raise ConfigError(
                    f"schedule warmup_linear_decay warms up itself: need three milestones [m0, m1, m2] with "
                    f"m0 >= 1 (e.g. [5, 150, 270]) and warmup_epochs 0, got milestones {self.milestones}, "
                    f"warmup_epochs {self.warmup_epochs}"
                )
            if not 0 < self.warmup_factor <= 1:
                raise ConfigError(f"schedule.warmup_factor must be in (0, 1], got {self.warmup_factor}")
        if self.warmup_epochs < 0 or not self.gamma > 0:
            raise ConfigError("schedule: need warmup_epochs >= 0 and gamma > 0")
        if sorted(self.milestones) != list(self.milestones):
            raise ConfigError(f"schedule.milestones must increase, got {self.milestones}")


@dataclass
class MemberConfig:
    """One network of the cohort; it lives on its own rank (or R replica ranks)."""

    arch: str = "small_cnn"
    """Model name; see ``cohort.models.ARCHITECTURES``."""
    policy: str = "standard"
    """Augmentation policy name; see ``cohort.data.policies.ALL_POLICIES``."""
    strength: float = 1.0
    """Policy strength in [0, 2]: 0 no augmentation, 1 the policy's default, 2 strongest."""
    name: str = ""
    """Display name; defaults to ``m{index}``."""
    optim: dict[str, Any] = field(default_factory=dict)
    """Overrides of the cohort's ``optim`` for this member only (e.g. ``{lr: 0.05}``)."""
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


@dataclass
class ResolutionConfig:
    """Image resolutions of ImageNet-style training (ffcv-imagenet's progressive resizing):
    training images are decoded at ``min_res`` until epoch ``start_ramp``, then at a
    resolution that grows linearly to ``max_res`` at ``end_ramp`` (multiples of 32;
    ``cohort.data.decoders.progressive_resolution``); evaluation at ``eval_res``.
    0 means the data folder's ``image_size``. Used with ``data.random_resized_crop``."""

    min_res: int = 0
    max_res: int = 0
    start_ramp: int = 0
    end_ramp: int = 0
    eval_res: int = 0
    """Evaluation: the centre crop (224/256 of the shorter side) resized to this."""

    def validate(self) -> None:
        r = self
        if min(r.min_res, r.max_res, r.start_ramp, r.end_ramp, r.eval_res) < 0 or r.start_ramp > r.end_ramp:
            raise ConfigError(f"data.resolution: need sizes >= 0 and start_ramp <= end_ramp, got {r}")
        if (r.min_res == 0) != (r.max_res == 0) or r.min_res > r.max_res:
            raise ConfigError(
                f"data.resolution: set both min_res <= max_res (or neither), got min_res {r.min_res}, "
                f"max_res {r.max_res}"
            )

    def at(self, epoch: int, image_size: int) -> int:
        """The training resolution at ``epoch`` for a data folder of ``image_size``."""
        if self.min_res == 0:
            return image_size
        from cohort.data.decoders import progressive_resolution

        return progressive_resolution(epoch, self.min_res, self.max_res, self.start_ramp, self.end_ramp)


INPUT_SCALINGS = ("dataset", "unit")
"""``data.normalize``'s choices."""


@dataclass
class DataConfig:
    root: str = "data/digits"
    """Folder holding ``train.beton``, ``val.beton``, ``test.beton`` and ``meta.json``."""
    dataset: str = "digits"
    """What ``cohort data`` writes into ``root`` if it is missing. Only ``digits`` is
    written automatically (it needs no download); others are an error naming the command."""
    batch_size: int = 64
    """Per replica: a member with R replicas sees R × batch_size images per step."""
    eval_batch_size: int = 256
    num_workers: int = 2
    """FFCV decoding threads per rank (results do not depend on it)."""
    labelled_fraction: float = 1.0
    """Semi-supervised training (DML §3.4): the fraction of training samples whose label the
    objective may read, chosen class-balanced with ``labelled_seed`` and fixed for the run;
    the others keep their images, their labels hidden (``cohort.data.labelled``)."""
    labelled_indices: str = ""
    """Or a file naming the labelled training samples: ``.npy`` or text, one index per line."""
    labelled_seed: int = 0
    """Seed of the class-balanced choice (not the cohort's seed: seeds of a study share one labelled set);
    >= 0, as numpy's seeds."""
    random_resized_crop: bool = False
    """ImageNet's training augmentation: each training image is a random-resized crop (area
    8–100 %, aspect ratio 3/4–4/3), seeded like every other augmentation and decoded at the
    epoch's resolution (``data.resolution``; ``cohort.data.decoders``). Members' policies
    then apply to the crop: ``flip`` (ImageNet's) or ``none``."""
    resolution: ResolutionConfig = field(default_factory=ResolutionConfig)
    order: str = "shuffle"
    """The training order: ``shuffle`` (a full permutation per epoch) or ``page_local`` (the
    file's pages in a random order, samples shuffled within each run of ``page_window``
    pages: for data larger than memory; ``cohort.data.order.page_local_order``). Either way
    every member reads the same samples at every step and replicas stay disjoint."""
    page_window: int = 8
    """``page_local``: how many of the file's pages (8 MiB each) are shuffled together."""
    os_cache: bool = True
    """FFCV reads the files through the OS page cache (true), or reads the pages a batch needs
    itself (false: for data larger than memory, best with ``order: page_local``)."""
    normalize: str = "dataset"
    """The input scaling of every member's first layer: ``dataset`` ((x − mean) / std per
    channel, the training split's statistics from ``meta.json``) or ``unit`` (the pixels in
    [0, 1] and nothing more, as google/uncertainty-baselines' (Fashion-)MNIST LeNet-5 reads
    them: ``configs/fashion_lenet5*.yaml``). Checkpoints hold the scaling they trained with."""

    def input_statistics(self, meta: dict) -> tuple[list[float], list[float]]:
        """The per-channel (mean, std) that ``normalize`` puts in front of each network."""
        if self.normalize == "unit":
            return [0.0] * len(meta["mean"]), [1.0] * len(meta["std"])
        return list(meta["mean"]), list(meta["std"])

    @property
    def semi_supervised(self) -> bool:
        return self.labelled_fraction < 1 or bool(self.labelled_indices)


@dataclass
class TermConfig:
    """One named term of the training objective (``cohort.objective``): on when its weight > 0.

    ``NEEDS`` says what the term reads besides the member's own logits and labels
    (``peers``: the other members' logits, through the exchange; ``partners``: CS-KD's
    same-class partners; ``teachers``: a trained cohort's logits); each need some member's
    objective declares selects one provider the training step runs (``cohort.inputs``).
    """

    weight: float = 0.0
    NEEDS: ClassVar[tuple[str, ...]] = ()

    def enabled(self, weight: float) -> bool:
        """Whether the term is part of an objective that gives it ``weight``."""
        return weight > 0

    def validate(self, where: str) -> None:
        if self.weight < 0:
            raise ConfigError(f"{where}.weight must be >= 0, got {self.weight}")


@dataclass
class CrossEntropyConfig(TermConfig):
    weight: float = 1.0
    label_smoothing: float = 0.0

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
    rampup_epochs: float = 0.0
    """Sigmoid ramp-up of λ over this many epochs (0: full weight from the start)."""
    NEEDS: ClassVar[tuple[str, ...]] = ("peers",)

    def validate(self, where: str) -> None:
        super().validate(where)
        _choose(f"{where}.target", self.target, MIMICRY_TARGETS)
        _choose(f"{where}.divergence", self.divergence, ("kl", "js"))
        if not self.temperature > 0 or self.rampup_epochs < 0:
            raise ConfigError(f"{where}: need temperature > 0 and rampup_epochs >= 0")


@dataclass
class DiversityConfig(TermConfig):
    """DPLO, Diff-DML's diversity-preserving term (our formulation; see cohort.losses)."""

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
        _choose(f"{where}.kind", self.kind, ("none", "margin", "nontarget"))
        if self.weight < 0 or self.margin < 0:
            raise ConfigError(
                f"{where}: weight and margin must be >= 0, got weight {self.weight}, margin {self.margin}"
            )
        if self.kind != "none" and self.weight == 0:
            raise ConfigError(f"{where}.kind is {self.kind} but {where}.weight is 0; set a weight, or kind: none")


@dataclass
class LossConfig:
    """The objective of every member: a weighted sum of named terms (``cohort.objective``).

    Each field is one term, named by the field; ``members.<i>.loss`` overrides weights
    per member. Override a setting by name: ``loss.mimicry.weight=0``. Each term's class in
    ``cohort.objective`` is registered with the field's name and type, checked there at import.
    """

    ce: CrossEntropyConfig = field(default_factory=CrossEntropyConfig)
    focal: FocalConfig = field(default_factory=FocalConfig)
    mdca: MDCAConfig = field(default_factory=MDCAConfig)
    cskd: CSKDConfig = field(default_factory=CSKDConfig)
    mimicry: MimicryConfig = field(default_factory=MimicryConfig)
    diversity: DiversityConfig = field(default_factory=DiversityConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def terms(self) -> dict[str, TermConfig]:
        """Every term's settings by name, in the order the objective sums them."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


PERTURBATIONS = ("none", "gaussian", "ods", "confods")
TEACHER_CHECKPOINTS = ("auto", "best", "last")
TEACHER_MAPPINGS = ("auto", "one_to_one", "mean")


@dataclass
class TeacherConfig:
    """A finished cohort run that the members distil (``loss.distill``; ``cohort.teachers``).

    Its checkpoint is checked before any process starts (``cohort.teacher_run``); its
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


@dataclass
class BatchEnsembleConfig:
    """How members with ``members.<i>.batch_ensemble`` n > 1 are built and trained (Wen et al.,
    ICLR 2020; defaults as the official code of Nam et al. 2021, cs-giung/giung2)."""

    init: str = "normal"
    """The rank-1 factors' start: ``normal`` N(1, ``init_std``) (giung2's) or ``random_sign``
    ±1 with P(+1) = ``sign_probability`` (uncertainty-baselines' ``random_sign_init`` > 0)."""
    init_std: float = 0.5
    sign_probability: float = 0.5
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
        _choose("batch_ensemble.init", self.init, ("normal", "random_sign"))
        if not self.init_std > 0 or not 0 < self.sign_probability < 1:
            raise ConfigError("batch_ensemble: need init_std > 0 and 0 < sign_probability < 1")
        if not self.fast_lr_scale > 0 or self.fast_weight_decay < 0:
            raise ConfigError("batch_ensemble: need fast_lr_scale > 0 and fast_weight_decay >= 0")


@dataclass
class TrainConfig:
    epochs: int = 30
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
    """``torch.compile`` the member's training forward (``cohort.compiled``; inductor, which
    needs a C compiler on the CPU and Triton on CUDA). Checkpoints keep the plain module's
    keys, so a compiled member's checkpoint loads uncompiled (``cohort eval``, as a teacher);
    ``resume=auto`` refuses the switch as any other change of the config (compiled kernels
    round differently). Evaluation runs uncompiled. The first steps of a run, and of every
    resume, wait for the compilation."""
    members_per_gpu: int | str = "auto"
    """Member ranks sharing one GPU (CUDA only; ``cohort/placement.py``): a divisor n of K,
    or ``auto``: one rank per GPU when the node has enough GPUs, else the smallest n that
    fits (a one-GPU machine holds the whole cohort). With n > 1 the logit exchange travels
    over gloo through host memory and a member's DDP all-reduce over NCCL."""
    flip_tta: bool = False
    """Evaluate on each image and its left-right mirror, averaging the logits (ffcv-imagenet's
    ``lr_tta``, which sums them: the same top-1; the mean keeps NLL and ECE on one scale)."""
    threads_per_rank: int = 0
    """torch CPU threads per rank; 0: the machine's cores divided among local ranks."""
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
    milliseconds, so a shorter one fails a healthy cohort (or rounds to nothing)."""
    trace: bool = False
    """Write ``trace/member{m}-replica{r}.jsonl``: per-step losses and batch digests."""
    max_steps_per_epoch: int = 0
    """Cut epochs short (0: full epochs). For smoke tests and benchmarks."""
    progress: bool = True
    """tqdm progress bar on rank 0."""
    select_by: str = "last"
    """Model selection on the validation split: ``last``, or ``val_<ensemble|members>_<metric>``
    (e.g. ``val_ensemble_nll``; ``members`` is the members' mean; acc is maximised, the
    rest minimised). The selected epoch's checkpoint is ``checkpoints/best``, its
    predictions ``predictions/best``. The test split never chooses anything."""


MIN_DIST_TIMEOUT_S = 1.0
"""The shortest ``train.dist_timeout_s`` a config may set (see its docstring)."""


@dataclass
class CohortConfig:
    name: str = "cohort"
    seed: int = 0
    """>= 0: numpy's ``SeedSequence`` (every random stream derives from it) takes no negative seed."""
    run_dir: str = "runs/cohort"
    resume: str = "never"
    """``never`` (the run directory must not hold another run) or ``auto`` (continue
    from its latest complete checkpoint, if any)."""
    replicas: int = 1
    """R: data-parallel replicas per member (DDP). World size is K × R."""
    members: list[MemberConfig] = field(default_factory=lambda: [MemberConfig(), MemberConfig()])
    policies: str = "members"
    """``members``: each member's own ``policy``; ``auto``: distinct policies spread from the
    mildest to the strongest (Diff-DML's differentiated training strategy)."""
    views: str = "auto"
    """Whose random draws each member's augmentations use. ``shared``: one augmented view per
    sample for the whole cohort (the DML papers' code feeds every network the same batch);
    ``own``: each member draws its own (Diff-DML's DTS); ``auto``: members with the same
    policy and strength share one view, members with different ones draw their own."""
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    batch_ensemble: BatchEnsembleConfig = field(default_factory=BatchEnsembleConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def num_members(self) -> int:
        """K: the members, one per rank (or R replica ranks); ``member_names``: the networks they predict with."""
        return len(self.members)

    @property
    def member_names(self) -> list[str]:
        """Every network the cohort predicts with, in the order of its predictions ``[K·n, N, C]``:
        a plain member's name, or ``<name>.<j>`` for internal member j of a BatchEnsemble member."""
        return [
            member.name if member.batch_ensemble == 1 else f"{member.name}.{j}"
            for member in self.members
            for j in range(member.batch_ensemble)
        ]

    @property
    def ensemble_sizes(self) -> list[int]:
        """Each member's internal members (``members.<i>.batch_ensemble``; 1 for a plain network)."""
        return [m.batch_ensemble for m in self.members]

    def member_rows(self, member: int) -> range:
        """The rows of member ``member``'s internal members among ``member_names``."""
        start = sum(self.ensemble_sizes[:member])
        return range(start, start + self.members[member].batch_ensemble)

    def owner(self, row: int) -> int:
        """The member (rank's member) whose network is row ``row`` of ``member_names``."""
        return next(m for m in range(self.num_members) if row in self.member_rows(m))

    def term_weight(self, member: int, name: str) -> float:
        """The weight of term ``name`` in member ``member``'s objective (its override, else the cohort's)."""
        return float(self.members[member].loss.get(name, self.loss.terms()[name].weight))

    def enabled_terms(self, member: int) -> dict[str, float]:
        """The terms of member ``member``'s objective and their weights, in summation order."""
        return {
            name: self.term_weight(member, name)
            for name, term in self.loss.terms().items()
            if term.enabled(self.term_weight(member, name))
        }

    def needs(self, member: int) -> set[str]:
        """What member ``member``'s objective reads besides its own logits (``TermConfig.NEEDS``)."""
        terms = self.loss.terms()
        return {need for name in self.enabled_terms(member) for need in terms[name].NEEDS}

    @property
    def cohort_needs(self) -> set[str]:
        """Every input some member's objective reads; each selects a provider of the training
        step for the whole cohort (``cohort.inputs``)."""
        return set().union(*(self.needs(m) for m in range(self.num_members)))

    @property
    def exchanges_logits(self) -> bool:
        """Whether the members all-gather their logits: some member's objective reads its peers'.
        Every member then takes part, whether or not its own objective reads them."""
        return "peers" in self.cohort_needs

    @property
    def pairs_partners(self) -> bool:
        """Whether training batches carry CS-KD's same-class partners (some member reads them)."""
        return "partners" in self.cohort_needs

    @property
    def distils(self) -> bool:
        """Whether some member's objective reads teachers (``loss.distill``)."""
        return "teachers" in self.cohort_needs

    @property
    def trains_on_unlabelled(self) -> bool:
        """Whether the training order holds the unlabelled samples of a semi-supervised run:
        only when members read each other's logits (mimicry needs no label). Otherwise no
        term reads an unlabelled sample, and the order holds the labelled ones alone, as the
        DML paper's independent baseline trains on them."""
        return self.exchanges_logits

    @property
    def independent(self) -> bool:
        """Members train without reading each other (the baseline a DEE reference must be):
        the one definition used by training, ``cohort report`` and ``cohort dee``."""
        return not self.exchanges_logits

    @property
    def world_size(self) -> int:
        return self.num_members * self.replicas

    def view_stream(self, member: int) -> int:
        """The member whose augmentation draws member ``member`` uses (``views``): itself
        (``own``), member 0 (``shared``), or the first member with its policy and strength
        (``auto``). Members with one stream and one policy see bit-identical images."""
        if self.views == "own":
            return member
        if self.views == "shared":
            return 0
        mine = (self.members[member].policy, self.members[member].strength)
        return next(i for i, m in enumerate(self.members) if (m.policy, m.strength) == mine)

    def member_optim(self, index: int) -> OptimConfig:
        """The cohort's optimiser settings with member ``index``'s overrides applied."""
        merged = {**dataclasses.asdict(self.optim), **self.members[index].optim}
        return build(OptimConfig, merged, f"members.{index}.optim", ConfigError)

    def resolve(self) -> None:
        """Fill in what the config derives: each unnamed member's name ``m{index}`` and, with
        ``policies: auto``, every member's policy. Checks nothing: a cohort that ``auto_policies``
        cannot serve keeps its members' own policies, and ``validate`` reports it in its turn."""
        for i, member in enumerate(self.members):
            if not member.name:
                member.name = f"m{i}"
        if self.policies == "auto":
            try:
                policies = auto_policies(self.num_members)
            except ValueError:
                return
            for member, policy in zip(self.members, policies):
                member.policy = policy

    def validate(self) -> None:
        """Check everything that can be checked without touching data or processes, in a tree
        that ``resolve`` has filled in; changes nothing."""
        refuse_nonfinite(self, "")
        if not self.members:
            raise ConfigError("members is empty: a cohort needs at least one member")
        if self.replicas < 1:
            raise ConfigError(f"replicas must be >= 1, got {self.replicas}")
        if not re.fullmatch(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]*", self.name):
            # A folder name too (cohort study's OUT/<name>/, SLURM's job name): no path of its own.
            raise ConfigError(
                f"name {self.name!r} must be a plain folder name (letters, digits, . _ + -, not starting with .); "
                f"rename it, e.g. name: {re.sub(r'[^A-Za-z0-9._+-]+', '-', self.name).strip('.-') or 'cohort'}"
            )
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0 (numpy's seeds are not negative), got {self.seed}")
        _choose("resume", self.resume, ("never", "auto"))
        _choose("policies", self.policies, ("members", "auto"))
        _choose("views", self.views, ("auto", "shared", "own"))
        if self.policies == "auto":
            try:
                auto_policies(self.num_members)
            except ValueError as error:
                raise ConfigError(str(error)) from None
        _choose("train.device", self.train.device, ("cpu", "cuda", "auto"))
        packing = self.train.members_per_gpu  # an int or a string: building the tree checked its type
        if packing != "auto" and (isinstance(packing, str) or packing < 1 or self.num_members % packing):
            raise ConfigError(
                f"train.members_per_gpu must be auto or a divisor of the K={self.num_members} members "
                f"(a GPU holds the same replica of n members), got {packing!r}"
            )
        self.optim.validate("optim")  # before the members', which merge it with their overrides
        names = set()
        for i, member in enumerate(self.members):
            if member.name in names:
                raise ConfigError(f"members.{i}.name {member.name!r} is used twice; give each member its own name")
            names.add(member.name)
            if not is_known_architecture(member.arch):
                raise ConfigError(
                    f"members.{i}.arch {member.arch!r} is unknown; valid: {', '.join(ARCHITECTURE_NAMES)}, "
                    f"or tv.<torchvision model>"
                )
            _choose(f"members.{i}.policy", member.policy, ALL_POLICIES)
            if self.data.random_resized_crop and member.policy not in CROP_FREE_POLICIES:
                raise ConfigError(
                    f"members.{i}.policy {member.policy} crops again after data.random_resized_crop; "
                    f"use {' or '.join(CROP_FREE_POLICIES)} (ImageNet's recipe: flip)"
                )
            if not STRENGTH_RANGE[0] <= member.strength <= STRENGTH_RANGE[1]:
                raise ConfigError(
                    f"members.{i}.strength must be in [{STRENGTH_RANGE[0]}, {STRENGTH_RANGE[1]}], got {member.strength}"
                )
            self.member_optim(i).validate(f"members.{i}.optim")
            if member.batch_ensemble < 1:
                raise ConfigError(
                    f"members.{i}.batch_ensemble must be >= 1 (1: a plain network, n: n internal members), "
                    f"got {member.batch_ensemble}"
                )
        self.batch_ensemble.validate()
        self.schedule.validate()
        for name, term in self.loss.terms().items():
            term.validate(f"loss.{name}")
        for i, member in enumerate(self.members):
            for name, weight in member.loss.items():
                if name not in self.loss.terms():
                    raise ConfigError(
                        f"members.{i}.loss.{name} is not a term of the objective; valid: {', '.join(self.loss.terms())}"
                    )
                if not isinstance(weight, (int, float)) or isinstance(weight, bool) or not 0 <= weight < math.inf:
                    raise ConfigError(f"members.{i}.loss.{name} must be a weight >= 0, got {weight!r}")
        for m in range(self.num_members):
            terms = self.enabled_terms(m)
            if (
                self.loss.diversity.kind == "margin"
                and "diversity" in terms
                and terms["diversity"] <= terms.get("mimicry", 0.0)
            ):
                beta, lam = terms["diversity"], terms["mimicry"]
                raise ConfigError(
                    f"member {m}: loss.diversity.weight β={beta:g} must exceed loss.mimicry.weight λ={lam:g} with "
                    f"kind margin: inside the margin the two add to (λ − β)·T²·KL, so β <= λ never pushes members "
                    f"apart; e.g. loss.diversity.weight={2 * lam:g}"
                )
            if not terms:
                raise ConfigError(f"member {m}'s objective has no term with weight > 0; set one, e.g. loss.ce.weight=1")
        self.validate_teacher()
        t, d = self.train, self.data
        d.resolution.validate()
        _choose("data.order", d.order, ("shuffle", "page_local"))
        _choose("data.normalize", d.normalize, INPUT_SCALINGS)
        if d.page_window < 1:
            raise ConfigError(f"data.page_window must be >= 1, got {d.page_window}")
        if d.order == "page_local" and self.pairs_partners:
            raise ConfigError(
                "data.order page_local cannot lay out CS-KD's partners (loss.cskd); use data.order=shuffle"
            )
        if d.labelled_seed < 0:
            raise ConfigError(
                f"data.labelled_seed must be >= 0 (numpy's seeds are not negative), got {d.labelled_seed}"
            )
        if not 0 < d.labelled_fraction <= 1:
            raise ConfigError(f"data.labelled_fraction must be in (0, 1], got {d.labelled_fraction}")
        if d.labelled_indices and d.labelled_fraction < 1:
            raise ConfigError(
                "data.labelled_indices and data.labelled_fraction both choose the labelled samples; "
                "set one of them (labelled_fraction=1 with a file)"
            )
        if d.semi_supervised and self.pairs_partners:
            raise ConfigError(
                "loss.cskd draws each anchor's partner from its class, which an unlabelled anchor "
                "does not reveal; train CS-KD with every label (data.labelled_fraction=1)"
            )
        if d.semi_supervised and self.exchanges_logits and self.loss.mimicry.target == "ensemble_min_logit":
            raise ConfigError(
                "loss.mimicry.target ensemble_min_logit reads every sample's label; with hidden "
                "labels use ensemble_mean (or data.labelled_fraction=1)"
            )
        if self.pairs_partners and d.batch_size < 2:
            raise ConfigError(
                f"data.batch_size {d.batch_size} is too small for loss.cskd: the B partners run their "
                f"own train-mode forward, whose BatchNorm needs B >= 2; set data.batch_size >= 2 "
                f"(each step then reads batch_size anchors and batch_size partners)"
            )
        if t.epochs < 1 or t.eval_every < 1 or t.checkpoint_every < 0 or t.max_steps_per_epoch < 0:
            raise ConfigError(
                "train: need epochs >= 1, eval_every >= 1, checkpoint_every >= 0, max_steps_per_epoch >= 0"
            )
        _choose("train.on_nonfinite", t.on_nonfinite, ("stop", "skip_step"))
        if t.checkpoint_every_steps < 0 or t.keep_last < 0:
            raise ConfigError("train: need checkpoint_every_steps >= 0 and keep_last >= 0")
        if d.batch_size < 1 or d.eval_batch_size < 1 or d.num_workers < 1:
            raise ConfigError("data: need batch_size >= 1, eval_batch_size >= 1, num_workers >= 1")
        parse_select_by(t.select_by)
        if not MIN_DIST_TIMEOUT_S <= t.dist_timeout_s < math.inf:
            raise ConfigError(
                f"train.dist_timeout_s must be a finite number of seconds >= {MIN_DIST_TIMEOUT_S:g}, "
                f"got {t.dist_timeout_s:g}; the default is 300"
            )
        if t.threads_per_rank < 0:
            raise ConfigError(
                f"train.threads_per_rank must be >= 0 (0: the cores shared among the ranks), got {t.threads_per_rank}"
            )
        if t.max_local_ranks < 0:
            raise ConfigError(f"train.max_local_ranks must be >= 0 (0: four ranks per core), got {t.max_local_ranks}")

    def validate_teacher(self) -> None:
        """The ``teacher:`` section against the objective and the views (its run directory is
        checked later, with the data: ``cohort.teacher_run.check_teacher``)."""
        teacher = self.teacher
        _choose("teacher.checkpoint", teacher.checkpoint, TEACHER_CHECKPOINTS)
        _choose("teacher.mapping", teacher.mapping, TEACHER_MAPPINGS)
        _choose("teacher.perturbation", teacher.perturbation, PERTURBATIONS)
        if not teacher.step_size > 0:
            raise ConfigError(f"teacher.step_size must be > 0, got {teacher.step_size}")
        if self.distils and not teacher.enabled:
            raise ConfigError("loss.distill needs teachers: set teacher.run_dir=<a finished cohort run directory>")
        if teacher.enabled and not self.distils:
            raise ConfigError(
                f"teacher.run_dir is set ({teacher.run_dir}) but no member distils it; set "
                f"loss.distill.weight=0.9 loss.ce.weight=0.1 (the paper's α), or remove teacher.run_dir"
            )
        streams = {self.view_stream(m) for m in range(self.num_members)}
        if teacher.perturbation in ("ods", "confods") and len(streams) > 1:
            raise ConfigError(
                f"teacher.perturbation {teacher.perturbation} perturbs one clean view along one teacher's gradient and "
                f"gives that x′ to every student, but views: {self.views} gives the members different views; "
                f"set views=shared"
            )


def parse_select_by(select_by: str) -> tuple[str, str] | None:
    """``val_<who>_<metric>`` → (who, metric); ``last`` → None. Raises ConfigError otherwise."""
    if select_by == "last":
        return None
    parts = select_by.split("_", 2)
    if len(parts) != 3 or parts[0] != "val" or parts[1] not in ("ensemble", "members") or parts[2] not in SELECTABLE:
        if select_by.startswith("test"):
            raise ConfigError(f"train.select_by {select_by!r} selects on test; select on val (e.g. val_ensemble_nll)")
        raise ConfigError(
            f"train.select_by {select_by!r} is not valid; use last or val_<ensemble|members>_<metric>, "
            f"metric one of: {', '.join(SELECTABLE)}"
        )
    return parts[1], parts[2]


def refuse_nonfinite(tree: Any, where: str) -> None:
    """Raise ConfigError naming the first float of dataclass ``tree`` (its lists included) that is
    nan or infinite: YAML's ``.nan`` and ``.inf``, and the strings ``nan`` and ``inf``, which a
    float field accepts as it accepts ``5e-4``. No setting of the schema means anything infinite."""
    for f in dataclasses.fields(tree):
        key, value = f"{where}.{f.name}" if where else f.name, getattr(tree, f.name)
        if dataclasses.is_dataclass(value):
            refuse_nonfinite(value, key)
            continue
        for index, item in enumerate(value) if isinstance(value, list) else [(None, value)]:
            culprit = key if index is None else f"{key}.{index}"
            if dataclasses.is_dataclass(item):
                refuse_nonfinite(item, culprit)
            elif isinstance(item, float) and not math.isfinite(item):
                raise ConfigError(f"{culprit} must be a finite number, got {item}; set a finite value")


def _choose(key: str, value: str, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ConfigError(f"{key} {value!r} is not valid; choose one of: {', '.join(valid)}")


# --- loading -------------------------------------------------------------------------


def load_config(path: str | Path, overrides: list[str] = ()) -> CohortConfig:
    """Read a YAML config, apply ``key=value`` overrides, build the tree, fill in what it derives
    (``CohortConfig.resolve``) and validate it."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} does not exist; pick one from configs/")
    raw = read_yaml(path, ConfigError, empty=EMPTY_CONFIG_FIX)
    for override in overrides:
        apply_override(raw, override)
    refuse_moved_keys(raw)
    config = build(CohortConfig, raw, "", ConfigError)
    config.resolve()
    config.validate()
    return config


EMPTY_CONFIG_FIX = "write the run's keys into it (start from a copy of configs/demo.yaml), or {} to train every default"
"""What an empty config file's error suggests: a file with no keys is more often a mistake than a wish for defaults."""


MOVED_KEYS = {
    "mimicry": "loss.mimicry",
    "diversity": "loss.diversity",
    "train.label_smoothing": "loss.ce.label_smoothing",
}
"""Keys of config format 1 (before the objective's terms were grouped under ``loss:``)."""


def moved_key(raw: dict) -> str | None:
    """The first key of ``MOVED_KEYS`` that a raw config tree still uses, if any."""
    for old in MOVED_KEYS:
        section, _, key = old.partition(".")
        node = raw.get(section)
        if (isinstance(node, dict) and key in node) if key else node is not None:
            return old
    return None


def refuse_moved_keys(raw: dict) -> None:
    """A format-1 key is an error that says where it lives now (not silently translated:
    one way to write a config, and a format-1 run directory is not resumed as if it were new)."""
    old = moved_key(raw)
    if old is not None:
        new = MOVED_KEYS[old]
        example = (f"{new}.weight", f"{old}.weight") if "." not in old else (new, old)
        raise ConfigError(
            f"{old} is now {new} (config format 2 groups the objective's terms under loss:); "
            f"write {example[0]}=... instead of {example[1]}=..."
        )


def apply_override(raw: dict, override: str) -> None:
    """Set ``a.b.c=value`` in the raw tree (``cohort.typed_tree.apply_override``), raising ConfigError."""
    typed_tree.apply_override(raw, override, ConfigError)


RUN_NEUTRAL_KEYS = ("resume", "run_dir")
"""Keys that do not change what a run computes: a run may be resumed, or its folder moved."""


def same_run_config(a: dict, b: dict) -> bool:
    """Whether two dumped configs describe the same run (``RUN_NEUTRAL_KEYS`` aside)."""
    a, b = copy.deepcopy(a), copy.deepcopy(b)
    for d in (a, b):
        for key in RUN_NEUTRAL_KEYS:
            d.pop(key, None)
    return a == b
