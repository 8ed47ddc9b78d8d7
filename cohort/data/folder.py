"""A written data folder: ``train``, ``val`` and ``test`` ``.beton`` files and ``meta.json``,
checked before any process reads them, and verified against the checksums written with them.

``meta.json`` is written last by ``cohort data`` (``cohort.data.datasets``): a folder without it
is incomplete. It records each file's size and SHA-256 (``checksums``), which ``cohort data
verify`` compares. Every check here is one line naming the file and the command that fixes it.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cohort.errors import CohortError

if TYPE_CHECKING:
    from cohort.data.beton import BetonTables

SPLITS = ("train", "val", "test")


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
    if problem := fields_fault(tables):
        raise DataError(f"{path} {problem}; rewrite it with {rewrite}")
    # The allocation table comes last: a cut there drops samples' entries (in cohort's files
    # every sample stores an image, so owns one).
    owners = np.unique(tables.allocation["sample_id"]).size
    if len(tables.metadata) != tables.num_samples or owners != tables.num_samples:
        raise broken
    fault = pointer_fault(tables, fields_end, size) or page_fault(tables)
    if fault:
        raise DataError(f"{path} is truncated or corrupt: {fault}; rewrite it with {rewrite}")
    labels = tables.metadata[f"f{tables.field_names.index('label')}"]
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if len(bad):
        raise DataError(
            f"label {int(bad[0])} in {path} is outside 0..{num_classes - 1} (num_classes in "
            f"{expected_by}); rewrite the data folder with {rewrite}"
        )
    if image_size:  # each image's width and height are in the metadata too
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


def fields_fault(tables: BetonTables) -> str | None:
    """What the loader would not find among a ``.beton``'s fields (``LOADER_FIELDS``: a field of
    that name and type), in a few words naming the field and what is there, or None."""
    from cohort.data.beton import FIELD_KINDS, LOADER_FIELDS

    kinds = dict(zip(tables.field_names, tables.field_types))
    there = ", ".join(f"{name}: {FIELD_KINDS[kind]}" for name, kind in kinds.items()) or "none"
    for name, kind in LOADER_FIELDS.items():
        if kinds.get(name) != kind:
            found = "has no field" if name not in kinds else "has another type of field"
            return f"{found} {name}: {FIELD_KINDS[kind]}, which the loader reads (its fields: {there})"
    return None


def page_fault(tables: BetonTables) -> str | None:
    """What is wrong with a ``.beton``'s page size (``cohort.data.beton.MIN_PAGE_SIZE``: the sizes
    FFCV writes), or with data that crosses a page boundary, which FFCV's loader would read from
    the wrong bytes; None when nothing is."""
    from cohort.data.beton import MAX_PAGE_SIZE, MIN_PAGE_SIZE

    page = int(tables.header["page_size"])
    if not (MIN_PAGE_SIZE <= page < MAX_PAGE_SIZE and page & (page - 1) == 0):
        return (
            f"its header's page size is {page} bytes, where FFCV writes a power of two from "
            f"{MIN_PAGE_SIZE >> 20} MiB up to 4 GiB and finds each sample's page by it"
        )
    table = tables.allocation[tables.allocation["size"] > 0]
    first, last = table["ptr"] // np.uint64(page), (table["ptr"] + table["size"] - np.uint64(1)) // np.uint64(page)
    crossing = np.flatnonzero(first != last)
    if len(crossing):
        entry = table[crossing[0]]
        return (
            f"sample {int(entry['sample_id'])}'s data crosses a page boundary of its header's {page}-byte "
            f"pages, which FFCV never writes"
        )
    return None


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


def human_bytes(count: float) -> str:
    """``count`` bytes as B, KiB, MiB, GiB or TiB with 3 significant digits."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1000:
            return f"{count:.3g} {unit}"
        count /= 1024
    return f"{count:.3g} TiB"
