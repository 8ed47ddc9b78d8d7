"""Write datasets as FFCV ``.beton`` files: ``train``, ``val`` and ``test`` plus ``meta.json``.

The validation split is carved from the training set with a fixed seed; test is the
dataset's own test split (digits has none, so it is carved first). ``meta.json`` is
written last: a data folder without it is incomplete and is rewritten. It records each
file's size and SHA-256 (``checksums``), which ``cohort data verify`` compares.
"""

from __future__ import annotations

import functools
import hashlib
import json
import pickle
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cohort.errors import CohortError

if TYPE_CHECKING:
    from cohort.data.beton import BetonTables

SPLITS = ("train", "val", "test")
SPLIT_SEED = 20180612  # fixed: the same data folder on every machine
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


class DataError(CohortError, ValueError):
    """A data problem; its message names the file and the command that fixes it."""


META_FIELDS = {
    "num_classes": "an integer >= 1",
    "image_size": "an integer >= 1",
    "mean": "a list of 3 numbers",
    "std": "a list of 3 numbers > 0",
}
"""What every ``meta.json`` must hold (the trainer, the loaders and the models read them), as its
errors describe them."""


def meta_field_is_bad(name: str, value) -> bool:
    """Whether ``meta.json``'s ``name`` (one of ``META_FIELDS``) holds a value of the wrong type or range."""

    def number(x) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and np.isfinite(x)

    if name in ("num_classes", "image_size"):
        return not (isinstance(value, int) and not isinstance(value, bool) and value >= 1)
    if not (isinstance(value, list) and len(value) == 3 and all(number(x) for x in value)):
        return True
    return name == "std" and not all(x > 0 for x in value)


def check_root(root: Path) -> None:
    """A data folder that is a file (``data.root=notes.txt``) cannot hold the data nor be written."""
    if root.exists() and not root.is_dir():
        raise DataError(
            f"data.root {root} is a file, not a folder; set data.root to a folder written by "
            f"`cohort data` (or to a new folder for the digits)"
        )


def read_meta(root: str | Path) -> dict:
    """``meta.json`` of a data folder, or a one-line error naming the command to write it; its
    fields (``META_FIELDS``) checked for presence and type, naming the file and the key."""
    root = Path(root)
    check_root(root)
    meta = root / "meta.json"
    if not meta.is_file():
        raise DataError(
            f"{meta} is missing; write the data with `cohort data <digits|cifar10|cifar100|imagefolder> --out {root}`"
        )
    try:
        info = json.loads(meta.read_text(encoding="utf-8"))
    except ValueError:  # a torn or hand-edited file (or not UTF-8): say which, not json's traceback
        raise DataError(
            f"{meta} is not valid JSON; rewrite the folder with `cohort data <dataset> --out {root}`"
        ) from None
    rewrite = f"rewrite the folder with `cohort data {{dataset}} --out {root}`"
    if not isinstance(info, dict):
        raise DataError(
            f"{meta} must hold a JSON object (num_classes, image_size, mean, std, ...), not "
            f"{type(info).__name__}; {rewrite.format(dataset='<dataset>')}"
        )
    dataset = info.get("dataset") if isinstance(info.get("dataset"), str) else "<dataset>"
    for name, kind in META_FIELDS.items():
        if name not in info:
            raise DataError(f"{meta} has no key {name} ({kind}); {rewrite.format(dataset=dataset)}")
        if meta_field_is_bad(name, info[name]):
            raise DataError(f"{meta}: {name} must be {kind}, got {info[name]!r}; {rewrite.format(dataset=dataset)}")
    for split in SPLITS:
        beton = root / f"{split}.beton"
        if not beton.is_file():
            raise DataError(f"{beton} is missing; {rewrite.format(dataset=dataset)}")
    return info


