"""The typed configuration tree of a cohort run: its root, ``CohortConfig``.

A run is described by one ``CohortConfig``: loaded from a YAML file in ``configs/``,
changed by ``key=value`` overrides with dotted paths (``optim.lr=0.05``,
``members.1.arch=resnet56``), validated before any process starts (``cohort.config.load``),
and dumped to ``RUN_DIR/config.yaml``. Unknown keys and wrong types are errors that name the key.

The root holds the sections (one module each: ``members``, ``data``, ``optim``, ``loss``,
``train``, ``track``), the cohort's derived meaning (who reads whom, which inputs the step needs, whose
augmentation draws a member uses), and ``validate``: each section checks itself, then every
rule that spans sections runs (``cohort.config.rules``). Reading, overriding, building and
dumping are the generic engine's (``cohort.config.tree``).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field

from cohort.config.checks import ConfigError, choose, refuse_nonfinite
from cohort.config.data import DataConfig
from cohort.config.exchange import ExchangeConfig
from cohort.config.loss import LossConfig
from cohort.config.members import BatchEnsembleConfig, MemberConfig, TeacherConfig
from cohort.config.names import auto_policies
from cohort.config.optim import OptimConfig, ScheduleConfig
from cohort.config.rules import RULES
from cohort.config.track import TrackConfig
from cohort.config.train import TrainConfig
from cohort.config.tree import build


@dataclass
class CohortConfig:
    """The root of the tree: one cohort run (each section's class documents its keys)."""

    name: str = "cohort"
    """The run's name: a plain folder name (``cohort study`` writes ``OUT/<name>/``, SLURM names its job so)."""
    seed: int = 0
    """>= 0: numpy's ``SeedSequence`` (every random stream derives from it) takes no negative seed."""
    run_dir: str = "runs/cohort"
    """The run directory: every file a run leaves (``cohort.run.directory.RunDir``)."""
    resume: str = "never"
    """``never`` (the run directory must not hold another run) or ``auto`` (continue
    from its latest complete checkpoint, if any)."""
    replicas: int = 1
    """R: data-parallel replicas per member (DDP). World size is K × R."""
    members: list[MemberConfig] = field(default_factory=lambda: [MemberConfig(), MemberConfig()])
    """The K members, one per rank (or R replica ranks), in order (``MemberConfig``)."""
    reported_members: list[int | str] = field(default_factory=list)
    """The members the run reports, by index or name (Diff-DML's code reports its primary alone):
    the final table, ``cohort report``, ``study`` and ``dee`` show them first, marked, beside every
    member and the ensemble; ``train.select_by: csmac`` reads them. Empty: no member stands out."""
    policies: str = "members"
    """``members``: each member's own ``policy``; ``auto``: distinct policies spread from the
    mildest to the strongest (the summary's reading of Diff-DML's DTS; its code differentiates
    the schedules instead: ``members.<i>.schedule``)."""
    views: str = "auto"
    """Whose random draws each member's augmentations use. ``shared``: one augmented view per
    sample for the whole cohort (the DML papers' code feeds every network the same batch);
    ``own``: each member draws its own (the summary's reading of Diff-DML's DTS); ``auto``: members with the same
    policy and strength share one view, members with different ones draw their own."""
    data: DataConfig = field(default_factory=DataConfig)
    """The data and its loaders (``DataConfig``)."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Every member's optimiser, unless ``members.<i>.optim`` overrides it (``OptimConfig``)."""
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    """The learning-rate schedule (``ScheduleConfig``)."""
    loss: LossConfig = field(default_factory=LossConfig)
    """The objective's named terms (``LossConfig``)."""
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    """A trained cohort to distil (``TeacherConfig``)."""
    batch_ensemble: BatchEnsembleConfig = field(default_factory=BatchEnsembleConfig)
    """How BatchEnsemble members are built and trained (``BatchEnsembleConfig``)."""
    exchange: ExchangeConfig = field(default_factory=ExchangeConfig)
    """How members read each other's logits: every step, every k-th, or stale copies (``ExchangeConfig``)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Epochs, cadences, devices and selection (``TrainConfig``)."""
    track: TrackConfig = field(default_factory=TrackConfig)
    """Experiment trackers that follow the run: Weights & Biases, MLflow (``TrackConfig``); run-neutral."""

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
        step for the whole cohort (``cohort.train.inputs``)."""
        return set().union(*(self.needs(m) for m in range(self.num_members)))

    @property
    def reads_peers(self) -> bool:
        """Whether some member's objective reads its peers' logits (``exchange:`` says how: an
        all-gather, or stale copies). Every member then takes part, whether or not its own
        objective reads them."""
        return "peers" in self.cohort_needs

    @property
    def exchanges_logits(self) -> bool:
        """Whether the members all-gather their logits (``exchange.mode: logits`` and some member
        reads its peers)."""
        return self.reads_peers and self.exchange.mode == "logits"

    @property
    def codistills(self) -> bool:
        """Whether members read their peers through stale copies of their networks
        (``exchange.mode: codistill``) instead of an all-gather of logits."""
        return self.reads_peers and self.exchange.mode == "codistill"

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
        return self.reads_peers

    @property
    def independent(self) -> bool:
        """Members train without reading each other (the baseline a DEE reference must be):
        the one definition used by training, ``cohort report`` and ``cohort dee``."""
        return not self.reads_peers

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

    def member_schedule(self, index: int) -> ScheduleConfig:
        """The cohort's learning-rate schedule with member ``index``'s overrides applied."""
        merged = {**dataclasses.asdict(self.schedule), **self.members[index].schedule}
        return build(ScheduleConfig, merged, f"members.{index}.schedule", ConfigError)

    def member_index(self, ref: int | str, key: str) -> int:
        """The index of the member that ``ref`` (an index or a name) names, at config key ``key``."""
        names = [m.name for m in self.members]
        if isinstance(ref, int):
            if 0 <= ref < len(names):
                return ref
            raise ConfigError(
                f"{key}: member {ref} does not exist; members are 0..{len(names) - 1} ({', '.join(names)})"
            )
        if ref in names:
            return names.index(ref)
        raise ConfigError(f"{key}: no member is named {ref!r}; members are {', '.join(names)} (or 0..{len(names) - 1})")

    def learns_from(self, member: int) -> list[int] | None:
        """The members whose logits member ``member``'s terms read (``members.<i>.learns_from``,
        names resolved to indices); None: every other member."""
        chosen = self.members[member].learns_from
        if chosen is None:
            return None
        return [self.member_index(ref, f"members.{member}.learns_from") for ref in chosen]

    def peer_positions(self, member: int) -> list[int] | None:
        """Where member ``member``'s chosen peers lie along the peer axis of what its terms read
        (``LossInputs.peers``: every other network in ``member_names``' order, its own rows
        removed; ``LogitExchange.peers``); None: every peer, the tensor as the exchange gives it."""
        chosen = self.learns_from(member)
        if chosen is None:
            return None
        others = [row for m in range(self.num_members) if m != member for row in self.member_rows(m)]
        wanted = {row for m in chosen for row in self.member_rows(m)}
        return [position for position, row in enumerate(others) if row in wanted]

    @property
    def reported(self) -> list[int]:
        """The indices of ``reported_members``, in the order given."""
        return [self.member_index(ref, "reported_members") for ref in self.reported_members]

    @property
    def reported_rows(self) -> list[int]:
        """The reported members' rows among ``member_names`` (a BatchEnsemble member's n rows), as
        metrics and predictions index them."""
        return [row for member in self.reported for row in self.member_rows(member)]

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
        that ``resolve`` has filled in; changes nothing. Each section checks its own keys, then
        each rule that spans sections (``cohort.config.rules.RULES``), in that order."""
        refuse_nonfinite(self, "")
        self.validate_own()
        self.optim.validate("optim")  # before the members', which merge it with their overrides
        for i, member in enumerate(self.members):
            member.validate(f"members.{i}")
            self.member_optim(i).validate(f"members.{i}.optim")
        self.batch_ensemble.validate()
        self.schedule.validate()
        for i, member in enumerate(self.members):
            if member.schedule:
                self.member_schedule(i).validate(f"members.{i}.schedule")
        self.loss.validate()
        self.teacher.validate()
        self.data.validate()
        self.exchange.validate()
        self.train.validate()
        self.track.validate()
        for rule in RULES:
            rule(self)

    def validate_own(self) -> None:
        """The root's own keys."""
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
        choose("resume", self.resume, ("never", "auto"))
        choose("policies", self.policies, ("members", "auto"))
        choose("views", self.views, ("auto", "shared", "own"))
