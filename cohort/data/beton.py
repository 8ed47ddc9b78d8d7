"""Read a ``.beton`` file's header, field list, per-sample metadata and allocation table with
numpy alone.

The checks that run before any process starts (``cohort.data.folder.check_beton``, from
``cohort train`` and ``cohort submit``) need only these tables; importing FFCV for them
costs about 5 s (numba, OpenCV). The layouts below are FFCV 1.0.2's (``ffcv/types.py``,
``ffcv/reader.py`` and its fields' ``metadata_type``); ``tests/data/test_beton.py`` checks
them against FFCV's own dtypes and ``Reader``, so a change of FFCV's format is caught.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FORMAT_VERSION = 2
HEADER = np.dtype(
    [
        ("version", "<u2"),
        ("num_fields", "<u2"),
        ("page_size", "<u4"),
        ("num_samples", "<u8"),
        ("alloc_table_ptr", "<u8"),
    ],
    align=True,
)
FIELD_DESCRIPTOR = np.dtype([("type_id", "<u1"), ("name", ("<u1", 16)), ("arguments", ("<u1", (1024,)))], align=True)
ALLOCATION = np.dtype([("sample_id", "<u8"), ("ptr", "<u8"), ("size", "<u8")])
FIELD_METADATA = {
    0: np.dtype("<f8"),  # FloatField
    1: np.dtype("<i8"),  # IntField
    2: np.dtype([("mode", "<u1"), ("width", "<u2"), ("height", "<u2"), ("data_ptr", "<u8")]),  # RGBImageField
}
"""Per-sample metadata of the field types cohort's files hold, by FFCV type id."""
FIELD_KINDS = {0: "FloatField", 1: "IntField", 2: "RGBImageField"}
"""FFCV's name of each field type (its ``ffcv/types.py`` type ids), as an error names it."""
LOADER_FIELDS = {"image": 2, "label": 1}
"""The fields ``cohort.data.loader.MemberLoader`` reads, by name, and their type ids: its
pipelines are keyed by these names, and FFCV's loader fails with a bare ``AssertionError``
(``assert spec.decoder is not None``) in every rank for a field it does not find."""
MIN_PAGE_SIZE, MAX_PAGE_SIZE = 1 << 21, 1 << 32
"""The page sizes FFCV 1.0.2 writes: a power of two in [2 MiB, 4 GiB) (``ffcv/writer.py``'s
``DatasetWriter`` refuses others). Its ``Reader`` checks nothing, but its memory managers find a
sample's page as ``ptr >> log2(page_size)`` (``memory_managers/base.py``; the process cache reads
``[offset, offset + size)`` of that one page, ``process_cache/manager.py``), so a page size that
is not such a power of two, or data that crosses a page boundary, reads other bytes."""


class BetonFormatError(ValueError):
    """The file is not a ``.beton`` this module can read (damaged, or fields of other types)."""


@dataclass(frozen=True)
class BetonTables:
    header: np.void
    field_names: list[str]
    field_types: list[int]
    """Field i's FFCV type id (``FIELD_KINDS``)."""
    metadata: np.ndarray
    """One record per sample; field i's column is ``f{i}``."""
    allocation: np.ndarray

    @property
    def num_samples(self) -> int:
        return int(self.header["num_samples"])


def read_tables(path: str | Path) -> BetonTables:
    """The tables of a ``.beton`` as FFCV's ``Reader`` reads them, without decoding data."""
    header = np.fromfile(path, dtype=HEADER, count=1)
    if len(header) == 0 or header[0]["version"] != FORMAT_VERSION:
        raise BetonFormatError(f"{path}: not a .beton of format {FORMAT_VERSION}")
    header = header[0]
    fields = np.fromfile(path, dtype=FIELD_DESCRIPTOR, count=int(header["num_fields"]), offset=HEADER.itemsize)
    if len(fields) != header["num_fields"] or any(int(t) not in FIELD_METADATA for t in fields["type_id"]):
        raise BetonFormatError(f"{path}: its field list is cut short or holds a field type cohort does not write")
    names = [bytes(name).split(b"\x00")[0].decode("ascii", errors="replace") for name in fields["name"]]
    metadata_type = np.dtype([("", FIELD_METADATA[int(t)]) for t in fields["type_id"]], align=True)
    metadata = np.fromfile(
        path, dtype=metadata_type, count=int(header["num_samples"]), offset=HEADER.itemsize + fields.nbytes
    )
    allocation = np.fromfile(path, dtype=ALLOCATION, offset=int(header["alloc_table_ptr"]))
    return BetonTables(header, names, [int(t) for t in fields["type_id"]], metadata, allocation)
