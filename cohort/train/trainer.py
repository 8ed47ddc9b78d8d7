"""The training loop of one rank: its member's model and optimiser, the step, the epoch, and
the collectives that keep the cohort in step.

Each step (``Trainer.train_step``): the loader's ``Batch`` → model input → forward → what
the objective needs (``cohort.train.inputs``: the peers' logits over the exchange, CS-KD's
partners, the teachers on x′) → the objective's named terms (``cohort.train.objective``) →
backward (DDP all-reduces over the replica group) → optimiser step. The rest lives in parts
that own their state and their cadence, each called in one line: evaluation
(``cohort.train.evaluator``), the checkpoint protocol (``cohort.train.checkpointer``), rank 0's
record of metrics, selection and console (``cohort.train.recorder``), stop signals
(``cohort.dist.stopping``), the epoch's figures (``cohort.train.epoch_meter``) and the trace
(``cohort.train.trace``). How a rank's process starts and ends is ``cohort.train.worker``; what
is checked before it starts, ``cohort.preflight``; the opening of its run directory,
``cohort.run.opening``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel

from cohort.data.batch import IGNORE_LABEL, Batch, device_formats, model_input
from cohort.data.loader import MemberLoader
from cohort.dist.mesh import CohortMesh
from cohort.dist.stopping import Startup, StopSignals, stopped
from cohort.errors import CohortError
from cohort.models import member_network
from cohort.preflight import RunPlan
from cohort.run.checkpoint_files import checkpoint_dir
from cohort.run.directory import RunDir
from cohort.train.checkpointer import Checkpointer, Position
from cohort.train.compiled import compiled
from cohort.train.epoch_meter import EpochMeter
from cohort.train.evaluator import Evaluator
from cohort.train.exchange import NonFiniteError
from cohort.train.inputs import MemberRuntime, StepView, TeacherInputs, build_providers
from cohort.train.objective import LossInputs, build_objective
from cohort.train.optim import build_optimizer, lr_factor, parameter_groups, set_lr
from cohort.train.recorder import Recorder
from cohort.train.trace import StepTrace


class TrainingError(CohortError, RuntimeError):
    """A problem one rank found while training (a label outside the classes); the message names the fix."""

    shared = False


def member_init_seed(seed: int, member: int) -> int:
    """The torch seed that initialises member ``member``'s weights (replicas share it)."""
    return int(np.random.SeedSequence([seed, member, 0x1A17]).generate_state(1)[0])


