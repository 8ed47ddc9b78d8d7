"""Evaluation during training: when it runs and its collectives.

Every ``train.eval_every`` epochs and after the last one, every rank predicts its replica's
shard of val and test with its member (``cohort.evaluate.predict.cohort_logits``), the epoch's
training figures of every member are gathered, rank 0 records them all (``cohort.train.recorder``:
metrics, predictions, selection), and every rank saves the best checkpoint when rank 0's
selection says this epoch is the best so far.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from cohort.config import CohortConfig
from cohort.data.loader import MemberLoader
from cohort.dist.mesh import CohortMesh
from cohort.evaluate.predict import cohort_logits
from cohort.train.checkpointer import Checkpointer, Position
from cohort.train.recorder import Recorder

SPLITS = ("val", "test")
"""What every evaluation predicts: val (selection, temperatures) and test (reported, never chosen on)."""


class Evaluator:
    """This rank's share of the cohort's evaluations; built from the config and the rank's mesh,
    network and formats, with the checkpointer and recorder its outcome goes to."""

    def __init__(
        self,
        config: CohortConfig,
        mesh: CohortMesh,
        net: torch.nn.Module,
        autocast: AbstractContextManager,
        channels_last: bool,
        checkpointer: Checkpointer,
        recorder: Recorder,
    ):
        self.config, self.mesh, self.net = config, mesh, net
        self.autocast, self.channels_last = autocast, channels_last
        self.checkpointer, self.recorder = checkpointer, recorder
        root = Path(config.data.root)
        self.loaders = {
            split: MemberLoader.for_evaluation(
                config, root / f"{split}.beton", mesh.member, mesh.replica, config.replicas, mesh.device
            )
            for split in SPLITS
        }

    def should_evaluate(self, epoch: int) -> bool:
        """After every ``train.eval_every``-th epoch (counted from 0) and after the last one."""
        train = self.config.train
        return epoch == train.epochs - 1 or (epoch + 1) % train.eval_every == 0

    def after_epoch(self, epoch: int, stats: dict[str, float], step: int) -> None:
        """At the end of ``epoch`` (``stats``: this rank's figures of it): evaluate where the
        cadence says (a collective, then)."""
        if self.should_evaluate(epoch):
            self.evaluate(epoch, stats, step)

    def redo_lost(self, start: Position) -> None:
        """A run resumed at the end of an epoch (``start``: its checkpoint's position, batch 0)
        whose evaluation there is missing or incomplete in ``metrics.jsonl`` evaluates it again.

        The evaluation is appended, and fsynced, before the checkpoint that follows it, so a
        crash cannot lose one whose checkpoint exists; but a torn last line of a finished run
        (a file system that kept the rename but not the append, a hand edit) lost its final
        test rows for good: a finished run trains no more, so it never evaluated again. The
        checkpoint holds the weights that evaluation read (evaluation changes none) and the
        epoch's training figures (``Position.ended_epoch``), so the rows come out as they were
        (on the same machine: ``tests/train/test_evaluator.py`` checks it bit for bit)."""
        epoch = start.epoch - 1
        if start.batch or epoch < 0 or not self.should_evaluate(epoch):
            return
        if self.mesh.main_does(lambda: self.recorder.evaluated(epoch, SPLITS)):
            return
        self.evaluate(epoch, start.ended_epoch, start.step)

    def evaluate(self, epoch: int, stats: dict[str, float], step: int) -> None:
        """Predict val and test; rank 0 records them; every rank saves the best checkpoint when
        rank 0's selection says this epoch is the best so far."""
        per_member = self.member_stats(stats)
        logits, labels = {}, {}
        for split, loader in self.loaders.items():
            logits[split], labels[split] = self.predict(loader)
        improved = self.mesh.main_does(lambda: self.recorder.record(epoch, per_member, logits, labels, step=step))
        if self.recorder.selects and improved:
            self.checkpointer.save_best(Position(epoch + 1, 0, step))

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
