"""What a member's objective reads besides its own logits and labels, each from its provider.

A term declares what it needs (``TermConfig.NEEDS``): ``peers``, ``partners``, ``teachers``.
Every need of some member's objective selects one provider here, which the step runs after
the member's forward pass (``Trainer.train_step``); a provider owns the extra forwards and
collectives its input takes, and returns fields of ``cohort.train.objective.LossInputs``. A term
with a new kind of input is a provider here plus a term in ``cohort.train.objective``: the step
does not change (as mdistiller's distillers run their own teacher forward).

The needs are the cohort's, not one member's: the exchange is a collective every member
joins, and CS-KD's partner rows and the teachers' x′ are laid out for the whole cohort.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

import torch

from cohort.data.batch import Batch
from cohort.dist.mesh import CohortMesh
from cohort.models.batch_ensemble import as_members
from cohort.preflight import RunPlan
from cohort.train.codistill import PeerCopies
from cohort.train.exchange import LogitExchange
from cohort.train.teachers import Teachers, trace_fields


@dataclass
class StepView:
    """What a provider may read at one step."""

    batch: Batch
    images: torch.Tensor
    """The model input of every row of the batch (anchors, then partners)."""
    logits: torch.Tensor
    """The member's logits on the anchors, with gradients (autocast's dtype)."""
    step: int


@dataclass
class MemberRuntime:
    """The rank's objects a provider is built from, beside the config."""

    mesh: CohortMesh
    net: torch.nn.Module
    """The member's network."""
    model: torch.nn.Module
    """The network as trained (DDP over the replicas when R > 1)."""
    autocast: AbstractContextManager
    channels_last: bool
    stop_on_nonfinite: bool
    traced: bool
    """The step's draws are written to the trace (``train.trace``)."""


class Provider:
    """One kind of input, built from the run's plan and the rank's runtime objects;
    ``__call__`` returns ``LossInputs`` fields by name (None where the input is absent at that
    step: the terms that read it sit the step out, ``cohort.train.objective``)."""

    need = ""
    """The need it serves (``TermConfig.NEEDS``), and its key in a checkpoint part."""

    def __init__(self, plan: RunPlan, rt: MemberRuntime):
        pass

    waited_s = 0.0
    """Seconds this provider has spent waiting in collectives (the exchange's)."""

    def __call__(self, view: StepView) -> dict[str, torch.Tensor | None]:
        raise NotImplementedError

    def drawn(self) -> dict:
        """What the last step drew, as numbers for the trace (``cohort.train.trace``)."""
        return {}

    def state_dict(self) -> dict | None:
        """A state of its own that a checkpoint part carries (``cohort.train.checkpointer``); None: none."""
        return None

    def load_state_dict(self, state: dict | None, folder: Path) -> str:
        """Restore ``state_dict``'s state from checkpoint ``folder``; the problem, or ""."""
        return ""


class Peers(Provider):
    """``peers``: the other members' detached logits on the batch's anchors, ``exchange:``'s way.

    ``logits``: all-gathered over the member group with the sample indices that guard against
    desync (``cohort.train.exchange``), on every ``exchange.every``-th step (on the others the
    input is absent). ``codistill``: computed on this rank's own batch by stale copies of the
    peers' networks (``cohort.train.codistill``), refreshed every ``exchange.refresh_every``
    steps after the burn-in (absent before the first refresh). Either way the same ``[M−1, B, C]``
    (``LogitExchange.peers``), so every term that reads peers works unchanged; of them, the rows of
    the peers the member learns from (``members.<i>.learns_from``, ``chosen_peers``)."""

    need = "peers"

    def __init__(self, plan: RunPlan, rt: MemberRuntime):
        mesh = rt.mesh
        config = plan.config
        self.positions = config.peer_positions(mesh.member)
        self.cadence = config.exchange
        self.autocast = rt.autocast
        self.copies = PeerCopies(config, mesh, rt.net, plan.meta) if config.codistills else None
        self.exchange = LogitExchange(
            mesh.member_group,
            mesh.member,
            mesh.members,
            rt.stop_on_nonfinite,
            transport=mesh.member_device,
            sizes=config.ensemble_sizes,
            siblings_are_peers=config.batch_ensemble.siblings_are_peers,
        )

    def __call__(self, view: StepView) -> dict:
        if self.copies is not None:
            return {"peers": chosen_peers(self.from_copies(view), self.positions)}
        if not self.cadence.gathers_at(view.step):
            return {"peers": None}
        waited = time.perf_counter()
        anchors = view.batch.indices[: view.batch.anchors]
        peers = self.exchange.peers(self.exchange.gather(view.logits, anchors, view.step))
        self.waited_s += time.perf_counter() - waited
        return {"peers": chosen_peers(peers, self.positions)}

    def from_copies(self, view: StepView) -> torch.Tensor | None:
        """Codistillation: refresh the copies where the cadence says (a collective, timed as the
        exchange's), then every network's logits in ``member_names``' order, this member's own
        detached, and this member's peers among them."""
        if self.cadence.refreshes_at(view.step):
            waited = time.perf_counter()
            self.copies.refresh(view.step)
            self.waited_s += time.perf_counter() - waited
        if not self.copies.ready:
            return None
        theirs = self.copies.logits(view.images[: view.batch.anchors], self.autocast)
        own = view.logits.detach().float()
        rows = [as_members(own if j == self.exchange.member else theirs[j]) for j in range(self.exchange.num_members)]
        return self.exchange.peers(torch.cat(rows))

    def state_dict(self) -> dict | None:
        return None if self.copies is None else self.copies.state_dict()

    def load_state_dict(self, state: dict | None, folder: Path) -> str:
        return "" if self.copies is None else self.copies.load_state_dict(state, folder)


