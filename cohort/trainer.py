"""The training loop of one rank: its member's model and optimiser, the step, the epoch, and
the collectives that keep the cohort in step.

Each step (``Trainer.train_step``): the loader's ``Batch`` → model input → forward → what
the objective needs (``cohort.inputs``: the peers' logits over the exchange, CS-KD's
partners, the teachers on x′) → the objective's named terms (``cohort.objective``) →
backward (DDP all-reduces over the replica group) → optimiser step. Every ``eval_every``
epochs the cohort predicts val and test. The bookkeeping lives in parts the loop calls in one
line each: the checkpoint protocol (``cohort.checkpointer``), rank 0's record of metrics,
selection and console (``cohort.recorder``), stop signals (``cohort.stopping``), the epoch's
figures (``cohort.epoch_meter``) and the trace (``cohort.trace``). How a rank's process
starts and ends is ``cohort.worker``; what is checked before it starts, ``cohort.preflight``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cohort.batch import IGNORE_LABEL, Batch, device_formats, model_input
from cohort.checkpointer import Checkpointer, Position
from cohort.compiled import compiled
from cohort.data.loader import MemberLoader
from cohort.epoch_meter import EpochMeter
from cohort.errors import CohortError
from cohort.exchange import NonFiniteError
from cohort.inputs import MemberRuntime, StepView, TeacherInputs, build_providers
from cohort.mesh import CohortMesh
from cohort.models import build_model
from cohort.models.batch_ensemble import factor_init
from cohort.node import layout, layout_record
from cohort.objective import LossInputs, build_objective
from cohort.optim import build_optimizer, lr_factor, parameter_groups, set_lr
from cohort.predict import cohort_logits
from cohort.preflight import RunPlan
from cohort.recorder import Recorder
from cohort.run_dir import RunDir, write_json
from cohort.run_hold import RunHold
from cohort.shared_fs import check_shared_run_dir
from cohort.stopping import StopSignals, stopped
from cohort.trace import StepTrace


class TrainingError(CohortError, RuntimeError):
    """A problem one rank found while training (a label outside the classes); the message names the fix."""

    shared = False


def member_init_seed(seed: int, member: int) -> int:
    """The torch seed that initialises member ``member``'s weights (replicas share it)."""
    return int(np.random.SeedSequence([seed, member, 0x1A17]).generate_state(1)[0])


