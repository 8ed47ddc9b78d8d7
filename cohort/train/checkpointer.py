"""A member's part of the run's checkpoints: what it holds, when it is saved, and the protocol
every rank follows to save and load one (``cohort.run.checkpoint_files`` holds the files' layout).

When: after the last epoch and every ``train.checkpoint_every`` epochs (``after_epoch``), every
``train.checkpoint_every_steps`` steps and at a stop every rank agreed on (``after_step``).
Every member's replica 0 writes its part, after the replicas agreed on their BatchNorm
statistics; rank 0 marks the folder complete once every part exists. On resume each rank
reads only its own member's part, and the ranks agree before anything changes.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torch.distributed as dist

from cohort.config import CohortConfig
from cohort.dist.mesh import CohortMesh
from cohort.run import checkpoint_files
from cohort.run.directory import RunDir
from cohort.run.files import RunDirError

CHECKPOINT_FORMAT = 2
"""Version of a checkpoint part's contents (2: epoch sums by term name; a part may carry
``inputs``, the providers' states, absent from older parts of the same format)."""


class Stateful(Protocol):
    """A provider of the step's inputs that carries a state of its own in the checkpoint."""

    need: str

    def state_dict(self) -> dict | None: ...

    def load_state_dict(self, state: dict | None, folder: Path) -> str: ...


@dataclass
class Position:
    """Where training continues from: (epoch, next batch), the optimiser steps taken, and a
    mid-epoch checkpoint's running sums (``cohort.train.epoch_meter.EpochMeter.sums``)."""

    epoch: int = 0
    batch: int = 0
    step: int = 0
    epoch_sums: dict = field(default_factory=dict)
    ended_epoch: dict = field(default_factory=dict)
    """At an epoch's end (batch 0): this rank's figures of the epoch that ended
    (``EpochMeter.close``), for its evaluation done again after a resume (``Evaluator.redo_lost``)."""


