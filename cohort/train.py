"""Train a cohort: one member per rank (R replica ranks with DDP), learning from each other
through a logit exchange.

    torchrun --nproc-per-node K*R -m cohort.train CONFIG [key=value ...]
    cohort train CONFIG [key=value ...]       # the same; starts the K*R processes for you

Each step, on every rank (``Trainer.train_step``): the loader's ``Batch`` → model input →
forward → gather what the objective needs (the peers' detached logits, over the member
group) → the objective's named terms (``cohort.objective``) → backward (DDP all-reduces
over the replica group) → optimiser step. Every ``eval_every`` epochs the cohort predicts
val and test, and rank 0 writes metrics; at the end, predictions and a table. How a rank's
process starts and ends (exit codes, one-line errors, lost peers) is ``cohort.worker``.
"""

from __future__ import annotations

import hashlib
import json
import random
import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from cohort.errors import CohortError
from cohort import checkpoint
from cohort.batch import IGNORE_LABEL, Batch, device_formats, model_input
from cohort.config import CohortConfig
from cohort.data.loader import MemberLoader
from cohort.evaluate import cohort_logits
from cohort.exchange import LogitExchange, NonFiniteError
from cohort.mesh import CohortMesh
from cohort.metrics import evaluate_cohort
from cohort.models import build_model
from cohort.objective import LossInputs, build_objective
from cohort.optim import build_optimizer, lr_factor, parameter_groups, set_lr
from cohort.run_dir import RunDir, RunDirError, write_json
from cohort.selection import Selection
from cohort.teacher_run import TeacherPlan, check_teacher_record, teacher_predictions
from cohort.teachers import Teachers, trace_fields

EPOCH_STATS = ("images_per_s", "seconds", "lr", "data_seconds", "exchange_seconds", "skipped_steps")
"""Per-epoch training figures logged with each member's metrics, beside the means of its
objective's terms (seconds: wall clock of the epoch's steps; data_seconds: blocked on the
loader; exchange_seconds: in the all-gather; skipped_steps: steps skipped for a non-finite
loss, train.on_nonfinite=skip_step)."""

CHECKPOINT_FORMAT = 2
"""Version of a checkpoint part's contents (2: epoch sums by term name)."""


class TrainingError(CohortError, RuntimeError):
    """A problem one rank found while training (a label outside the classes); the message names the fix."""

    shared = False