class Trainer:
    """Everything one rank holds: its member's model, optimiser, loaders and the parts around them."""

    def __init__(self, plan: RunPlan, mesh: CohortMesh):
        config = self.config = plan.config
        self.plan, self.mesh, self.device, self.member = plan, mesh, mesh.device, mesh.member
        self.member_config = config.members[self.member]
        self.run = RunDir(config.run_dir)
        self.num_classes = plan.meta["num_classes"]

        torch.manual_seed(member_init_seed(config.seed, self.member))
        self.net = build_model(
            self.member_config.arch,
            self.num_classes,
            *config.data.input_statistics(plan.meta),
            blurpool=self.member_config.blurpool,
            batch_ensemble=self.member_config.batch_ensemble,
            factor_init=factor_init(config.batch_ensemble),
        ).to(self.device)
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
        self.optimizer = build_optimizer(
            parameter_groups(self.net, self.optim_config, config.batch_ensemble), self.optim_config
        )

        self.train_loader = MemberLoader.for_training(config, self.member, mesh.replica, self.device, plan.labelled)
        root = self.train_loader.root
        self.eval_loaders = {
            split: MemberLoader.for_evaluation(
                config, root / f"{split}.beton", self.member, mesh.replica, config.replicas, self.device
            )
            for split in ("val", "test")
        }
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
        self.checkpointer = Checkpointer(
            self.run, mesh, self.member_config.arch, self.net, self.optimizer, config.train.keep_last
        )
        self.recorder = Recorder(config, self.run, mesh.is_main, self.objective.names, plan.teachers)
        self.stops = StopSignals(mesh)
        self.trace: StepTrace | None = None
        self.start = Position()
        self.step = 0
        self.hold: RunHold | None = None

    def prepare_run_dir(self) -> None:
        """Rank 0 takes the run directory's hold (``cohort.run_hold``) and creates it (every rank
        checked it before, its teachers' record too: ``cohort.preflight``); with ``resume=auto``
        every rank continues from the newest complete checkpoint. What rank 0 does, every rank
        waits for (``CohortMesh.main_does``): a held folder or a full disk stops them all with one line,
        and so does a folder that is not the same on every node (``cohort.shared_fs``)."""
        self.mesh.barrier()  # every rank has checked the folder (``plan_run``) before it changes
        self.mesh.main_does(self.take_hold)
        self.mesh.main_does(self.create_run_dir)
        check_shared_run_dir(self.run.path, self.mesh)  # before resuming from parts of every node
        resumed = self.checkpointer.resume() if self.config.resume == "auto" else None
        if resumed is not None:
            self.start = resumed[1]
            self.step = self.start.step
        self.mesh.main_does(lambda: self.recorder.start(resumed))
        if self.config.train.trace:
            self.trace = StepTrace(self.run, self.member, self.mesh.replica, resumed is not None)

    def take_hold(self) -> None:
        """Rank 0: take the run directory's hold, or join its launcher's (``cohort.run_hold``)."""
        self.hold = RunHold.acquire(self.run.path, "cohort train")

    def create_run_dir(self) -> None:
        """Rank 0: the run directory's folders, its config.yaml, its teachers' record, and which
        node each rank runs on (``nodes.json``, for ``cohort status``; said in the log too
        when the ranks span several nodes)."""
        self.run.create(self.config)
        if self.plan.teachers is not None:
            write_json(self.run.path / "teacher.json", self.plan.teachers.record())
        nodes, replicas = self.mesh.nodes, self.config.replicas
        write_json(self.run.nodes_file, layout_record(nodes, replicas))
        if len(set(nodes)) > 1:
            print(f"cohort: ranks on {len(set(nodes))} nodes: {layout(nodes, replicas)}", flush=True)

    def close(self) -> None:
        """Release what outlives a step: the run directory's hold."""
        if self.hold is not None:
            self.hold.release()
            self.hold = None

    # --- training -------------------------------------------------------------------------

    def fit(self) -> None:
        self.prepare_run_dir()
        self.stops.install()
        epochs, train = self.config.train.epochs, self.config.train
        if self.start.epoch >= epochs and self.mesh.is_main:
            print(f"cohort: {self.run.path} already finished its {epochs} epochs", flush=True)
        for epoch in range(self.start.epoch, epochs):
            stats = self.train_epoch(epoch, self.start.batch if epoch == self.start.epoch else 0)
            last = epoch == epochs - 1
            if last or (epoch + 1) % train.eval_every == 0:
                self.evaluate(epoch, stats)
            if last or (train.checkpoint_every and (epoch + 1) % train.checkpoint_every == 0):
                self.checkpointer.save(Position(epoch + 1, 0, self.step))
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
            every = self.config.train.checkpoint_every_steps
            if every and self.step % every == 0:
                self.checkpointer.save(Position(epoch, steps + 1, self.step, meter.state()))
            if signum := self.stops.agreed(self.step):
                self.checkpointer.save(Position(epoch, steps + 1, self.step, meter.state()))
                batches.close()
                raise stopped(signum, self.step, f"{self.run.path}/checkpoints/step-{self.step:09d}")
        batches.close()
        if self.trace:
            self.trace.flush()
        return meter.close(
            lr=self.optimizer.param_groups[0]["lr"], exchange_seconds=self.exchange_seconds() - exchange_before
        )

    def train_step(self, batch: Batch, progress: float) -> dict[str, torch.Tensor] | None:
        """One optimiser step; the objective's terms by name, or None when the step was skipped."""
        self.check_labels(batch.labels)
        set_lr(
            self.optimizer, self.optim_config.lr * lr_factor(self.config.schedule, progress, self.config.train.epochs)
        )
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

    def skips_nonfinite(self, loss: torch.Tensor) -> bool:
        """Whether this step is skipped for a non-finite loss (``train.on_nonfinite``)."""
        if self.skip_nonfinite:
            # Every rank skips together: replicas' DDP all-reduce and peers stay in step.
            return self.mesh.any_rank(not bool(torch.isfinite(loss)))
        if not torch.isfinite(loss):
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

    # --- evaluation -----------------------------------------------------------------------

    def evaluate(self, epoch: int, stats: dict[str, float]) -> None:
        """Predict val and test; rank 0 records them; every rank saves the best checkpoint when
        rank 0's selection says this epoch is the best so far."""
        per_member = self.member_stats(stats)
        logits, labels = {}, {}
        for split, loader in self.eval_loaders.items():
            logits[split], labels[split] = self.predict(loader)
        improved = self.mesh.main_does(lambda: self.recorder.record(epoch, per_member, logits, labels))
        if self.recorder.selects and improved:
            self.checkpointer.save_best(Position(epoch + 1, 0, self.step))

    def predict(self, loader: MemberLoader) -> tuple[np.ndarray, np.ndarray]:
        """The cohort's logits ``[M, N, C]`` on a split (M: ``config.member_names``), in file order;
        the labels ``[N]``."""
        self.checkpointer.sync_buffers()
        self.net.eval()
        config = self.config
        return cohort_logits(
            self.net, loader, self.mesh, config.train.flip_tta, self.autocast, self.channels_last, config.ensemble_sizes
        )

    def member_stats(self, stats: dict[str, float]) -> list[dict[str, float]]:
        """Every member's epoch figures (its terms' means and ``EPOCH_STATS``), averaged over
        its replicas; a collective. By name: members' objectives may hold different terms."""
        everyone: list[dict] = [None] * self.mesh.world_size
        mine = {k: v for k, v in stats.items() if k != "steps"}
        dist.all_gather_object(everyone, mine)
        replicas = self.config.replicas
        groups = [everyone[m * replicas : (m + 1) * replicas] for m in range(self.mesh.members)]
        return [{k: float(np.mean([r[k] for r in group])) for k in group[0]} for group in groups]
