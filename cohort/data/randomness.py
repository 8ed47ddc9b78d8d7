"""Counter-based randomness for augmentations: every random decision a pure function of
(cohort seed, view stream, epoch, sample index, operation).

FFCV's own random ops draw from numba's unseeded per-thread generator, so runs that use
them cannot be repeated. Ours hash those numbers with SplitMix64, so a run is bit-identical
whatever the number of loader threads. FFCV compiles a pipeline once, and numba freezes any
array a compiled function captures; the epoch therefore reaches compiled code through
``AugmentationClock``, a small array that the compiled code reads by address and the loader
updates before each epoch.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import types
from numba.extending import intrinsic


@numba.njit(cache=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser: a bijective, well-mixed hash of a 64-bit integer."""
    x = np.uint64(x) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(cache=True)
def sample_key(member_key: np.uint64, epoch: np.uint64, index: np.uint64, salt: np.uint64) -> np.uint64:
    """The random stream of one operation on one sample in one epoch of one member."""
    return splitmix64(member_key ^ splitmix64(epoch ^ splitmix64(index ^ splitmix64(salt))))


@numba.njit(cache=True)
def uniform(key: np.uint64, draw: int) -> float:
    """The ``draw``-th uniform number in [0, 1) of stream ``key``."""
    bits = splitmix64(key ^ splitmix64(np.uint64(draw) + np.uint64(0x632BE59BD9B4E019)))
    return np.float64(bits >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@intrinsic
def int64_pointer(typingctx, address):
    """Reinterpret an integer address as an int64 pointer (for ``numba.carray``)."""
    signature = types.CPointer(types.int64)(types.int64)

    def codegen(context, builder, sig, args):
        return builder.inttoptr(args[0], context.get_value_type(types.CPointer(types.int64)))

    return signature, codegen


class AugmentationClock:
    """The (member key, epoch) cell that compiled augmentation code reads each batch."""

    def __init__(self, seed: int, member: int):
        member_key = np.random.SeedSequence([seed, member, 0xA06]).generate_state(1, np.uint64)[0]
        self.cell = np.array([member_key.view(np.int64), 0], dtype=np.int64)

    @property
    def address(self) -> int:
        return self.cell.ctypes.data

    def set_epoch(self, epoch: int) -> None:
        self.cell[1] = epoch

    def key(self, index: int, salt: int) -> np.uint64:
        """The stream key the compiled ops use for ``index`` now (for tests and references)."""
        key = sample_key(
            np.uint64(self.cell[0].view(np.uint64)), np.uint64(self.cell[1]), np.uint64(index), np.uint64(salt)
        )
        return np.uint64(key)  # numba hands back a Python int; keep it unsigned
