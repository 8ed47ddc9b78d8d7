"""How a training set is split: validation carved at random with a fixed seed, then, given
``--train-size``, a class-balanced subset of the rest. The same data folder on every machine."""

from __future__ import annotations

import numpy as np

from cohort.data.folder import DataError

SPLIT_SEED = 20180612  # fixed: the same data folder on every machine


class ArrayDataset:
    """Indexable (image HWC uint8, label) pairs over numpy arrays, for FFCV's writer."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        return self.images[i], int(self.labels[i])


def split_indices(n: int, holdout: int, seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random split of ``range(n)`` into (kept, held out) index arrays, both sorted."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[holdout:]), np.sort(order[:holdout])


def holdout_count(n: int, val_fraction: float, val_size: int | None, source: str) -> int:
    """How many of ``n`` training images validation holds: ``val_size`` when given
    (``--val-size``), else ``val_fraction`` of them (at least one: FFCV cannot write an
    empty file, and temperature scaling needs val); a size that leaves no training image
    is a one-line error."""
    count = val_size if val_size is not None else max(1, int(round(val_fraction * n)))
    if not 1 <= count < n:
        raise DataError(f"--val-size {count} must be 1..{n - 1}: {source} has {n} training images")
    return count


def balanced_subset(labels: np.ndarray, kept: np.ndarray, size: int, source: str, seed: int = SPLIT_SEED + 2):
    """``size`` of the indices ``kept`` (sorted), class-balanced (``--train-size``): each
    class gets ``size // C`` images, and the ``size % C`` classes with the most images left
    one more, each class's drawn at random with a fixed seed. Too few images in a class is a
    one-line error."""
    classes = np.unique(labels)
    available = np.array([np.count_nonzero(labels[kept] == label) for label in classes])
    extra = set(np.argsort(-available, kind="stable")[: size % len(classes)].tolist())
    if not len(classes) <= size <= len(kept):
        raise DataError(
            f"--train-size {size} must be {len(classes)}..{len(kept)}: {source} has {len(kept)} training "
            f"images of {len(classes)} classes once val is carved"
        )
    rng, chosen = np.random.default_rng(seed), []
    for rank, label in enumerate(classes):
        pool = kept[labels[kept] == label]
        want = size // len(classes) + (rank in extra)
        if len(pool) < want:
            raise DataError(
                f"--train-size {size} needs {want} images of class {label} but {source} has {len(pool)} "
                f"once val is carved; pass a smaller --train-size"
            )
        chosen.append(rng.choice(pool, want, replace=False))
    return np.sort(np.concatenate(chosen))


VAL_FROM = ("random", "last")
"""Where val comes from (``--val-from``): a fixed random draw, or the training set's last images."""


def train_and_val(
    labels: np.ndarray,
    val_fraction: float,
    val_size: int | None,
    train_size: int | None,
    source: str,
    val_from: str = "random",
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val) into a training set: val carved first, so it stays the same
    whatever ``train_size`` is, at random with a fixed seed (``val_from`` random) or as the last
    images in the training set's own order (``last``: Diff-DML's code validates on CIFAR's last
    5,000 training images and trains on the first 45,000, Luminova1996/Diff-DML
    ``dataset_utils/cifar.py`` L128-136); then, given ``train_size``, a class-balanced subset
    of the rest (``balanced_subset``)."""
    count = holdout_count(len(labels), val_fraction, val_size, source)
    if val_from == "last":
        train_idx, val_idx = np.arange(len(labels) - count), np.arange(len(labels) - count, len(labels))
    elif val_from == "random":
        train_idx, val_idx = split_indices(len(labels), count)
    else:
        raise DataError(f"--val-from {val_from!r} is not valid; choose one of: {', '.join(VAL_FROM)}")
    if train_size is not None:
        train_idx = balanced_subset(labels, train_idx, train_size, source)
    return train_idx, val_idx
