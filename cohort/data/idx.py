"""Read IDX files: the format of LeCun's MNIST, which Zalando's Fashion-MNIST keeps.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), then each dimension as a big-endian 32-bit integer, then the values in C
order. Fashion-MNIST ships four of them gzipped (``train-images-idx3-ubyte.gz`` ...);
Debian's ``dataset-fashion-mnist`` installs those under ``/usr/share/datasets/fashion-mnist``.
Everything is checked against the header before it is used, so a damaged file is a
one-line error naming it, never a silently wrong array.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from cohort.errors import CohortError

IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
"""The IDX type codes and the numpy type each stores (big-endian for multi-byte values)."""


class IdxError(CohortError, ValueError):
    """An IDX file that is missing, cut short or not IDX; its message names the file."""


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The array an IDX file holds, gzipped (``.gz``) or not, checked to have ``ndim``
    dimensions and exactly the bytes its header announces."""
    if not path.is_file():
        raise IdxError(f"{path} is missing")
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as error:  # gzip's errors for bad magic, a cut stream, a bad CRC
        raise IdxError(f"{path} is not a whole gzip file ({error}); fetch it again") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise IdxError(f"{path} is not an IDX file (its first bytes are {raw[:4].hex() or 'missing'}); fetch it again")
    if raw[3] != ndim:
        raise IdxError(f"{path} holds an IDX array of {raw[3]} dimensions where {ndim} are expected")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise IdxError(f"{path} is truncated inside its header; fetch it again")
    shape = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise IdxError(
            f"{path} holds {len(raw) - header} bytes of values but its header announces {shape} "
            f"({expected} bytes): it is {'truncated' if len(raw) - header < expected else 'longer than its header'}; "
            f"fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
