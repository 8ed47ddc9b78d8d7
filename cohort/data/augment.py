"""Augmentation policies built from index-seeded FFCV operations.

Every random decision is a pure function of (cohort seed, member, epoch, sample index,
operation): FFCV's own random ops draw from numba's unseeded per-thread generator, so
runs that use them cannot be repeated. Ours hash those five numbers with SplitMix64, so
a run is bit-identical whatever the number of loader threads, and each member (with its
own policy and seed) sees its own views of the same samples.

FFCV compiles a pipeline once, and numba freezes any array a compiled function captures;
the epoch therefore reaches compiled code through ``AugmentationClock``, a small array
that the compiled code reads by address and the loader updates before each epoch.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import numba
import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import types
from numba.extending import intrinsic

# --- counter-based randomness ----------------------------------------------------------


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
def _int64_pointer(typingctx, address):
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
        key = sample_key(np.uint64(self.cell[0].view(np.uint64)), np.uint64(self.cell[1]), np.uint64(index), np.uint64(salt))
        return np.uint64(key)  # numba hands back a Python int; keep it unsigned


# --- operations --------------------------------------------------------------------------


class SeededImageOp(Operation):
    """An FFCV image operation (HWC uint8 in, same shape out) with index-seeded randomness.

    Subclasses give ``kernel``: a jitted ``(src, dst, key, params) -> None`` that writes
    one augmented image, drawing its random numbers as ``uniform(key, 0)``, ``uniform(key, 1)``, ….
    """

    kernel: Callable = None

    def __init__(self, clock: AugmentationClock, salt: int, params: tuple[float, ...]):
        super().__init__()
        self.clock, self.salt = clock, salt
        self.params = np.asarray(params, dtype=np.float64)

    def generate_code(self) -> Callable:
        kernel, params = type(self).kernel, self.params
        address, salt = self.clock.address, np.uint64(self.salt)
        loop = Compiler.get_iterator()

        def apply(images, dst, indices):
            cell = numba.carray(_int64_pointer(address), 2)
            member_key, epoch = np.uint64(cell[0]), np.uint64(cell[1])
            for i in loop(images.shape[0]):
                kernel(images[i], dst[i], sample_key(member_key, epoch, np.uint64(indices[i]), salt), params)
            return dst

        apply.is_parallel = True
        apply.with_indices = True
        return apply

    def declare_state_and_memory(self, previous_state: State) -> tuple[State, AllocationQuery]:
        return replace(previous_state, jit_mode=True), AllocationQuery(previous_state.shape, previous_state.dtype)

    def apply_one(self, image: np.ndarray, index: int) -> np.ndarray:
        """Augment one HWC uint8 image as the compiled pipeline would (tests, debugging)."""
        out = np.empty_like(image)
        type(self).kernel(image, out, self.clock.key(index, self.salt), self.params)
        return out


@numba.njit(cache=True)
def _translate(src, dst, key, params):
    pad = int(params[0])
    height, width = src.shape[0], src.shape[1]
    dy = int(uniform(key, 0) * (2 * pad + 1)) - pad
    dx = int(uniform(key, 1) * (2 * pad + 1)) - pad
    for y in range(height):
        for x in range(width):
            sy, sx = y + dy, x + dx
            for c in range(src.shape[2]):
                dst[y, x, c] = src[sy, sx, c] if 0 <= sy < height and 0 <= sx < width else 0


class RandomTranslate(SeededImageOp):
    """Shift by up to ``pad`` pixels each way, filling with black (CIFAR's pad-and-crop)."""

    kernel = _translate

    def __init__(self, clock, salt, pad: int):
        super().__init__(clock, salt, (pad,))


@numba.njit(cache=True)
def _flip(src, dst, key, params):
    width = src.shape[1]
    flip = uniform(key, 0) < params[0]
    for y in range(src.shape[0]):
        for x in range(width):
            sx = width - 1 - x if flip else x
            for c in range(src.shape[2]):
                dst[y, x, c] = src[y, sx, c]


class RandomFlip(SeededImageOp):
    """Horizontal flip with probability ``p``."""

    kernel = _flip

    def __init__(self, clock, salt, p: float = 0.5):
        super().__init__(clock, salt, (p,))


@numba.njit(cache=True)
def _cutout(src, dst, key, params):
    size = int(params[0])
    height, width = src.shape[0], src.shape[1]
    cy, cx = int(uniform(key, 0) * height), int(uniform(key, 1) * width)
    y0, x0 = cy - size // 2, cx - size // 2
    for y in range(height):
        for x in range(width):
            inside = y0 <= y < y0 + size and x0 <= x < x0 + size
            for c in range(src.shape[2]):
                dst[y, x, c] = 0 if inside else src[y, x, c]


class Cutout(SeededImageOp):
    """Black out a ``size`` × ``size`` square centred anywhere in the image (clipped)."""

    kernel = _cutout

    def __init__(self, clock, salt, size: int):
        super().__init__(clock, salt, (size,))


@numba.njit(cache=True)
def _color(src, dst, key, params):
    brightness = 1.0 + params[0] * (2.0 * uniform(key, 0) - 1.0)
    contrast = 1.0 + params[1] * (2.0 * uniform(key, 1) - 1.0)
    saturation = 1.0 + params[2] * (2.0 * uniform(key, 2) - 1.0)
    height, width = src.shape[0], src.shape[1]
    # Contrast blends towards the mean grey level of the brightness-adjusted image.
    mean_grey = 0.0
    for y in range(height):
        for x in range(width):
            mean_grey += brightness * (0.299 * src[y, x, 0] + 0.587 * src[y, x, 1] + 0.114 * src[y, x, 2])
    mean_grey /= height * width
    for y in range(height):
        for x in range(width):
            r = brightness * src[y, x, 0]
            g = brightness * src[y, x, 1]
            b = brightness * src[y, x, 2]
            r = mean_grey + contrast * (r - mean_grey)
            g = mean_grey + contrast * (g - mean_grey)
            b = mean_grey + contrast * (b - mean_grey)
            grey = 0.299 * r + 0.587 * g + 0.114 * b
            r = grey + saturation * (r - grey)
            g = grey + saturation * (g - grey)
            b = grey + saturation * (b - grey)
            dst[y, x, 0] = np.uint8(min(max(np.round(r), 0.0), 255.0))
            dst[y, x, 1] = np.uint8(min(max(np.round(g), 0.0), 255.0))
            dst[y, x, 2] = np.uint8(min(max(np.round(b), 0.0), 255.0))


class ColorJitter(SeededImageOp):
    """Random brightness, contrast and saturation factors in [1 − s, 1 + s]."""

    kernel = _color

    def __init__(self, clock, salt, brightness: float, contrast: float, saturation: float):
        super().__init__(clock, salt, (brightness, contrast, saturation))


# --- policies -----------------------------------------------------------------------------

# A policy maps (clock, image size) to its operations, in order. Salts number the ops so
# that two ops of one policy draw independent streams.
POLICIES: dict[str, Callable[[AugmentationClock, int], list[SeededImageOp]]] = {
    "none": lambda clock, size: [],
    "crop": lambda clock, size: [RandomTranslate(clock, 1, pad=size // 8)],
    "standard": lambda clock, size: [RandomTranslate(clock, 1, pad=size // 8), RandomFlip(clock, 2)],
    "standard_cutout": lambda clock, size: [
        RandomTranslate(clock, 1, pad=size // 8),
        RandomFlip(clock, 2),
        Cutout(clock, 3, size=size // 4),
    ],
    "color": lambda clock, size: [
        ColorJitter(clock, 4, 0.4, 0.4, 0.4),
        RandomTranslate(clock, 1, pad=size // 8),
        RandomFlip(clock, 2),
    ],
}


def build_policy(name: str, clock: AugmentationClock, image_size: int) -> list[SeededImageOp]:
    """The operations of policy ``name``; an unknown name lists the valid ones."""
    if name not in POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; valid: {', '.join(POLICIES)}")
    return POLICIES[name](clock, image_size)
