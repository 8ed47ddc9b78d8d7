"""The cohort's sample order: same samples for every member, disjoint shards for replicas.

Mimicry compares members on the same images, so at every step replica r of *every*
member must read the same indices. FFCV's ``distributed=True`` shards over the global
world (wrong for a (K, R) mesh), so this order shards over replicas only. A cohort whose
members never compare logits on one batch may give each member its own permutation
(``data.sample_order: per_member``, ``order_stream``); a member's replicas still share it.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from ffcv.traversal_order.base import TraversalOrder


class CohortOrder(TraversalOrder):
    """Per-epoch permutation from the cohort seed; replica ``r`` of ``R`` takes shard r.

    Training (``shuffle=True``): every epoch a new permutation of all samples, cut to a
    multiple of R so that shards have equal length, and replica r takes every R-th
    sample starting at r. Members do not enter the seed, so they agree, unless ``stream``
    gives each member an order of its own (``order_stream``).

    Evaluation (``shuffle=False``): samples in file order, shard r = samples r, r+R, …,
    the last shards padded by repeating the final sample so all replicas run the same
    number of batches; ``unshard`` restores file order and drops the padding.

    With CS-KD's partners (``partners_of``), each training batch of B anchors is followed by
    their B same-class partners (``partner_table``, ``with_partners``), so the loader reads
    batches of 2B.

    FFCV 1.0.2 calls ``order(loader)`` on the instance it is given, so ``__call__``
    binds the loader and returns the order itself.
    """

    def __init__(
        self,
        seed: int,
        replica: int,
        replicas: int,
        shuffle: bool = True,
        partners_of: np.ndarray | None = None,
        anchors_per_batch: int = 0,
        pages: np.ndarray | None = None,
        window: int = 8,
        stream: int | None = None,
    ):
        """``partners_of``: every sample's label, to follow each batch of ``anchors_per_batch``
        anchors by their same-class partners (CS-KD, ``with_partners``); training only.
        ``pages``: every sample's page in the file, for the page-local order
        (``page_local_order``, ``window`` pages at a time; training only). ``stream``: the
        order's own stream (``order_stream``); None: the cohort's shared order."""
        if not 0 <= replica < replicas:
            raise ValueError(f"replica {replica} is outside 0..{replicas - 1}")
        self.seed, self.replica, self.replicas, self.shuffle = seed, replica, replicas, shuffle
        self.partners_of, self.anchors_per_batch = partners_of, anchors_per_batch
        self.pages, self.window = pages, window
        self.stream = () if stream is None else (ORDER_STREAM, stream)
        self.start = 0
        """Samples of the shard to skip: resuming mid-epoch starts at a batch boundary without
        decoding the batches before it."""
        self.indices: np.ndarray | None = None
        self.distributed = False
        self.sampler = None

    def __call__(self, loader) -> CohortOrder:
        self.loader = loader
        self.indices = np.asarray(loader.indices)
        return self

    def sample_order(self, epoch: int) -> Sequence[int]:
        return self.shard(self.indices, epoch)[self.start :]

    def shard(self, indices: np.ndarray, epoch: int) -> np.ndarray:
        """The indices replica ``self.replica`` reads in ``epoch`` (pure function)."""
        if self.shuffle and self.pages is not None:
            order = page_local_order(indices, self.pages, self.seed, epoch, self.window, self.stream)
            # Whole batches to each replica in turn: a batch stays a run of nearby samples.
            step = self.replicas * self.anchors_per_batch
            order = order[: len(order) - len(order) % step].reshape(-1, self.replicas, self.anchors_per_batch)
            return order[:, self.replica].reshape(-1)
        if self.shuffle:
            rng = np.random.default_rng([self.seed, epoch, *self.stream])
            order = indices[rng.permutation(len(indices))]
            order = order[: len(order) - len(order) % self.replicas]
            mine = order[self.replica :: self.replicas]
            if self.partners_of is None:
                return mine
            return with_partners(mine, partner_table(self.partners_of, self.seed, epoch), self.anchors_per_batch)
        per_replica = -(-len(indices) // self.replicas)
        padded = np.concatenate([indices, np.repeat(indices[-1:], per_replica * self.replicas - len(indices))])
        return padded[self.replica :: self.replicas]


ORDER_STREAM = 0x0DE5
"""Mixed into the seed of a member's own order (``data.sample_order: per_member``), with the member."""


