"""Which training samples may show their label: semi-supervised DML (Zhang et al. 2018, §3.4).

A run names its labelled samples once, before any process starts, and keeps them for the
whole run: ``data.labelled_fraction`` chooses that fraction of each class (class-balanced,
at least one sample per class) with ``data.labelled_seed``; ``data.labelled_indices`` reads
them from a file instead. The loader then hides every other label (``IGNORE_LABEL``), so no
term can read it; the images stay. Validation and test keep every label.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cohort.data.folder import DataError

LABELLED_STREAM = 0x1ABE1
"""Mixed into the seed of the class-balanced choice, so it draws from no other stream."""


def train_labels(root: str | Path) -> np.ndarray:
    """The label of every training sample, read from the ``.beton``'s metadata (no decoding, no FFCV)."""
    from cohort.data.beton import read_tables

    tables = read_tables(Path(root) / "train.beton")
    return np.asarray(tables.metadata[f"f{tables.field_names.index('label')}"], dtype=np.int64)


def choose_labelled(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of round(fraction · n_c) samples (at least 1) of each class c, drawn
    without replacement: a pure function of (labels, fraction, seed)."""
    rng = np.random.default_rng([seed, LABELLED_STREAM])
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = max(1, int(round(fraction * len(members))))
        chosen.append(members[rng.permutation(len(members))[:take]])
    return np.sort(np.concatenate(chosen))


def read_index_file(path: str | Path, num_samples: int) -> np.ndarray:
    """Sorted indices from ``.npy`` or text (one per line); out-of-range or repeated ones are errors."""
    path = Path(path)
    key = "data.labelled_indices"
    if not path.is_file():
        raise DataError(f"{key} {path} does not exist; give a .npy or text file of training-sample indices")
    try:
        raw = np.load(path) if path.suffix == ".npy" else np.loadtxt(path, dtype=np.float64, ndmin=1)
    except (ValueError, OSError):
        raise DataError(f"{key} {path} is not a .npy array or a text file of one integer per line") from None
    raw = np.asarray(raw).ravel()
    if raw.size == 0 or not np.all(np.equal(np.mod(raw, 1), 0)):
        raise DataError(f"{key} {path} must hold at least one integer index, and integers only")
    indices = raw.astype(np.int64)
    bad = indices[(indices < 0) | (indices >= num_samples)]
    if len(bad):
        raise DataError(
            f"{key} {path}: index {int(bad[0])} is outside 0..{num_samples - 1} "
            f"(the training split's samples); fix the file"
        )
    unique, counts = np.unique(indices, return_counts=True)
    if (counts > 1).any():
        raise DataError(f"{key} {path}: index {int(unique[counts > 1][0])} is listed twice; list each sample once")
    return unique


def labelled_set(data) -> np.ndarray | None:
    """The sorted labelled training indices of a ``DataConfig``, or None when every label is known."""
    if not data.semi_supervised:
        return None
    labels = train_labels(data.root)
    if data.labelled_indices:
        return read_index_file(data.labelled_indices, len(labels))
    return choose_labelled(labels, data.labelled_fraction, data.labelled_seed)


def check_labelled(config) -> np.ndarray | None:
    """``labelled_set``, checked before any process starts; a run that trains on its labelled
    samples alone (``CohortConfig.trains_on_unlabelled`` false) must fill a batch with them."""
    labelled = labelled_set(config.data)
    if labelled is not None and not config.trains_on_unlabelled:
        per_replica = len(labelled) // config.replicas
        if per_replica < config.data.batch_size:
            raise DataError(
                f"data.batch_size {config.data.batch_size} is larger than the {per_replica} labelled "
                f"samples per replica that an independent run trains on; lower data.batch_size "
                f"or raise data.labelled_fraction"
            )
    return labelled