class Trainer:
    """Everything one rank holds: its member's model, optimiser, loaders and the parts around them."""

    def __init__(self, plan: RunPlan, mesh: CohortMesh, startup: Startup | None = None):
        """``startup``: the rank's start-up (``cohort.train.worker``), which its first step ends."""
        config = self.config = plan.config
        self.plan, self.mesh, self.device, self.member = plan, mesh, mesh.device, mesh.member
        self.member_config = config.members[self.member]
        self.run = RunDir(config.run_dir)
        self.num_classes = plan.meta["num_classes"]

        torch.manual_seed(member_init_seed(config.seed, self.member))
        self.net = member_network(config, self.member, plan.meta).to(self.device)
        self.autocast, self.channels_last = device_formats(config.train.bf16, config.train.channels_last, self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model = self.net
        if config.replicas > 1:
            self.model = DistributedDataParallel(
                self.net,
                process_group=mesh.replica_group,
                device_ids=[self.device.index] if self.device.type == "cuda" else None,
            )
        self.model = compiled(self.model, config.train.compile)  # ``self.net`` stays the plain module
        self.optim_config = config.member_optim(self.member)
        self.schedule = config.member_schedule(self.member)
        self.optimizer = build_optimizer(
            parameter_groups(self.net, self.optim_config, config.batch_ensemble), self.optim_config
        )

        self.train_loader = MemberLoader.for_training(config, self.member, mesh.replica, self.device, plan.labelled)
        self.steps_per_epoch = len(self.train_loader)
        if config.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.max_steps_per_epoch)
        self.skip_nonfinite = config.train.on_nonfinite == "skip_step"
        self.objective = build_objective(config, self.member)
        runtime = MemberRuntime(
            mesh=mesh,
            net=self.net,
            model=self.model,
            autocast=self.autocast,
            channels_last=self.channels_last,
            stop_on_nonfinite=not self.skip_nonfinite,
            traced=config.train.trace,
        )
        self.providers = build_providers(plan, runtime)
        self.checkpointer = Checkpointer(config, mesh, self.net, self.optimizer, self.providers)
        self.recorder = Recorder(config, self.run, mesh.is_main, self.objective.names, plan.teachers)
        self.evaluator = Evaluator(
            config, mesh, self.net, self.autocast, self.channels_last, self.checkpointer, self.recorder
        )
        self.stops = StopSignals(mesh, startup)
        self.trace: StepTrace | None = None
        self.start = Position()
        self.step = 0

    def resume(self) -> None:
        """With ``resume=auto``, continue from the newest complete checkpoint (every rank loads
        its member's part, ``Checkpointer.resume``); then rank 0's record and the trace start.
        The run directory is open by then (``cohort.run.opening.open_run``)."""
        resumed = self.checkpointer.resume() if self.config.resume == "auto" else None
        if resumed is not None:
            self.start = resumed[1]
            self.step = self.start.step
        self.mesh.main_does(lambda: self.recorder.start(resumed))
        self.evaluator.redo_lost(self.start)
        if self.config.train.trace:
            self.trace = StepTrace(self.run, self.member, self.mesh.replica, resumed is not None)

    # --- training -------------------------------------------------------------------------

    def fit(self) -> None:
        self.resume()
        self.stops.install()
        epochs = self.config.train.epochs
        if self.start.epoch >= epochs and self.mesh.is_main:
            print(f"cohort: {self.run.path} already finished its {epochs} epochs", flush=True)
        for epoch in range(self.start.epoch, epochs):
            stats = self.train_epoch(epoch, self.start.batch if epoch == self.start.epoch else 0)
            self.evaluator.after_epoch(epoch, stats, self.step)
            self.checkpointer.after_epoch(epoch, self.step, stats)
        if self.trace:
            teachers = next((p.teachers.nets for p in self.providers if isinstance(p, TeacherInputs)), {})
            self.trace.finish(self.net, teachers)
        self.recorder.finish()

    def train_epoch(self, epoch: int, start_batch: int = 0) -> dict[str, float]:
        """Train batches ``start_batch..`` of ``epoch``; the loss means cover the whole epoch."""
        self.model.train()
        resumed = self.start.epoch_sums or None  # a mid-epoch checkpoint's running sums
        meter = EpochMeter(
            self.config, self.mesh, self.objective.names, epoch, start_batch, self.steps_per_epoch, resumed
        )
        exchange_before = self.exchange_seconds()
        batches = self.train_loader.epoch(epoch, start_batch)
        for steps in range(start_batch, self.steps_per_epoch):
            batch = meter.next_batch(batches)
            terms = self.train_step(batch, progress=epoch + steps / self.steps_per_epoch)
            meter.add(terms, batch)
            if self.trace:
                self.trace.step(self.step, epoch, batch, self.drawn(), terms)
            self.step += 1
            signum = self.stops.agreed(self.step)
            self.checkpointer.after_step(Position(epoch, steps + 1, self.step, meter.state()), stopping=bool(signum))
            if signum:
                batches.close()
                raise stopped(signum, self.step, str(checkpoint_dir(self.run.path, self.step)))
        batches.close()
        if self.trace:
            self.trace.flush()
        return meter.close(
            lr=self.optimizer.param_groups[0]["lr"], exchange_seconds=self.exchange_seconds() - exchange_before
        )

    def train_step(self, batch: Batch, progress: float) -> dict[str, torch.Tensor] | None:
        """One optimiser step; the objective's terms by name, or None when the step was skipped."""
        self.check_labels(batch.labels)
        set_lr(self.optimizer, self.optim_config.lr * lr_factor(self.schedule, progress, self.config.train.epochs))
        # The forward pass updates BatchNorm's running statistics: a step that may be skipped
        # keeps a copy, so that a non-finite batch cannot poison every later evaluation.
        buffers = [b.clone() for b in self.net.buffers()] if self.skip_nonfinite else None
        images = model_input(batch.images, self.channels_last)
        with self.autocast:
            logits = self.model(images[: batch.anchors])  # [B, C]; a BatchEnsemble's [n, B, C]
        view = StepView(batch, images, logits, self.step)
        needed = {name: value for provider in self.providers for name, value in provider(view).items()}
        loss, terms = self.objective(LossInputs(logits.float(), batch.labels[: batch.anchors], progress, **needed))
        if self.skips_nonfinite(loss):
            with torch.no_grad():
                for buffer, saved in zip(self.net.buffers(), buffers):
                    buffer.copy_(saved)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        if loss is None:  # every term sat this step out (``Objective``): nothing to learn, no step
            if self.config.replicas > 1:
                (logits.sum() * 0.0).backward()  # DDP's replicas expect the reduction that follows a forward
            return terms
        loss.backward()
        self.optimizer.step()
        return terms

    def check_labels(self, labels: torch.Tensor) -> None:
        known = labels[labels != IGNORE_LABEL]
        if len(known) and (int(known.max()) >= self.num_classes or int(known.min()) < 0):
            raise TrainingError(
                f"label {int(known.max())} in {self.train_loader.path} is outside 0..{self.num_classes - 1} "
                f"(num_classes in meta.json); rewrite the data folder with `cohort data`"
            )

    def skips_nonfinite(self, loss: torch.Tensor | None) -> bool:
        """Whether this step is skipped for a non-finite loss (``train.on_nonfinite``; None: no loss, finite)."""
        finite = loss is None or bool(torch.isfinite(loss))
        if self.skip_nonfinite:
            # Every rank skips together: replicas' DDP all-reduce and peers stay in step.
            return self.mesh.any_rank(not finite)
        if not finite:
            raise NonFiniteError(
                f"member {self.member} ({self.member_config.name}) has a non-finite loss at step {self.step}; "
                f"lower the learning rate or check the data"
            )
        return False

    def drawn(self) -> dict:
        """What the step's inputs drew, for the trace."""
        return {key: value for provider in self.providers for key, value in provider.drawn().items()}

    def exchange_seconds(self) -> float:
        return sum(provider.waited_s for provider in self.providers)