def order_stream(sample_order: str, member: int) -> int | None:
    """The stream of member ``member``'s training order: its own (``per_member``), or None (the
    cohort's shared order: the seed alone, as before per-member orders existed)."""
    return member if sample_order == "per_member" else None


PAGE_STREAM = 0x9A6E
"""Mixed into the seed of the page-local order, apart from the full shuffle's stream."""


def page_local_order(
    indices: np.ndarray, pages: np.ndarray, seed: int, epoch: int, window: int, stream: tuple[int, ...] = ()
) -> np.ndarray:
    """Every sample of ``indices`` once, in an order that reads few pages of the file at a
    time: the pages in a random order, and the samples of each run of ``window`` consecutive
    pages shuffled together (FFCV's QUASI_RANDOM idea, which FFCV cannot combine with its
    distributed mode, ffcv #92). A pure function of (seed, epoch): every member reads the
    same samples at every step, and a resumed epoch too. ``pages[i]`` is sample i's page;
    ``stream``: a member's own order (``CohortOrder.stream``)."""
    rng = np.random.default_rng([seed, epoch, PAGE_STREAM, *stream])
    page_of = np.asarray(pages)[indices]
    present = np.unique(page_of)
    position = np.zeros(int(present.max()) + 1, dtype=np.int64)
    position[present[rng.permutation(len(present))]] = np.arange(len(present))
    group = position[page_of] // window
    return np.asarray(indices)[np.lexsort((rng.random(len(indices)), group))]


def sample_pages(path) -> np.ndarray:
    """The page of the file that holds each sample's image (``.beton`` tables, read with numpy)."""
    from cohort.data.beton import read_tables

    tables = read_tables(path)
    image = tables.metadata[f"f{tables.field_names.index('image')}"]
    return (image["data_ptr"] // np.uint64(tables.header["page_size"])).astype(np.int64)


PARTNER_STREAM = 0xC5CD
"""Mixed into the seed of the partners' draw, so it draws from no other stream."""


def partner_table(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """Every sample's CS-KD partner in ``epoch``: a sample drawn uniformly from its class, itself
    included (alinlab/cs-kd's ``PairBatchSampler`` draws ``random.choice`` of the class's
    indices), so a class of one sample pairs with itself. A pure function of (labels, seed,
    epoch): every member and replica draws the same partners, and a resumed epoch too."""
    labels = np.asarray(labels, dtype=np.int64)
    by_class = np.argsort(labels, kind="stable")
    counts = np.bincount(labels)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    draw = np.random.default_rng([seed, epoch, PARTNER_STREAM]).random(len(labels))
    pick = starts[labels] + np.minimum((draw * counts[labels]).astype(np.int64), counts[labels] - 1)
    return by_class[pick]


def with_partners(anchors: np.ndarray, partners: np.ndarray, per_batch: int) -> np.ndarray:
    """Batches of ``per_batch`` anchors, each followed by the anchors' partners in the same
    positions (the official sampler's layout: B anchors, then B partners). A last partial
    batch is dropped, as training drops it anyway."""
    full = len(anchors) - len(anchors) % per_batch
    batches = anchors[:full].reshape(-1, per_batch)
    paired = np.concatenate([batches, partners[batches.astype(np.int64)].astype(anchors.dtype)], axis=1)
    return paired.reshape(-1)


def unshard(per_replica: np.ndarray, total: int) -> np.ndarray:
    """Invert the evaluation sharding: ``[R, L, ...]`` in shard order → ``[total, ...]``."""
    replicas, length = per_replica.shape[:2]
    interleaved = np.swapaxes(per_replica, 0, 1).reshape(replicas * length, *per_replica.shape[2:])
    return interleaved[:total]
