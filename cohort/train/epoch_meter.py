"""One epoch's training figures on one rank, and rank 0's progress bar."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator

import torch

from cohort.config import CohortConfig
from cohort.data.batch import Batch
from cohort.dist.mesh import CohortMesh

EPOCH_STATS = ("images_per_s", "seconds", "lr", "data_seconds", "exchange_seconds", "skipped_steps")
"""Per-epoch training figures logged with each member's metrics, beside the means of its
objective's terms (seconds: wall clock of the epoch's steps; data_seconds: blocked on the
loader; exchange_seconds: in the all-gather; skipped_steps: steps skipped for a non-finite
loss, train.on_nonfinite=skip_step)."""


class EpochMeter:
    """Running sums of the objective's terms by name (float64) and the steps skipped so far,
    carried in mid-epoch checkpoints so that a resumed epoch's means cover all of it; the time
    spent waiting for the loader; a tqdm bar for a person watching rank 0."""

    def __init__(
        self,
        config: CohortConfig,
        mesh: CohortMesh,
        names: list[str],
        epoch: int,
        start_batch: int,
        steps_per_epoch: int,
        resumed: dict | None,
    ):
        """``names``: the objective's terms; ``resumed``: a mid-epoch checkpoint's ``state()``,
        read when the epoch starts at ``start_batch`` > 0."""
        self.sums = {name: 0.0 for name in (*names, "loss")}
        self.skipped = 0
        if start_batch and resumed is not None:
            self.sums.update(resumed["terms"])
            self.skipped = resumed["skipped_steps"]
        self.start_batch, self.steps = start_batch, start_batch
        self.batch_size, self.world_size = config.data.batch_size, mesh.world_size
        self.bar = None
        # A bar only for a person watching: in logs, the per-epoch summary line says it all.
        if mesh.is_main and config.train.progress and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=steps_per_epoch,
                desc=f"epoch {epoch + 1}/{config.train.epochs}",
                leave=False,
                dynamic_ncols=True,
                file=sys.stderr,
            )
        self.started = time.perf_counter()
        self.data_seconds = 0.0

    def next_batch(self, batches: Iterator[Batch]) -> Batch:
        """The loader's next batch, timing how long the step waited for it."""
        waited = time.perf_counter()
        batch = next(batches)
        self.data_seconds += time.perf_counter() - waited
        return batch

    def add(self, terms: dict[str, torch.Tensor] | None, batch: Batch) -> None:
        """A step's terms (None: the step was skipped)."""
        if terms is None:
            self.skipped += 1
        else:
            for name, value in terms.items():
                self.sums[name] += float(value)
        self.steps += 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(
                loss=f"{float(terms['loss']):.3f}" if terms else "skipped",
                img_s=f"{self.steps * batch.anchors * self.world_size / (time.perf_counter() - self.started):.0f}",
            )

    def state(self) -> dict:
        """What a mid-epoch checkpoint carries (``Position.epoch_sums``)."""
        return {"terms": self.sums, "skipped_steps": self.skipped}

    def close(self, lr: float, exchange_seconds: float) -> dict[str, float]:
        """The epoch's figures: each term's mean over the steps taken, ``steps`` and ``EPOCH_STATS``."""
        if self.bar is not None:
            self.bar.close()
        seconds = time.perf_counter() - self.started
        stats = {name: total / max(self.steps - self.skipped, 1) for name, total in self.sums.items()}
        stats.update(
            steps=self.steps,
            seconds=seconds,
            images_per_s=(self.steps - self.start_batch) * self.batch_size / max(seconds, 1e-9),
            lr=lr,
            data_seconds=self.data_seconds,
            exchange_seconds=exchange_seconds,
            skipped_steps=self.skipped,
        )
        return stats