def chosen_peers(peers: torch.Tensor | None, positions: list[int] | None) -> torch.Tensor | None:
    """The rows ``positions`` (``CohortConfig.peer_positions``) of the peer axis of ``peers``:
    ``[P, B, C]``, or a BatchEnsemble member's ``[n, P, B, C]``; ``positions`` None: every peer, the
    tensor itself (DML's cohort, bit for bit)."""
    if peers is None or positions is None:
        return peers
    return peers.index_select(-3, torch.tensor(positions, dtype=torch.long, device=peers.device))


class Partners(Provider):
    """``partners``: the member's logits on the batch's partner rows (CS-KD's same-class partners).

    As alinlab/cs-kd's ``train.py``: a second forward, after the anchors', in train mode
    (BatchNorm normalises the partners by their own batch statistics and updates its
    running ones) and without gradient."""

    need = "partners"

    def __init__(self, plan: RunPlan, rt: MemberRuntime):
        self.net, self.autocast = rt.net, rt.autocast

    def __call__(self, view: StepView) -> dict:
        if view.batch.anchors == len(view.images):
            return {"partners": None}
        with torch.no_grad(), self.autocast:
            return {"partners": self.net(view.images[view.batch.anchors :]).float()}


class TeacherInputs(Provider):
    """``teachers``: the frozen teachers' logits on x′, and the member's own logits on x′ with
    gradients (``perturbed``; None when x′ = x, ``teacher.perturbation: none``).

    As the official code (``train_student.py``): the student runs on the clean batch for its
    other terms and again, in train mode and with gradient, on x′ for distillation."""

    need = "teachers"

    def __init__(self, plan: RunPlan, rt: MemberRuntime):
        self.teachers = Teachers(
            plan.config, plan.teachers, rt.mesh.member, plan.meta, rt.mesh.device, rt.autocast, rt.channels_last
        )
        self.model, self.autocast, self.replica, self.traced = rt.model, rt.autocast, rt.mesh.replica, rt.traced
        self.internal_members = plan.config.members[rt.mesh.member].batch_ensemble
        self.last_drawn: dict = {}

    def __call__(self, view: StepView) -> dict:
        clean = view.images[: view.batch.anchors]
        x_prime, drawn = self.teachers.perturb(clean, view.step, self.replica)
        self.last_drawn = trace_fields(drawn) if self.traced else {}
        if x_prime is None:
            return {"teachers": self.per_student(self.teachers.logits(clean)), "perturbed": None}
        with self.autocast:
            student = self.model(x_prime).float()
        return {"teachers": self.per_student(self.teachers.logits(x_prime)), "perturbed": student}

    def per_student(self, teachers: torch.Tensor) -> torch.Tensor:
        """The teachers' logits ``[J, B, C]`` as the objective reads them: as they are for a plain
        member; for a BatchEnsemble of n, internal member j's ``[n, J_j, B, C]``: its own teacher
        (one_to_one: J = n, teacher j to member j) or all of them (mean)."""
        n = self.internal_members
        if n == 1:
            return teachers
        if self.teachers.plan.mapping == "one_to_one":
            return teachers.unsqueeze(1)
        return teachers.unsqueeze(0).expand(n, *teachers.shape)

    def drawn(self) -> dict:
        return self.last_drawn


PROVIDERS: dict[str, type[Provider]] = {"teachers": TeacherInputs, "peers": Peers, "partners": Partners}
"""The provider of each need, in the order the step runs them: the teachers' forward on x′, the
exchange, the partners' forward. The order is part of what a run computes (each train-mode
forward moves BatchNorm's running statistics), so it never depends on the config."""


def build_providers(plan: RunPlan, rt: MemberRuntime) -> list[Provider]:
    """The providers of the cohort's needs, in ``PROVIDERS``' order."""
    needs = plan.config.cohort_needs
    unknown = needs - set(PROVIDERS)
    if unknown:  # a term declared a need no provider serves: a programming error, not a user's
        raise RuntimeError(f"no provider for the objective's need(s) {sorted(unknown)}; register one in PROVIDERS")
    return [provider(plan, rt) for need, provider in PROVIDERS.items() if need in needs]