def check_beton(path: Path, num_classes: int, rewrite: str, image_size: int = 0, expected_by: str = "") -> int:
    """The sample count of a ``.beton``, after checking that the file is whole and its labels fit
    (and, given ``image_size``, that every image is ``image_size`` pixels square).

    FFCV maps the file and trusts its header and pointers: a truncated file crashes the
    loader's compiled code (or reads garbage), so does a sample pointer past the end
    (``pointer_fault``), and a label >= ``num_classes`` only fails inside every training
    process. All are found here from the header, the allocation table and the metadata
    (labels, image sizes and pointers), without decoding any image, and without importing
    FFCV (``cohort.data.beton`` reads those tables with numpy). ``expected_by`` names where
    ``num_classes`` and ``image_size`` come from (default: the folder's meta.json).
    """
    expected_by = expected_by or str(path.parent / "meta.json")
    from cohort.data.beton import ALLOCATION, FIELD_DESCRIPTOR, FORMAT_VERSION, HEADER, read_tables

    broken = DataError(f"{path} is truncated or corrupt; rewrite it with {rewrite}")
    size = path.stat().st_size
    if size < HEADER.itemsize:
        raise broken
    header = np.fromfile(path, dtype=HEADER, count=1)[0]
    table_start, table_bytes = int(header["alloc_table_ptr"]), size - int(header["alloc_table_ptr"])
    fields_end = HEADER.itemsize + int(header["num_fields"]) * FIELD_DESCRIPTOR.itemsize
    if (
        header["version"] != FORMAT_VERSION
        or not fields_end <= table_start <= size
        or table_bytes % ALLOCATION.itemsize
    ):
        raise broken
    try:
        tables = read_tables(path)
    except Exception:  # a damaged header or field list fails in many ways; name the file instead
        raise broken from None
    # The allocation table comes last: a cut there drops samples' entries (in cohort's files
    # every sample stores an image, so owns one).
    table = tables.allocation
    owners = np.unique(table["sample_id"]).size if "image" in tables.field_names else tables.num_samples
    if len(tables.metadata) != tables.num_samples or owners != tables.num_samples:
        raise broken
    fault = pointer_fault(tables, fields_end, size)
    if fault:
        raise DataError(f"{path} is truncated or corrupt: {fault}; rewrite it with {rewrite}")
    if "label" in tables.field_names:
        labels = tables.metadata[f"f{tables.field_names.index('label')}"]
        bad = labels[(labels < 0) | (labels >= num_classes)]
        if len(bad):
            raise DataError(
                f"label {int(bad[0])} in {path} is outside 0..{num_classes - 1} (num_classes in "
                f"{expected_by}); rewrite the data folder with {rewrite}"
            )
    if image_size and "image" in tables.field_names:  # each image's width and height are in the metadata too
        images = tables.metadata[f"f{tables.field_names.index('image')}"]
        wrong = np.flatnonzero((images["width"] != image_size) | (images["height"] != image_size))
        if len(wrong):
            first = images[wrong[0]]
            raise DataError(
                f"{path} holds images of {first['width']}×{first['height']} px (sample {wrong[0]}) but "
                f"{expected_by} says image_size {image_size}: every split's images must "
                f"be that size; rewrite the data folder with {rewrite}"
            )
    return tables.num_samples