class Stopped(Exception):
    """Training stopped on a signal after saving a checkpoint every rank agreed on."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.signum = signum


STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2)
"""Each asks for an agreed checkpoint and a clean stop: SIGTERM from SLURM's preemption,
``scontrol requeue`` or ``scancel``; SIGUSR1/SIGUSR2 as SLURM's ``--signal`` before a time
limit (SIGUSR2 is submitit's, which then requeues the job)."""


SIGNAL_CHECK_EVERY = 8
"""Steps between the collective checks for a stop signal: often enough to stop within
seconds, rare enough not to lock independent members into step with each other."""


def member_init_seed(seed: int, member: int) -> int:
    """The torch seed that initialises member ``member``'s weights (replicas share it)."""
    return int(np.random.SeedSequence([seed, member, 0x1A17]).generate_state(1)[0])


class Trainer:
    """Everything one rank holds: its member's model, optimiser, loaders and exchange."""

    def __init__(self, config: CohortConfig, mesh: CohortMesh, meta: dict, labelled: np.ndarray | None,
                 teacher_plan: TeacherPlan | None = None):
        """``meta`` is the data folder's ``meta.json``, as ``check_data`` returned it; ``labelled``
        the labelled training samples of a semi-supervised run, as ``check_labelled`` returned
        them (None: every label is known); ``teacher_plan`` the teachers to distil, as
        ``check_teacher`` returned it (None: no teachers)."""
        self.config, self.mesh, self.device = config, mesh, mesh.device
        self.member = mesh.member
        self.member_config = config.members[self.member]
        self.run = RunDir(config.run_dir)
        self.meta = meta
        self.num_classes = self.meta["num_classes"]

        torch.manual_seed(member_init_seed(config.seed, self.member))
        self.net = build_model(self.member_config.arch, self.num_classes, self.meta["mean"], self.meta["std"],
                               blurpool=self.member_config.blurpool).to(self.device)
        self.autocast, self.channels_last = device_formats(config.train.bf16, config.train.channels_last, self.device)
        if self.channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.model = self.net
        if config.replicas > 1:
            self.model = DistributedDataParallel(self.net, process_group=mesh.replica_group,
                                                 device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.optim_config = config.member_optim(self.member)
        self.optimizer = build_optimizer(parameter_groups(self.net, self.optim_config), self.optim_config)

        common = dict(member=self.member, replica=mesh.replica, replicas=config.replicas, seed=config.seed,
                      num_workers=config.data.num_workers, device=self.device, os_cache=config.data.os_cache)
        self.train_loader = MemberLoader(config.data.root, "train", policy=self.member_config.policy,
                                         strength=self.member_config.strength, batch_size=config.data.batch_size,
                                         train=True, view_stream=config.view_stream(self.member),
                                         labelled=labelled, labelled_only=not config.trains_on_unlabelled,
                                         partners=config.pairs_partners,
                                         random_resized_crop=config.data.random_resized_crop,
                                         resolution=config.data.resolution,
                                         page_window=config.data.page_window if config.data.order == "page_local" else 0,
                                         **common)
        self.eval_loaders = {split: MemberLoader(config.data.root, split, policy="none", batch_size=config.data.eval_batch_size,
                                                 train=False, resolution=config.data.resolution, **common)
                             for split in ("val", "test")}
        self.steps_per_epoch = len(self.train_loader)
        if config.train.max_steps_per_epoch:
            self.steps_per_epoch = min(self.steps_per_epoch, config.train.max_steps_per_epoch)
        self.skip_nonfinite = config.train.on_nonfinite == "skip_step"
        self.objective = build_objective(config, self.member)
        # Every member joins the all-gather when any member's objective reads its peers.
        self.exchange = (LogitExchange(mesh.member_group, self.member, mesh.members, not self.skip_nonfinite,
                                       transport=mesh.member_device)
                         if config.exchanges_logits else None)
        self.teacher_plan = teacher_plan
        self.teachers = (Teachers(config, teacher_plan, self.member, meta, self.device, self.autocast, self.channels_last)
                         if teacher_plan is not None else None)
        self.drawn: dict = {}  # what the teachers' perturbation drew at this step (for the trace)
        self.start_epoch, self.start_batch, self.step = 0, 0, 0
        self.resumed_sums: dict | None = None  # a mid-epoch checkpoint's {"terms", "skipped_steps"}
        self.stop_signal = 0  # which of STOP_SIGNALS arrived first on this rank (0: none yet)
        self.trace_file = None
        self.tensorboard = None  # rank 0's SummaryWriter, when tensorboard is installed
        self.exchange_seconds = 0.0
        self.selection = Selection(config.train.select_by, self.run.path)

    # --- set-up ---------------------------------------------------------------------------

    def prepare_run_dir(self) -> None:
        """Check the run directory on every rank, then rank 0 creates it; resume if asked."""
        self.run.check(self.config)
        if self.teacher_plan is not None:
            check_teacher_record(self.run.path, self.teacher_plan)
        self.mesh.barrier()
        if self.mesh.is_main:
            self.run.create(self.config)
            if self.teacher_plan is not None:
                write_json(self.run.path / "teacher.json", self.teacher_plan.record())
        self.mesh.barrier()
        latest = checkpoint.latest_complete(self.run.path) if self.config.resume == "auto" else None
        if latest is not None:
            self.load(latest)
        elif self.mesh.is_main:
            self.run.drop_metrics_after(-1)  # a crash before the first checkpoint: start over
        if self.mesh.is_main:
            self.tensorboard = open_tensorboard(self.run.path, self.start_epoch if latest is not None else None)
        if self.config.train.trace:
            self.run.trace.mkdir(exist_ok=True)
            name = f"member{self.member}-replica{self.mesh.replica}.jsonl"
            # Line-buffered: a trace is read while the run goes on (the fault-tolerance tests do).
            self.trace_file = open(self.run.trace / name, "a" if latest is not None else "w", buffering=1)

    def load(self, folder: Path) -> None:
        problem = ""
        try:
            state = checkpoint.load_part(folder, self.member, self.device)
            part = folder / f"member-{self.member}.pt"
            if state.get("format") != CHECKPOINT_FORMAT:
                problem = (f"{part} is a checkpoint of format {state.get('format', 1)}, written by an earlier cohort; "
                           f"this version reads format {CHECKPOINT_FORMAT}: finish that run with the version that "
                           f"started it, or choose another run_dir=")
            elif state.get("arch") != self.member_config.arch:
                problem = (f"{part} holds a {state.get('arch')}, but member {self.member} "
                           f"is a {self.member_config.arch}; delete {folder} to resume from an earlier checkpoint, "
                           f"or choose another run_dir=")
        except RunDirError as error:
            problem = str(error)
        # Each rank reads only its own member's part. Agree before anything changes, so that
        # every rank stops with the same (shared) error instead of one failing while its
        # peers start training and die in the exchange with errors of their own.
        problems = [""] * self.mesh.world_size
        dist.all_gather_object(problems, problem)
        if any(problems):
            raise RunDirError(next(p for p in problems if p))
        self.load_state_dict(state)
        if self.mesh.is_main:
            # Evaluations after the checkpoint's position are redone, so their rows go.
            self.run.drop_metrics_after(self.start_epoch - 1)
            self.selection.restore(self.start_epoch - 1)
            print(f"cohort: resuming {self.run.path} at epoch {self.start_epoch} batch {self.start_batch} "
                  f"(step {self.step}) from {folder.name}", flush=True)

    def sync_buffers(self) -> None:
        """Give every replica replica 0's BatchNorm statistics.

        DDP broadcasts buffers only at the start of a forward pass, so after the last step
        of an epoch each replica holds the running statistics of its own batches.
        """
        if self.config.replicas > 1:
            for buffer in self.net.buffers():
                dist.broadcast(buffer, group=self.mesh.replica_group, group_src=0)

    def save(self, position: tuple[int, int], epoch_sums: dict) -> None:
        """A step checkpoint to continue from ``position`` = (epoch, next batch)."""
        self.save_to(checkpoint.checkpoint_dir(self.run.path, self.step), position, epoch_sums)
        if self.mesh.is_main:
            checkpoint.prune(self.run.path, self.config.train.keep_last)

    def save_to(self, folder: Path, position: tuple[int, int], epoch_sums: dict) -> None:
        """Every member writes its part (``state_dict``), then rank 0 marks the folder complete."""
        self.sync_buffers()
        if self.mesh.is_main:
            checkpoint.unmark(folder)  # "best" is rewritten in place: incomplete until re-marked
        self.mesh.barrier()
        if self.mesh.replica == 0:
            checkpoint.save_part(folder, self.member, self.state_dict(position, epoch_sums))
        self.mesh.barrier()
        if self.mesh.is_main:
            checkpoint.mark_complete(folder, self.mesh.members,
                                     {"epoch": position[0], "batch": position[1], "step": self.step})

    def state_dict(self, position: tuple[int, int], epoch_sums: dict) -> dict:
        """All this member needs to continue exactly from ``position`` = (epoch, next batch):
        weights, optimiser, RNG states and the epoch's running sums. The LR schedule, the data
        order and the augmentations are pure functions of the position: no state of their own."""
        rng = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate(),
               "cuda": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}
        return {"format": CHECKPOINT_FORMAT, "arch": self.member_config.arch, "member": self.member,
                "position": position, "step": self.step, "epoch_sums": epoch_sums, "model": self.net.state_dict(),
                "optimizer": self.optimizer.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        (self.start_epoch, self.start_batch), self.step = state["position"], state["step"]
        self.resumed_sums = state["epoch_sums"]
        # The checkpoint is loaded onto this rank's device; RNG states must be CPU byte tensors
        # again (on CUDA, set_rng_state raised "RNG state must be a torch.ByteTensor" without .cpu()).
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if self.device.type == "cuda":
            torch.cuda.set_rng_state(state["rng"]["cuda"].cpu(), self.device)
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])

    # --- training -------------------------------------------------------------------------

    def request_stop(self, signum, frame) -> None:
        """One of STOP_SIGNALS: finish the step, agree with the other ranks, checkpoint, stop."""
        if not self.stop_signal:
            self.stop_signal = signum

    def fit(self) -> None:
        self.prepare_run_dir()
        for signum in STOP_SIGNALS:
            signal.signal(signum, self.request_stop)
        epochs = self.config.train.epochs
        if self.start_epoch >= epochs and self.mesh.is_main:
            print(f"cohort: {self.run.path} already finished its {epochs} epochs", flush=True)
        results = None
        for epoch in range(self.start_epoch, epochs):
            start_batch = self.start_batch if epoch == self.start_epoch else 0
            stats = self.train_epoch(epoch, start_batch)
            last = epoch == epochs - 1
            if last or (epoch + 1) % self.config.train.eval_every == 0:
                results = self.evaluate(epoch, stats)
            if last or (self.config.train.checkpoint_every and (epoch + 1) % self.config.train.checkpoint_every == 0):
                self.save((epoch + 1, 0), {})
        if self.trace_file:
            teachers = {j: parameter_digest(net) for j, net in self.teachers.nets.items()} if self.teachers else {}
            self.trace_file.write(json.dumps({"final": True, "param_digest": parameter_digest(self.net),
                                              "teacher_digests": teachers}) + "\n")
            self.trace_file.close()
        if self.tensorboard is not None:
            self.tensorboard.close()
        if results is not None and self.mesh.is_main:
            print_summary(results, self.run.path, [m.name for m in self.config.members])

    def train_epoch(self, epoch: int, start_batch: int = 0) -> dict[str, float]:
        """Train batches ``start_batch..`` of ``epoch``; the loss means cover the whole epoch."""
        cfg = self.config
        self.model.train()
        # Running sums of the objective's terms by name (float64) and the steps skipped so far,
        # carried in mid-epoch checkpoints so a resumed epoch's means cover all of it.
        sums = {name: 0.0 for name in (*self.objective.names, "loss")}
        skipped = 0
        if start_batch and self.resumed_sums is not None:
            sums.update(self.resumed_sums["terms"])
            skipped = self.resumed_sums["skipped_steps"]
        bar = None
        # A bar only for a person watching: in logs, the per-epoch summary line says it all.
        if self.mesh.is_main and cfg.train.progress and sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.train.epochs}", leave=False,
                       dynamic_ncols=True, file=sys.stderr)
        started = time.perf_counter()
        steps, self.exchange_seconds, data_seconds = start_batch, 0.0, 0.0
        batches = self.train_loader.epoch(epoch, start_batch)
        while steps < self.steps_per_epoch:
            waited = time.perf_counter()
            batch = next(batches)
            data_seconds += time.perf_counter() - waited
            progress = epoch + steps / self.steps_per_epoch
            terms = self.train_step(batch, progress)
            if terms is None:
                skipped += 1
            else:
                for name, value in terms.items():
                    sums[name] += float(value)
            if self.trace_file:
                self.trace_file.write(json.dumps({"step": self.step, "epoch": epoch, "labels": batch.labels.tolist(),
                                                  "indices": batch.indices.tolist(), **self.drawn,
                                                  **{k: float(v) for k, v in (terms or {"skipped": 1}).items()}}) + "\n")
            self.step += 1
            steps += 1
            every = cfg.train.checkpoint_every_steps
            if every and self.step % every == 0:
                self.save((epoch, steps), {"terms": sums, "skipped_steps": skipped})
            if self.step % SIGNAL_CHECK_EVERY == 0 and (signum := self.agreed_stop_signal()):
                self.save((epoch, steps), {"terms": sums, "skipped_steps": skipped})
                batches.close()
                raise Stopped(f"stopped by {signal.Signals(signum).name} at step {self.step} after saving "
                              f"{self.run.path}/checkpoints/step-{self.step:09d}; continue with resume=auto", signum)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{float(terms['loss']):.3f}" if terms else "skipped",
                                img_s=f"{steps * batch.anchors * self.mesh.world_size / (time.perf_counter() - started):.0f}")
        batches.close()
        if bar is not None:
            bar.close()
        if self.trace_file:
            self.trace_file.flush()
        seconds = time.perf_counter() - started
        stats = {name: total / max(steps - skipped, 1) for name, total in sums.items()}
        stats.update(steps=steps, seconds=seconds,
                     images_per_s=(steps - start_batch) * cfg.data.batch_size / max(seconds, 1e-9),
                     lr=self.optimizer.param_groups[0]["lr"], data_seconds=data_seconds,
                     exchange_seconds=self.exchange_seconds, skipped_steps=skipped)
        return stats

    def max_over_ranks(self, value: int) -> int:
        """The largest of every rank's ``value`` (a collective: every rank must call it)."""
        reduced = torch.tensor([float(value)], device=self.mesh.world_device)
        dist.all_reduce(reduced, op=dist.ReduceOp.MAX)
        return int(reduced.item())

    def any_rank(self, flag: bool) -> bool:
        """Whether ``flag`` is set on any rank (a collective)."""
        return self.max_over_ranks(int(flag)) > 0

    def agreed_stop_signal(self) -> int:
        """The stop signal any rank received (the highest number if several), else 0; a collective.

        Every rank learns it, so all of them save at this step, even those SLURM did not signal."""
        return self.max_over_ranks(self.stop_signal)

    def train_step(self, batch: Batch, progress: float) -> dict[str, torch.Tensor] | None:
        """One optimiser step; the objective's terms by name, or None when the step was skipped."""
        self.check_labels(batch.labels)
        set_lr(self.optimizer, self.optim_config.lr * lr_factor(self.config.schedule, progress, self.config.train.epochs))
        # The forward pass updates BatchNorm's running statistics: a step that may be skipped
        # keeps a copy, so that a non-finite batch cannot poison every later evaluation.
        buffers = [b.clone() for b in self.net.buffers()] if self.skip_nonfinite else None
        images = model_input(batch.images, self.channels_last)
        with self.autocast:
            anchors = self.model(images[: batch.anchors])
        perturbed, teachers = self.teacher_logits(images[: batch.anchors])
        inputs = LossInputs(anchors.float(), batch.labels[: batch.anchors], progress,
                            peers=self.gather_peers(anchors, batch), partners=self.partner_logits(images, batch),
                            teachers=teachers, perturbed=perturbed)
        loss, terms = self.objective(inputs)
        if self.skips_nonfinite(loss):
            with torch.no_grad():
                for buffer, saved in zip(self.net.buffers(), buffers):
                    buffer.copy_(saved)
            return None
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return terms

    def partner_logits(self, images: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """The member's logits on the batch's partner rows, or None when the batch has none.

        As alinlab/cs-kd's ``train.py``: a second forward, after the anchors', in train mode
        (BatchNorm normalises the partners by their own batch statistics and updates its
        running ones) and without gradient."""
        if batch.anchors == len(images):
            return None
        with torch.no_grad(), self.autocast:
            return self.net(images[batch.anchors:]).float()

    def teacher_logits(self, clean: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(the member's logits on x′, the teachers' logits on x′), or (None, None) without
        teachers; the first is None when x′ = x (``teacher.perturbation: none``).

        As the official code (``train_student.py``): the student runs on the clean batch for
        its other terms and again, in train mode and with gradient, on x′ for distillation."""
        if self.teachers is None:
            return None, None
        x_prime, drawn = self.teachers.perturb(clean, self.step, self.mesh.replica)
        self.drawn = trace_fields(drawn) if self.trace_file else {}
        if x_prime is None:
            return None, self.teachers.logits(clean)
        with self.autocast:
            student = self.model(x_prime).float()
        return student, self.teachers.logits(x_prime)

    def check_labels(self, labels: torch.Tensor) -> None:
        known = labels[labels != IGNORE_LABEL]
        if len(known) and (int(known.max()) >= self.num_classes or int(known.min()) < 0):
            raise TrainingError(
                f"label {int(known.max())} in {self.train_loader.path} is outside 0..{self.num_classes - 1} "
                f"(num_classes in meta.json); rewrite the data folder with `cohort data`"
            )

    def gather_peers(self, logits: torch.Tensor, batch: Batch) -> torch.Tensor | None:
        """The other members' detached logits on this batch's anchors, or None when no
        member's objective reads them (then there is no exchange at all)."""
        if self.exchange is None:
            return None
        waited = time.perf_counter()
        peers = self.exchange.peers(self.exchange.gather(logits, batch.indices[: batch.anchors], self.step))
        self.exchange_seconds += time.perf_counter() - waited
        return peers

    def skips_nonfinite(self, loss: torch.Tensor) -> bool:
        """Whether this step is skipped for a non-finite loss (``train.on_nonfinite``)."""
        if self.skip_nonfinite:
            # Every rank skips together: replicas' DDP all-reduce and peers stay in step.
            return self.any_rank(not bool(torch.isfinite(loss)))
        if not torch.isfinite(loss):
            raise NonFiniteError(f"member {self.member} ({self.member_config.name}) has a non-finite loss at step {self.step}; "
                                 f"lower the learning rate or check the data")
        return False

    # --- evaluation -----------------------------------------------------------------------

    def predict(self, loader: MemberLoader) -> tuple[np.ndarray, np.ndarray]:
        """The cohort's logits ``[K, N, C]`` on a split, in file order, and the labels ``[N]``."""
        self.sync_buffers()
        self.net.eval()
        return cohort_logits(self.net, loader, self.mesh, self.config.train.flip_tta, self.autocast, self.channels_last)

    def member_stats(self, stats: dict[str, float]) -> list[dict[str, float]]:
        """Every member's epoch figures (its terms' means and ``EPOCH_STATS``), averaged over
        its replicas; a collective. By name: members' objectives may hold different terms."""
        everyone: list[dict] = [None] * self.mesh.world_size
        mine = {k: v for k, v in stats.items() if k != "steps"}
        dist.all_gather_object(everyone, mine)
        replicas = self.config.replicas
        groups = [everyone[m * replicas:(m + 1) * replicas] for m in range(self.mesh.members)]
        return [{k: float(np.mean([r[k] for r in group])) for k in group[0]} for group in groups]

    def evaluate(self, epoch: int, stats: dict[str, float]) -> dict[str, dict]:
        """Predict val and test; rank 0 computes every metric, logs rows, saves predictions."""
        per_member = self.member_stats(stats)
        logits, labels = {}, {}
        for split, loader in self.eval_loaders.items():
            logits[split], labels[split] = self.predict(loader)
        results = evaluate_cohort(logits, labels) if self.mesh.is_main else None
        improved = False
        if self.mesh.is_main:
            for split in logits:
                self.run.save_predictions(split, logits[split], labels[split])
            rows = []
            for split, table in results.items():
                for member, values in table.items():
                    row = {"epoch": epoch, "split": split, "member": member, **values}
                    if member != "ensemble":
                        row.update(per_member[member])
                    rows.append(row)
            self.run.append_metrics(rows)
            if self.tensorboard is not None:
                write_scalars(self.tensorboard, rows, [*self.objective.names, "loss", *EPOCH_STATS],
                              [m.name for m in self.config.members])
            if self.teacher_plan is not None and not (self.run.path / "teachers.json").is_file():
                self.evaluate_teachers(labels)
            improved = self.selection.offer(epoch, results["val"])
            if improved:
                for split in logits:
                    self.run.save_predictions(split, logits[split], labels[split], folder="best")
            val = results["val"]
            accs = " ".join(f"{self.config.members[m].name} {val[m]['acc']:.3f}" for m in range(self.mesh.members))
            loss = float(np.mean([row["loss"] for row in per_member]))
            speed = sum(row["images_per_s"] for row in per_member)
            print(f"epoch {epoch + 1:>3}/{self.config.train.epochs}  loss {loss:.4f}  "
                  f"val acc {accs}  ensemble {val['ensemble']['acc']:.3f}  nll {val['ensemble']['nll']:.4f}  "
                  f"ece {val['ensemble']['ece']:.4f}  disagreement {val['ensemble']['disagreement']:.3f}  "
                  f"{speed:.0f} img/s"
                  f"{'  *' if improved and self.selection.metric else ''}", flush=True)
        if self.selection.metric:
            flag = [improved]
            dist.broadcast_object_list(flag, src=0)
            if flag[0]:
                self.save_to(checkpoint.best_dir(self.run.path), (epoch + 1, 0), {})
        return results

    def evaluate_teachers(self, labels: dict[str, np.ndarray]) -> None:
        """``teachers.json``: the teachers' metrics on val and test, from the predictions their
        run saved for the distilled checkpoint (rank 0, once), for reports to compare with."""
        saved = teacher_predictions(self.teacher_plan)
        note = ""
        if saved is None:
            note = f"{self.teacher_plan.run_dir} saved no predictions for the distilled checkpoint"
        elif any(not np.array_equal(saved[split][1], labels[split]) for split in labels):
            note = f"{self.teacher_plan.run_dir}'s saved predictions have other labels than this data"
        if note:
            print(f"cohort: no teachers' row in the report: {note}", flush=True)
            return
        results = evaluate_cohort({s: saved[s][0] for s in labels}, {s: saved[s][1] for s in labels})
        write_json(self.run.path / "teachers.json", {**self.teacher_plan.record(), "results": {
            split: {str(member): row for member, row in table.items()} for split, table in results.items()}})


TENSORBOARD_METRICS = ("acc", "nll", "ece", "c_nll", "c_ece", "disagreement", "pairwise_kl")
"""The evaluation metrics written to TensorBoard, per split and member (and the ensemble)."""


def open_tensorboard(run_dir: Path, resumed_at: int | None):
    """A TensorBoard writer into ``RUN_DIR/tensorboard`` when tensorboard is installed, else None.
    A resumed run first drops the events from its resumed epoch on (they are redone)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(run_dir / "tensorboard"), purge_step=resumed_at)


def write_scalars(writer, rows: list[dict], training_keys: list[str], names: list[str]) -> None:
    """One evaluation's ``metrics.jsonl`` rows as scalars at step = epoch: ``<split>/<metric>/<member>``
    for ``TENSORBOARD_METRICS``, and ``train/<key>/<member>`` for the epoch's training figures
    (loss terms, lr, images/s, data and exchange seconds)."""
    for row in rows:
        who = names[row["member"]] if row["member"] != "ensemble" else "ensemble"
        for key in TENSORBOARD_METRICS:
            if key in row:
                writer.add_scalar(f"{row['split']}/{key}/{who}", row[key], row["epoch"])
        if row["split"] == "val" and row["member"] != "ensemble":
            for key in training_keys:
                if key in row:
                    writer.add_scalar(f"train/{key}/{who}", row[key], row["epoch"])
    writer.flush()


def parameter_digest(net: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer: equal digests mean bit-identical models."""
    digest = hashlib.sha256()
    for name, tensor in net.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def print_summary(results: dict[str, dict], run_dir: Path, names: list[str]) -> None:
    """The final table: accuracy and NLL of each member and the ensemble, val and test."""
    lines = ["", f"{'':<10} {'val acc':>8} {'val nll':>8} {'test acc':>9} {'test nll':>9} {'test ece':>9}"]
    for key in [*range(len(names)), "ensemble"]:
        label = names[key] if key != "ensemble" else "ensemble"
        v, t = results["val"][key], results["test"][key]
        lines.append(f"{label:<10} {v['acc']:>8.4f} {v['nll']:>8.4f} {t['acc']:>9.4f} {t['nll']:>9.4f} {t['ece']:>9.4f}")
    teachers = Path(run_dir) / "teachers.json"
    if teachers.is_file():
        saved = json.loads(teachers.read_text())["results"]
        v, t = saved["val"]["ensemble"], saved["test"]["ensemble"]
        lines.append(f"{'teachers':<10} {v['acc']:>8.4f} {v['nll']:>8.4f} {t['acc']:>9.4f} {t['nll']:>9.4f} {t['ece']:>9.4f}"
                     f"   (their ensemble, {teachers.name})")
    lines.append(f"\nrun directory: {run_dir}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    from cohort.worker import main

    sys.exit(main())