class Checkpointer:
    """This rank's member (its network, optimiser and RNG states) in the run's checkpoints;
    built from the config and the rank's mesh, network and optimiser."""

    def __init__(
        self,
        config: CohortConfig,
        mesh: CohortMesh,
        net: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        inputs: Sequence[Stateful] = (),
    ):
        """``inputs``: the step's providers (``cohort.train.inputs``); those with a state of their
        own (codistillation's copies) carry it in the part, by their ``need``."""
        self.run, self.mesh, self.arch = RunDir(config.run_dir), mesh, config.members[mesh.member].arch
        self.net, self.optimizer, self.inputs = net, optimizer, list(inputs)
        train = config.train
        self.epochs, self.every_epochs, self.every_steps, self.keep_last = (
            train.epochs,
            train.checkpoint_every,
            train.checkpoint_every_steps,
            train.keep_last,
        )
        self.member, self.device = mesh.member, mesh.device

    # --- when ------------------------------------------------------------------------------

    def saves_after_epoch(self, epoch: int) -> bool:
        """Whether the end of ``epoch`` (counted from 0) is saved: the last one, and every
        ``train.checkpoint_every``-th."""
        return epoch == self.epochs - 1 or bool(self.every_epochs and (epoch + 1) % self.every_epochs == 0)

    def saves_after_step(self, step: int, stopping: bool) -> bool:
        """Whether the state after ``step`` steps is saved mid-epoch: every
        ``train.checkpoint_every_steps``-th step, and where the ranks agreed to stop."""
        return stopping or bool(self.every_steps and step % self.every_steps == 0)

    def after_epoch(self, epoch: int, step: int, stats: dict | None = None) -> None:
        """At the end of ``epoch`` (``stats``: this rank's figures of it, kept in the checkpoint):
        save where its cadence says (a collective, then)."""
        if self.saves_after_epoch(epoch):
            self.save(Position(epoch + 1, 0, step, ended_epoch=dict(stats or {})))

    def after_step(self, position: Position, stopping: bool = False) -> None:
        """After a step, mid-epoch (``position``: the next batch): save where its cadence says,
        or where every rank agreed to stop (``stopping``)."""
        if self.saves_after_step(position.step, stopping):
            self.save(position)

    # --- how -------------------------------------------------------------------------------

    def resume(self) -> tuple[Path, Position] | None:
        """Load the newest complete checkpoint, if any: (its folder, the position it holds)."""
        latest = checkpoint_files.latest_complete(self.run.path)
        return None if latest is None else (latest, self.load(latest))

    def load(self, folder: Path) -> Position:
        problem = ""
        try:
            state = checkpoint_files.load_part(folder, self.member, self.device)
            part = folder / f"member-{self.member}.pt"
            if state.get("format") != CHECKPOINT_FORMAT:
                problem = (
                    f"{part} is a checkpoint of format {state.get('format', 1)}, written by an earlier cohort; "
                    f"this version reads format {CHECKPOINT_FORMAT}: finish that run with the version that "
                    f"started it, or choose another run_dir="
                )
            elif state.get("arch") != self.arch:
                problem = (
                    f"{part} holds a {state.get('arch')}, but member {self.member} "
                    f"is a {self.arch}; delete {folder} to resume from an earlier checkpoint, "
                    f"or choose another run_dir="
                )
            saved = state.get("inputs", {})
            for provider in self.inputs:
                problem = problem or provider.load_state_dict(saved.get(provider.need), folder)
        except RunDirError as error:
            problem = str(error)
        # Each rank reads only its own member's part. Agree before anything changes, so that
        # every rank stops with the same (shared) error instead of one failing while its
        # peers start training and die in the exchange with errors of their own.
        if problem := self.mesh.first_problem(problem):
            raise RunDirError(problem)
        return self.load_state_dict(state)

    def sync_buffers(self) -> None:
        """Give every replica replica 0's BatchNorm statistics.

        DDP broadcasts buffers only at the start of a forward pass, so after the last step
        of an epoch each replica holds the running statistics of its own batches.
        """
        if self.mesh.replicas > 1:
            for buffer in self.net.buffers():
                dist.broadcast(buffer, group=self.mesh.replica_group, group_src=0)

    def save(self, position: Position) -> None:
        """A step checkpoint to continue from ``position``; older ones beyond ``keep_last`` go."""
        self.save_to(checkpoint_files.checkpoint_dir(self.run.path, position.step), position)
        if self.mesh.is_main:
            checkpoint_files.prune(self.run.path, self.keep_last)  # removes only, ignoring errors

    def save_best(self, position: Position) -> None:
        """``checkpoints/best``: the weights of the epoch ``train.select_by`` chose."""
        self.save_to(checkpoint_files.best_dir(self.run.path), position)

    def save_to(self, folder: Path, position: Position) -> None:
        """Every member writes its part (``state_dict``), then rank 0 marks the folder complete.

        A part that cannot be written (a full disk) stops every rank with its one-line error,
        printed once: the ranks agree on each part's outcome, and on the marker's, before any
        goes on (a rank failing alone would leave its peers to report it lost instead)."""
        self.sync_buffers()
        # "best" is rewritten in place: incomplete until re-marked.
        self.mesh.main_does(lambda: checkpoint_files.unmark(folder))
        problem = ""
        if self.mesh.replica == 0:
            try:
                checkpoint_files.save_part(folder, self.member, self.state_dict(position))
            except RunDirError as error:
                problem = str(error)
        if problem := self.mesh.first_problem(problem):
            raise RunDirError(problem)
        info = {"epoch": position.epoch, "batch": position.batch, "step": position.step}
        self.mesh.main_does(lambda: checkpoint_files.mark_complete(folder, self.mesh.members, info))

    def state_dict(self, position: Position) -> dict:
        """All this member needs to continue exactly from ``position``: weights, optimiser, RNG
        states and the epoch's running sums. The LR schedule, the data order and the
        augmentations are pure functions of the position: no state of their own."""
        rng = {
            "torch": torch.get_rng_state(),
            "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }
        return {
            "format": CHECKPOINT_FORMAT,
            "arch": self.arch,
            "member": self.member,
            "position": (position.epoch, position.batch),
            "step": position.step,
            "epoch_sums": position.epoch_sums,
            "ended_epoch": position.ended_epoch,
            "model": self.net.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "rng": rng,
            "inputs": {p.need: state for p in self.inputs if (state := p.state_dict()) is not None},
        }

    def load_state_dict(self, state: dict) -> Position:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        # The checkpoint is loaded onto this rank's device; RNG states must be CPU byte tensors
        # again (on CUDA, set_rng_state raised "RNG state must be a torch.ByteTensor" without .cpu()).
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        (epoch, batch), step = state["position"], state["step"]
        # Parts written before the ended epoch's figures were kept lack them: its evaluation, if
        # done again, then logs no training figures.
        return Position(epoch, batch, step, state["epoch_sums"], state.get("ended_epoch", {}))