def pointer_fault(tables: BetonTables, fields_end: int, file_size: int) -> str | None:
    """What is wrong with a ``.beton``'s sample pointers, in a few words, or None.

    FFCV 1.0.2 lays a file out as header, field list, per-sample metadata, data pages, and the
    allocation table last (``ffcv/writer.py``'s ``finalize``); each table entry is
    (sample_id, ptr, size) of one stored blob, and an image's metadata holds its ``data_ptr``.
    Its loader follows them unchecked (``memory_managers``' readers look up the size listed at
    ``data_ptr`` and slice the mapped file there, in compiled code): a pointer past the end, or
    one whose ``ptr + size`` wraps around 2**64, reads other bytes as the image, silently. So
    every entry must lie within the data (after the metadata, before the table) and every image
    must point at the start of one of its own sample's entries: numpy over the two tables, no
    sample read.
    """
    table, n = tables.allocation, tables.num_samples
    data_start, data_end = fields_end + tables.metadata.nbytes, int(tables.header["alloc_table_ptr"])
    ptr, size, owner = table["ptr"], table["size"], table["sample_id"]
    # ptr + size may wrap in uint64: compare the size with the room left after ptr instead.
    room = np.uint64(data_end) - np.minimum(ptr, np.uint64(data_end))
    bad = np.flatnonzero((ptr < data_start) | (ptr > data_end) | (size > room) | (owner >= n))
    if len(bad):
        entry = table[bad[0]]
        lo, hi = int(entry["ptr"]), int(entry["ptr"]) + int(entry["size"])
        if int(entry["sample_id"]) >= n:
            return f"its allocation table names sample {int(entry['sample_id'])}, but it holds {n} samples"
        if hi > file_size:
            where = f"past the end of the file ({file_size} bytes)"
        elif hi > data_end:
            where = f"over its allocation table (from byte {data_end})"
        else:
            where = f"over its header and metadata (to byte {data_start})"
        return f"its allocation table puts sample {int(entry['sample_id'])}'s data at bytes {lo}..{hi}, {where}"
    if "image" not in tables.field_names:
        return None
    image_ptr = tables.metadata[f"f{tables.field_names.index('image')}"]["data_ptr"]
    pointed = np.zeros(n, dtype=bool)  # whether one of sample i's entries starts at its image's data_ptr
    pointed[owner[image_ptr[owner] == ptr]] = True
    wrong = np.flatnonzero(~pointed)
    if len(wrong):
        sample, target = int(wrong[0]), int(image_ptr[wrong[0]])
        if target >= file_size:
            return f"sample {sample}'s image points to byte {target}, past the end of the file ({file_size} bytes)"
        return f"sample {sample}'s image points to byte {target}, where none of its allocated data starts"
    return None


def check_data(root: str | Path, batch_size: int = 0, replicas: int = 1) -> dict:
    """``read_meta``, plus every ``.beton`` checked whole (``check_beton``; its images of
    ``image_size`` unless the folder is decoded by centre crop) and, given a ``batch_size``, a
    training split that fills at least one batch on each of ``replicas``.

    Run before any training process starts: these problems would otherwise surface in
    every rank at once, as several errors or as a crash of FFCV's compiled loader.
    """
    root = Path(root)
    info = read_meta(root)
    rewrite = f"`cohort data {info.get('dataset', '<dataset>')} --out {root}`"
    # A folder decoded as stored (cohort's writer resized every image to image_size) must hold
    # images of that size alone; a center_crop folder (imagefolder) stores them as they come.
    side = info["image_size"] if info.get("decoder") != "center_crop" else 0
    sizes = {split: check_beton(root / f"{split}.beton", info["num_classes"], rewrite, side) for split in SPLITS}
    if batch_size and sizes["train"] // replicas < batch_size:
        per = f"{sizes['train'] // replicas} per replica ({replicas} replicas)" if replicas > 1 else str(sizes["train"])
        raise DataError(
            f"data.batch_size {batch_size} is larger than the training set ({root / 'train.beton'} has "
            f"{per} samples); lower data.batch_size"
        )
    return info


CHECKSUM = "sha256"
"""The digest ``meta.json`` records of each ``.beton``. SHA-256 rather than BLAKE2b: OpenSSL
runs it on the CPU's SHA extensions (hashlib's 1.5 GB/s in memory, BLAKE2b's 0.6 GB/s, on the
machine of docs/usage.md; ``bench/checksum_throughput.py``), and ``sha256sum`` checks the same
digests without cohort."""
CHUNK = 8 << 20
"""Bytes read per step: large enough that the per-call cost vanishes, one buffer reused."""


def file_checksum(path: Path) -> dict:
    """A file's ``{"bytes": size, "sha256": hex digest}``, read in ``CHUNK``-byte steps."""
    digest, buffer, count = hashlib.new(CHECKSUM), memoryview(bytearray(CHUNK)), 0
    with open(path, "rb", buffering=0) as f:
        while got := f.readinto(buffer):
            digest.update(buffer[:got])  # hashlib drops the GIL on large updates
            count += got
    return {"bytes": count, CHECKSUM: digest.hexdigest()}


