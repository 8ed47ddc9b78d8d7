"""The cohort's sample order: same samples for every member, disjoint shards for replicas.

Mimicry compares members on the same images, so at every step replica r of *every*
member must read the same indices. FFCV's ``distributed=True`` shards over the global
world (wrong for a (K, R) mesh), so this order shards over replicas only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from ffcv.traversal_order.base import TraversalOrder


class CohortOrder(TraversalOrder):
    """Per-epoch permutation from the cohort seed; replica ``r`` of ``R`` takes shard r.

    Training (``shuffle=True``): every epoch a new permutation of all samples, cut to a
    multiple of R so that shards have equal length, and replica r takes every R-th
    sample starting at r. Members do not enter the seed, so they agree.

    Evaluation (``shuffle=False``): samples in file order, shard r = samples r, r+R, …,
    the last shards padded by repeating the final sample so all replicas run the same
    number of batches; ``unshard`` restores file order and drops the padding.

    FFCV 1.0.2 calls ``order(loader)`` on the instance it is given, so ``__call__``
    binds the loader and returns the order itself.
    """

    def __init__(self, seed: int, replica: int, replicas: int, shuffle: bool = True):
        if not 0 <= replica < replicas:
            raise ValueError(f"replica {replica} is outside 0..{replicas - 1}")
        self.seed, self.replica, self.replicas, self.shuffle = seed, replica, replicas, shuffle
        self.start = 0
        """Samples of the shard to skip: resuming mid-epoch starts at a batch boundary without
        decoding the batches before it."""
        self.indices: np.ndarray | None = None
        self.distributed = False
        self.sampler = None

    def __call__(self, loader) -> "CohortOrder":
        self.loader = loader
        self.indices = np.asarray(loader.indices)
        return self

    def sample_order(self, epoch: int) -> Sequence[int]:
        return self.shard(self.indices, epoch)[self.start:]

    def shard(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """The indices replica ``self.replica`` reads in ``epoch`` (pure function)."""
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch])
            order = indices[rng.permutation(len(indices))]
            order = order[: len(order) - len(order) % self.replicas]
            return order[self.replica :: self.replicas]
        per_replica = -(-len(indices) // self.replicas)
        padded = np.concatenate([indices, np.repeat(indices[-1:], per_replica * self.replicas - len(indices))])
        return padded[self.replica :: self.replicas]


def unshard(per_replica: np.ndarray, total: int) -> np.ndarray:
    """Invert the evaluation sharding: ``[R, L, ...]`` in shard order → ``[total, ...]``."""
    replicas, length = per_replica.shape[:2]
    interleaved = np.swapaxes(per_replica, 0, 1).reshape(replicas * length, *per_replica.shape[2:])
    return interleaved[:total]