def verify_data(root: str | Path) -> tuple[int, int, float]:
    """Compare every ``.beton`` of a data folder with the size and digest its ``meta.json``
    recorded when ``cohort data`` wrote it; (files, bytes, seconds) when all match, else a
    one-line error naming the first file that differs.

    Reads every byte (about 1.3 GB/s, the disk permitting: docs/usage.md), so it is a command of its own
    (``cohort data verify``), never part of ``check_data``, which training runs every launch.
    A folder written before checksums were recorded cannot be verified: an error too, so that
    ``cohort data verify --out X && ...`` never proceeds on data nobody checked.
    """
    root = Path(root)
    info = read_meta(root)
    meta = root / "meta.json"
    rewrite = f"rewrite the folder with `cohort data {info.get('dataset', '<dataset>')} --out {root}`"
    recorded = info.get("checksums")
    if recorded is None:
        raise DataError(
            f"{meta} records no checksums (the folder was written before `cohort data` recorded them), "
            f"so it cannot be verified; {rewrite} to record them"
        )
    names = [f"{split}.beton" for split in SPLITS]

    def valid(entry) -> bool:
        size, digest = (entry.get("bytes"), entry.get(CHECKSUM)) if isinstance(entry, dict) else (None, None)
        return isinstance(size, int) and size >= 0 and isinstance(digest, str) and len(digest) == 64

    if not (isinstance(recorded, dict) and all(valid(recorded.get(name)) for name in names)):
        raise DataError(
            f"{meta}: checksums must give {', '.join(names)} each its bytes and {CHECKSUM} (as `cohort data` "
            f"writes them); {rewrite}"
        )
    start = time.perf_counter()
    # Sizes first: a truncated or replaced file is named before a byte is hashed.
    for name in names:
        found = (root / name).stat().st_size
        if found != recorded[name]["bytes"]:
            raise DataError(
                f"{root / name} has {found} bytes but {meta} records {recorded[name]['bytes']}: it changed "
                f"after `cohort data` wrote it; {rewrite}"
            )
    for name in names:
        found = file_checksum(root / name)[CHECKSUM]
        if found != recorded[name][CHECKSUM]:
            raise DataError(
                f"{root / name} does not match its checksum in {meta} ({CHECKSUM} recorded "
                f"{recorded[name][CHECKSUM][:12]}…, found {found[:12]}…): it changed after `cohort data` "
                f"wrote it; {rewrite}"
            )
    return len(names), sum(recorded[name]["bytes"] for name in names), time.perf_counter() - start


def ensure_data(root: str, dataset: str) -> None:
    """Write the digits data if it is missing (it ships with scikit-learn); else check it exists."""
    # Only a folder without meta.json (never written, or cut short: meta.json comes last) is
    # written here; a written folder that lost a file is the user's data, reported, not replaced.
    check_root(Path(root))
    if dataset == "digits" and not (Path(root) / "meta.json").is_file():
        print(f"cohort: writing the digits dataset to {root} (first run only)", flush=True)
        write_digits(Path(root))
    read_meta(root)


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


def train_and_val(
    labels: np.ndarray, val_fraction: float, val_size: int | None, train_size: int | None, source: str
) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays (train, val) into a training set: val carved at random with a fixed
    seed first, so it stays the same whatever ``train_size`` is; then, given
    ``train_size``, a class-balanced subset of the rest (``balanced_subset``)."""
    train_idx, val_idx = split_indices(len(labels), holdout_count(len(labels), val_fraction, val_size, source))
    if train_size is not None:
        train_idx = balanced_subset(labels, train_idx, train_size, source)
    return train_idx, val_idx


def write_arrays(
    out: Path,
    name: str,
    images: np.ndarray,
    labels: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    val_fraction: float,
    classes: Sequence[str],
    val_size: int | None = None,
    train_size: int | None = None,
) -> dict:
    """Carve val from train (``val_size`` images, else ``val_fraction`` of them), keep a
    class-balanced ``train_size`` of the rest when given, compute the train mean/std, and
    write the three splits."""
    train_idx, val_idx = train_and_val(labels, val_fraction, val_size, train_size, name)
    splits = {
        "train": ArrayDataset(images[train_idx], labels[train_idx]),
        "val": ArrayDataset(images[val_idx], labels[val_idx]),
        "test": ArrayDataset(test_images, test_labels),
    }
    pixels = images[train_idx].reshape(-1, 3).astype(np.float64) / 255.0
    meta = {
        "dataset": name,
        "num_classes": len(classes),
        "classes": list(classes),
        "image_size": int(images.shape[1]),
        "mean": pixels.mean(0).round(4).tolist(),
        "std": pixels.std(0).round(4).tolist(),
        "decoder": "simple",
    }
    return _write_splits(out, splits, meta, write_mode="raw", max_resolution=None)


def _write_splits(
    out: Path,
    splits: dict,
    meta: dict,
    write_mode: str,
    max_resolution: int | None,
    num_workers: int = 1,
    field_options: dict | None = None,
) -> dict:
    """Write all splits into a temporary folder next to ``out``, then move them in."""
    import ffcv.writer
    from ffcv.fields import IntField, RGBImageField
    from ffcv.writer import DatasetWriter
    from tqdm import tqdm

    # FFCV's writer draws a tqdm bar per split: kept for a terminal, out of logs (SLURM's, CI's).
    ffcv.writer.tqdm = functools.partial(tqdm, disable=not sys.stderr.isatty())

    out.mkdir(parents=True, exist_ok=True)
    (out / "meta.json").unlink(missing_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".writing-", dir=out))
    try:
        for split, dataset in splits.items():
            image_field = RGBImageField(write_mode=write_mode, max_resolution=max_resolution, **(field_options or {}))
            writer = DatasetWriter(
                str(staging / f"{split}.beton"), {"image": image_field, "label": IntField()}, num_workers=num_workers
            )
            writer.from_indexed_dataset(dataset)
            # Read back once written: FFCV's workers write pages in turn, then it seeks back
            # to write the metadata and header, so the bytes cannot be hashed as they go.
            meta.setdefault("checksums", {})[f"{split}.beton"] = file_checksum(staging / f"{split}.beton")
        meta["sizes"] = {split: len(dataset) for split, dataset in splits.items()}
        for split in splits:
            (staging / f"{split}.beton").replace(out / f"{split}.beton")
        (staging / "meta.json").write_text(json.dumps(meta, indent=1))
        (staging / "meta.json").replace(out / "meta.json")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return meta


# --- the datasets -----------------------------------------------------------------------------


def write_digits(out: Path, size: int = 32, val_size: int | None = None, train_size: int | None = None) -> dict:
    """scikit-learn's bundled 8×8 digits (1,797 real scans), upscaled to ``size``² RGB.

    No download: the images ship with scikit-learn. Test takes 20 %, val 12.5 % of the rest
    (or ``val_size`` images); ``train_size``: a class-balanced subset of the remainder.
    """
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    grey = (digits.images * (255.0 / 16.0)).round().astype(np.uint8)
    images = np.stack([np.asarray(Image.fromarray(g).resize((size, size), Image.BILINEAR)) for g in grey])
    images = np.repeat(images[..., None], 3, axis=3)
    labels = digits.target.astype(np.int64)
    train_idx, test_idx = split_indices(len(labels), int(round(0.2 * len(labels))), seed=SPLIT_SEED + 1)
    return write_arrays(
        out,
        "digits",
        images[train_idx],
        labels[train_idx],
        images[test_idx],
        labels[test_idx],
        val_fraction=0.125,
        classes=[str(d) for d in range(10)],
        val_size=val_size,
        train_size=train_size,
    )


def read_cifar_batches(folder: Path, files: Sequence[str], label_key: str) -> tuple[np.ndarray, np.ndarray]:
    """Read CIFAR's python pickles (``data`` N×3072 uint8, labels) into HWC images."""
    images, labels = [], []
    for name in files:
        path = folder / name
        if not path.is_file():
            raise DataError(f"{path} is missing; is {folder} an extracted CIFAR python archive?")
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        images.append(np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    return np.concatenate(images), np.concatenate(labels)


def write_cifar(
    out: Path,
    classes: int,
    source: Path,
    download: bool = True,
    val_size: int | None = None,
    train_size: int | None = None,
) -> dict:
    """CIFAR-10/100 from torchvision's on-disk python format under ``source``; val is 10 % of
    the training set (or ``val_size`` images), ``train_size`` a class-balanced subset of the rest.

    If ``source`` does not hold the extracted archive, torchvision downloads it (needs
    the internet); the pickles are then read here, so a hand-made archive works too.
    """
    folder = source / ("cifar-10-batches-py" if classes == 10 else "cifar-100-python")
    if not folder.is_dir():
        if not download:
            raise DataError(f"{folder} is missing; pass --download or extract CIFAR-{classes} there")
        from torchvision.datasets import CIFAR10, CIFAR100

        (CIFAR10 if classes == 10 else CIFAR100)(root=str(source), train=True, download=True)
    if classes == 10:
        meta_file, names_key, label_key = "batches.meta", "label_names", "labels"
        train_files, test_files = [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"]
    else:
        meta_file, names_key, label_key = "meta", "fine_label_names", "fine_labels"
        train_files, test_files = ["train"], ["test"]
    with open(folder / meta_file, "rb") as f:
        class_names = pickle.load(f, encoding="latin1")[names_key]
    train_images, train_labels = read_cifar_batches(folder, train_files, label_key)
    test_images, test_labels = read_cifar_batches(folder, test_files, label_key)
    return write_arrays(
        out,
        f"cifar{classes}",
        train_images,
        train_labels,
        test_images,
        test_labels,
        val_fraction=0.1,
        classes=class_names,
        val_size=val_size,
        train_size=train_size,
    )


def write_imagefolder(
    out: Path,
    train_dir: Path,
    test_dir: Path,
    max_resolution: int = 256,
    val_fraction: float = 0.02,
    num_workers: int = 4,
    write_mode: str = "jpg",
    jpeg_quality: int = 90,
    compress_probability: float = 0.5,
    val_size: int | None = None,
    train_size: int | None = None,
) -> dict:
    """Any ``ImageFolder`` layout (ImageNet: its val folder is our test split). FFCV's writer
    options: ``max_resolution`` (longest side), ``write_mode`` (``jpg``, ``raw``, or
    ``proportion``: JPEG with probability ``compress_probability``, as ffcv-imagenet writes
    ImageNet), ``jpeg_quality``. Val is ``val_fraction`` of the training images (or ``val_size``),
    ``train_size`` a class-balanced subset of the rest. Says how big the files will be before it
    writes them."""
    from torch.utils.data import Subset

    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"{d} is not a directory of class folders")
    train, test = image_folder(train_dir), image_folder(test_dir)
    if train.classes != test.classes:
        only_train, only_test = (
            sorted(set(train.classes) - set(test.classes)),
            sorted(set(test.classes) - set(train.classes)),
        )
        raise DataError(
            f"{train_dir} and {test_dir} have different class folders (only in {train_dir.name}: "
            f"{', '.join(only_train[:5]) or '-'}; only in {test_dir.name}: {', '.join(only_test[:5]) or '-'}); "
            f"give both the same class folders"
        )
    train_idx, val_idx = train_and_val(np.asarray(train.targets), val_fraction, val_size, train_size, str(train_dir))
    splits = {"train": Subset(train, train_idx.tolist()), "val": Subset(train, val_idx.tolist()), "test": test}
    meta = {
        "dataset": "imagefolder",
        "num_classes": len(train.classes),
        "classes": train.classes,
        "image_size": 224 if max_resolution >= 256 else max_resolution,
        "mean": list(IMAGENET_MEAN),
        "std": list(IMAGENET_STD),
        "decoder": "center_crop",
    }
    options = {"jpeg_quality": jpeg_quality, "compress_probability": compress_probability}  # FFCV's RGBImageField's
    estimate = sum(estimated_bytes(dataset, max_resolution, write_mode, **options) for dataset in splits.values())
    print(
        f"cohort data: writing {sum(len(d) for d in splits.values())} images into {out}, about "
        f"{human_bytes(estimate)} (estimated from a sample; {write_mode}, longest side {max_resolution}, "
        f"JPEG quality {jpeg_quality})",
        flush=True,
    )
    return _write_splits(
        out,
        splits,
        meta,
        write_mode=write_mode,
        max_resolution=max_resolution,
        num_workers=num_workers,
        field_options=options,
    )


FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
FASHION_MNIST_DEBIAN = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` (installed by ``scripts/setup.sh``) puts the files."""
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
FASHION_MNIST_URL = "https://github.com/zalandoresearch/fashion-mnist (data/fashion)"


def write_fashion_mnist(
    out: Path, source: Path = FASHION_MNIST_DEBIAN, val_size: int | None = 10_000, train_size: int | None = None
) -> dict:
    """Zalando's Fashion-MNIST (60,000 training and 10,000 test 28×28 grey images of 10 kinds
    of clothing) from its four IDX files under ``source``, gzipped as Zalando and Debian ship
    them (or not), stored as 3 equal channels.

    Val holds 10,000 training images by default, so 50,000 train, as in google/
    uncertainty-baselines' ``baselines/mnist/deterministic.py`` (``n_train = 50000``); the
    test split is the data set's own. A missing, truncated or malformed file is a one-line
    error naming it (``cohort.data.idx``).
    """
    from cohort.data.idx import IdxError, read_idx

    if not source.is_dir():
        raise DataError(
            f"{source} is not a folder; install Debian's dataset-fashion-mnist (bash scripts/setup.sh does) "
            f"or pass --source with the four IDX files from {FASHION_MNIST_URL}"
        )

    def read(part: str, ndim: int) -> np.ndarray:
        path = source / FASHION_MNIST_FILES[part]
        if not path.is_file() and path.with_suffix("").is_file():  # the same file, already gunzipped
            path = path.with_suffix("")
        try:
            return read_idx(path, ndim)
        except IdxError as error:
            raise DataError(f"{error}; the four files are at {FASHION_MNIST_URL}") from None

    arrays = {part: read(part, 3 if part.endswith("images") else 1) for part in FASHION_MNIST_FILES}
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if len(images) != len(labels) or images.shape[1:] != (28, 28):
            raise DataError(
                f"{source / FASHION_MNIST_FILES[f'{split}_images']} holds {images.shape} images and "
                f"{source / FASHION_MNIST_FILES[f'{split}_labels']} {len(labels)} labels: Fashion-MNIST's "
                f"{split} split is N 28×28 images and N labels; fetch them again"
            )
        if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"{source / FASHION_MNIST_FILES[f'{split}_labels']} holds label {int(labels.max())}, outside "
                f"Fashion-MNIST's 0..9; fetch it again"
            )

    def rgb(grey: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=3))

    return write_arrays(
        out,
        "fashion-mnist",
        rgb(arrays["train_images"]),
        arrays["train_labels"].astype(np.int64),
        rgb(arrays["test_images"]),
        arrays["test_labels"].astype(np.int64),
        val_fraction=0.0,
        classes=FASHION_MNIST_CLASSES,
        val_size=val_size,
        train_size=train_size,
    )


def human_bytes(count: float) -> str:
    """``count`` bytes as B, KiB, MiB, GiB or TiB with 3 significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"


def image_folder(root: Path):
    """torchvision's ImageFolder of ``root``; no class folder or no image is a one-line error."""
    from torchvision.datasets import ImageFolder

    try:
        return ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as error:  # torchvision: no class folders / no valid files
        raise DataError(
            f"{root} holds no images in class folders ({str(error).splitlines()[0][:80]}); "
            f"pass a folder of <class>/<image> files"
        ) from None


def estimated_bytes(
    dataset, max_resolution: int, write_mode: str, jpeg_quality: int, compress_probability: float, sample: int = 16
) -> float:
    """The bytes FFCV will write for ``dataset``'s images, from encoding a fixed sample of them
    as FFCV's writer does (its resizer and JPEG encoder)."""
    from ffcv.fields.rgb_image import encode_jpeg, resizer

    if len(dataset) == 0:
        return 0.0
    chosen = np.random.default_rng(0).choice(len(dataset), min(sample, len(dataset)), replace=False)
    raw, jpeg = [], []
    for i in chosen:
        image = resizer(np.asarray(dataset[int(i)][0].convert("RGB")), max_resolution)
        raw.append(image.nbytes)
        jpeg.append(encode_jpeg(image, jpeg_quality).nbytes if write_mode != "raw" else 0)
    share = {"jpg": 1.0, "raw": 0.0, "proportion": compress_probability}[write_mode]
    return len(dataset) * (share * np.mean(jpeg) + (1 - share) * np.mean(raw))
