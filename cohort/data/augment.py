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

import math
from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State
from numba import types
from numba.extending import intrinsic

from cohort.data.policies import ALL_POLICIES, POLICY_ORDER, STRENGTH_RANGE, auto_policies  # noqa: F401 (re-exported)

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
        key = sample_key(
            np.uint64(self.cell[0].view(np.uint64)), np.uint64(self.cell[1]), np.uint64(index), np.uint64(salt)
        )
        return np.uint64(key)  # numba hands back a Python int; keep it unsigned


# --- seeded operations -------------------------------------------------------------------


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


# --- pixel routines ----------------------------------------------------------------------
# Shared by the single-purpose ops below and by RandAugment, which chains several on one
# image. Each writes ``dst`` from ``src``; the pointwise ones read a pixel before writing
# it, so RandAugment can run them in place (``dst is src``).


@numba.njit(cache=True)
def _shift(src, dst, dy, dx):
    height, width = src.shape[0], src.shape[1]
    for y in range(height):
        for x in range(width):
            sy, sx = y + dy, x + dx
            for c in range(src.shape[2]):
                dst[y, x, c] = src[sy, sx, c] if 0 <= sy < height and 0 <= sx < width else 0


@numba.njit(cache=True)
def _erase(src, dst, cy, cx, size):
    height, width = src.shape[0], src.shape[1]
    y0, x0 = cy - size // 2, cx - size // 2
    for y in range(height):
        for x in range(width):
            inside = y0 <= y < y0 + size and x0 <= x < x0 + size
            for c in range(src.shape[2]):
                dst[y, x, c] = 0 if inside else src[y, x, c]


@numba.njit(cache=True)
def _rotate_by(src, dst, degrees):
    height, width = src.shape[0], src.shape[1]
    theta = degrees * np.pi / 180.0
    cos_t, sin_t = math.cos(theta), math.sin(theta)
    cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
    for y in range(height):
        for x in range(width):
            # Map each output pixel back to the source so that every output pixel is set.
            sx = cos_t * (x - cx) + sin_t * (y - cy) + cx
            sy = cos_t * (y - cy) - sin_t * (x - cx) + cy
            iy, ix = int(math.floor(sy + 0.5)), int(math.floor(sx + 0.5))
            inside = 0 <= iy < height and 0 <= ix < width
            for c in range(src.shape[2]):
                dst[y, x, c] = src[iy, ix, c] if inside else 0


@numba.njit(cache=True)
def _desaturate(src, dst, amount):
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            r, g, b = src[y, x, 0], src[y, x, 1], src[y, x, 2]
            luma = 0.299 * r + 0.587 * g + 0.114 * b
            # Written as a two-sided blend so that amount 0 and 1 give exactly the
            # original and exactly the luma.
            dst[y, x, 0] = np.uint8(np.round((1.0 - amount) * r + amount * luma))
            dst[y, x, 1] = np.uint8(np.round((1.0 - amount) * g + amount * luma))
            dst[y, x, 2] = np.uint8(np.round((1.0 - amount) * b + amount * luma))


@numba.njit(cache=True)
def _solarize_pixels(src, dst, threshold):
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                v = src[y, x, c]
                dst[y, x, c] = 255 - v if v >= threshold else v


@numba.njit(cache=True)
def _posterize_pixels(src, dst, bits):
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                dst[y, x, c] = src[y, x, c] & mask


@numba.njit(cache=True)
def _scale_contrast(src, dst, factor):
    height, width = src.shape[0], src.shape[1]
    # Integer channel sums make the mean independent of summation order.
    sum_r, sum_g, sum_b = 0, 0, 0
    for y in range(height):
        for x in range(width):
            sum_r += src[y, x, 0]
            sum_g += src[y, x, 1]
            sum_b += src[y, x, 2]
    mean_grey = (0.299 * sum_r + 0.587 * sum_g + 0.114 * sum_b) / (height * width)
    for y in range(height):
        for x in range(width):
            for c in range(src.shape[2]):
                v = mean_grey + factor * (src[y, x, c] - mean_grey)
                dst[y, x, c] = np.uint8(min(max(np.round(v), 0.0), 255.0))


@numba.njit(cache=True)
def _scale_brightness(src, dst, factor):
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                dst[y, x, c] = np.uint8(min(max(np.round(factor * src[y, x, c]), 0.0), 255.0))


# --- augmentations -----------------------------------------------------------------------


@numba.njit(cache=True)
def _translate(src, dst, key, params):
    pad = int(params[0])
    dy = int(uniform(key, 0) * (2 * pad + 1)) - pad
    dx = int(uniform(key, 1) * (2 * pad + 1)) - pad
    _shift(src, dst, dy, dx)


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
    cy, cx = int(uniform(key, 0) * src.shape[0]), int(uniform(key, 1) * src.shape[1])
    _erase(src, dst, cy, cx, size)


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


@numba.njit(cache=True)
def _grayscale(src, dst, key, params):
    if uniform(key, 0) < params[0]:
        _desaturate(src, dst, 1.0)
    else:
        dst[:] = src


class Grayscale(SeededImageOp):
    """With probability ``p``, set all three channels to the rounded luma 0.299 R + 0.587 G + 0.114 B."""

    kernel = _grayscale

    def __init__(self, clock, salt, p: float):
        super().__init__(clock, salt, (p,))


@numba.njit(cache=True)
def _solarize(src, dst, key, params):
    if uniform(key, 0) < params[0]:
        _solarize_pixels(src, dst, params[1])
    else:
        dst[:] = src


class Solarize(SeededImageOp):
    """With probability ``p``, invert (255 − v) every channel value v >= ``threshold``.

    A threshold above 255 inverts nothing; 0 inverts the whole image.
    """

    kernel = _solarize

    def __init__(self, clock, salt, p: float, threshold: float):
        super().__init__(clock, salt, (p, threshold))


@numba.njit(cache=True)
def _posterize(src, dst, key, params):
    if uniform(key, 0) < params[0]:
        _posterize_pixels(src, dst, int(params[1]))
    else:
        dst[:] = src


class Posterize(SeededImageOp):
    """With probability ``p``, keep only the top ``bits`` bits (0 to 8) of every channel value."""

    kernel = _posterize

    def __init__(self, clock, salt, p: float, bits: int):
        if not 0 <= bits <= 8:
            raise ValueError(f"Posterize bits must be in [0, 8], got {bits}")
        super().__init__(clock, salt, (p, bits))


@numba.njit(cache=True)
def _rotate(src, dst, key, params):
    _rotate_by(src, dst, params[0] * (2.0 * uniform(key, 0) - 1.0))


class Rotate(SeededImageOp):
    """Rotate about the image centre by an angle uniform in [−``max_degrees``, ``max_degrees``].

    Nearest-neighbour sampling; pixels that come from outside the image are black.
    Positive angles turn the picture clockwise as displayed (rows run downwards).
    """

    kernel = _rotate

    def __init__(self, clock, salt, max_degrees: float):
        super().__init__(clock, salt, (max_degrees,))


# RandAugment's op kinds, in the order its choice draw indexes them.
RANDAUGMENT_OPS = (
    "identity",
    "rotate",
    "solarize",
    "posterize",
    "grayscale",
    "contrast",
    "brightness",
    "cutout",
    "translate",
)
(
    _RA_IDENTITY,
    _RA_ROTATE,
    _RA_SOLARIZE,
    _RA_POSTERIZE,
    _RA_GRAYSCALE,
    _RA_CONTRAST,
    _RA_BRIGHTNESS,
    _RA_CUTOUT,
    _RA_TRANSLATE,
) = range(len(RANDAUGMENT_OPS))
_RA_KINDS = len(RANDAUGMENT_OPS)
RANDAUGMENT_MAX_MAGNITUDE = 10.0
# Draw 3s picks the kind of step s; draws 3s + 1 and 3s + 2 are that step's own.
_RA_DRAWS_PER_STEP = 3


@numba.njit(cache=True)
def _randaugment_step(image, scratch, kind, level, key, draw):
    height, width = image.shape[0], image.shape[1]
    sign = 1.0 if uniform(key, draw) < 0.5 else -1.0
    if kind == _RA_ROTATE:
        _rotate_by(image, scratch, sign * 30.0 * level)
        image[:] = scratch
    elif kind == _RA_SOLARIZE:
        _solarize_pixels(image, image, 256.0 * (1.0 - level))
    elif kind == _RA_POSTERIZE:
        _posterize_pixels(image, image, 8 - int(4.0 * level + 0.5))
    elif kind == _RA_GRAYSCALE:
        _desaturate(image, image, level)
    elif kind == _RA_CONTRAST:
        _scale_contrast(image, image, 1.0 + sign * 0.9 * level)
    elif kind == _RA_BRIGHTNESS:
        _scale_brightness(image, image, 1.0 + sign * 0.9 * level)
    elif kind == _RA_CUTOUT:
        size = int(level * min(height, width) / 2.0 + 0.5)
        cy, cx = int(uniform(key, draw) * height), int(uniform(key, draw + 1) * width)
        _erase(image, image, cy, cx, size)
    elif kind == _RA_TRANSLATE:
        if uniform(key, draw + 1) < 0.5:
            _shift(image, scratch, 0, int(sign * int(0.3 * level * width + 0.5)))
        else:
            _shift(image, scratch, int(sign * int(0.3 * level * height + 0.5)), 0)
        image[:] = scratch


@numba.njit(cache=True)
def _randaugment(src, dst, key, params):
    steps, level = int(params[0]), params[1] / RANDAUGMENT_MAX_MAGNITUDE
    dst[:] = src
    # Rotation and translation cannot work in place; one small buffer per image serves both.
    scratch = np.empty_like(dst)
    for step in range(steps):
        draw = _RA_DRAWS_PER_STEP * step
        kind = int(uniform(key, draw) * _RA_KINDS)
        _randaugment_step(dst, scratch, kind, level, key, draw + 1)


class RandAugment(SeededImageOp):
    """RandAugment: ``n`` steps, each an op kind drawn uniformly (with replacement) from
    ``RANDAUGMENT_OPS`` and applied at one shared ``magnitude`` in [0, 10].

    With level = magnitude / 10, the kinds do (± is a fair coin per step):

    - identity: nothing;
    - rotate: by ±30·level degrees (as ``Rotate``);
    - solarize: invert values >= 256·(1 − level);
    - posterize: keep 8 − round(4·level) bits;
    - grayscale: blend each channel towards the luma by the fraction ``level``;
    - contrast: scale deviations from the mean grey by 1 ± 0.9·level;
    - brightness: scale values by 1 ± 0.9·level;
    - cutout: black out a square of side round(level · shorter side / 2), centred anywhere;
    - translate: shift by ±round(0.3·level·side) pixels along a random axis, filling with black.

    Magnitude 0 is the identity whatever the steps drawn.
    """

    kernel = _randaugment

    def __init__(self, clock, salt, n: int, magnitude: float):
        if n < 0 or not 0 <= magnitude <= RANDAUGMENT_MAX_MAGNITUDE:
            raise ValueError(f"RandAugment needs n >= 0 and magnitude in [0, 10], got n={n}, magnitude={magnitude}")
        super().__init__(clock, salt, (n, magnitude))


# --- policies ----------------------------------------------------------------------------
# Their names, order and strength range live in cohort.data.policies, which imports no
# numba or FFCV, so that validating a config stays fast.

Policy = Callable[[AugmentationClock, int, float], list[SeededImageOp]]


def _crop(clock: AugmentationClock, size: int, strength: float) -> RandomTranslate:
    return RandomTranslate(clock, 1, pad=round(size // 8 * strength))


def _flip(clock: AugmentationClock, strength: float) -> RandomFlip:
    # Beyond one half, flipping would make the mirrored view the usual one: no stronger.
    return RandomFlip(clock, 2, p=0.5 * min(strength, 1.0))


def _chance(p: float, strength: float) -> float:
    return min(p * strength, 1.0)


# A policy maps (clock, image size, strength) to its operations, in order. Salts number
# the ops so that two ops of one policy draw independent streams. Strength scales every
# magnitude and probability linearly (capped where the op saturates), except the solarize
# threshold, which halves per unit of strength.
POLICIES: dict[str, Policy] = {
    "none": lambda clock, size, s: [],
    "crop": lambda clock, size, s: [_crop(clock, size, s)],
    "standard": lambda clock, size, s: [_crop(clock, size, s), _flip(clock, s)],
    "standard_cutout": lambda clock, size, s: [
        _crop(clock, size, s),
        _flip(clock, s),
        Cutout(clock, 3, size=round(size // 4 * s)),
    ],
    "color": lambda clock, size, s: [
        ColorJitter(clock, 4, 0.4 * s, 0.4 * s, 0.4 * s),
        _crop(clock, size, s),
        _flip(clock, s),
    ],
    "gray": lambda clock, size, s: [_crop(clock, size, s), Grayscale(clock, 5, p=_chance(0.5, s))],
    "solarize": lambda clock, size, s: [
        _crop(clock, size, s),
        _flip(clock, s),
        Solarize(clock, 6, p=_chance(0.5, s), threshold=256.0 / 2.0**s),
    ],
    "posterize": lambda clock, size, s: [
        _crop(clock, size, s),
        _flip(clock, s),
        Posterize(clock, 7, p=_chance(0.5, s), bits=max(8 - round(4 * s), 1)),
    ],
    "rotate": lambda clock, size, s: [Rotate(clock, 8, max_degrees=15.0 * s), _crop(clock, size, s)],
    "randaugment": lambda clock, size, s: [
        _crop(clock, size, s),
        _flip(clock, s),
        RandAugment(clock, 9, n=2, magnitude=min(9.0 * s, RANDAUGMENT_MAX_MAGNITUDE)),
    ],
    "flip": lambda clock, size, s: [_flip(clock, s)],  # after data.random_resized_crop (EXTRA_POLICIES)
}

assert sorted(POLICIES) == sorted(ALL_POLICIES), "cohort.data.policies names every policy built here"


def build_policy(name: str, clock: AugmentationClock, image_size: int, strength: float = 1.0) -> list[SeededImageOp]:
    """The operations of policy ``name`` at ``strength`` (see ``STRENGTH_RANGE``).

    An unknown name lists the valid ones; a strength outside the range names it.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown augmentation policy {name!r}; valid: {', '.join(POLICIES)}")
    low, high = STRENGTH_RANGE
    if not low <= strength <= high:
        raise ValueError(f"augmentation strength must be in [{low}, {high}], got {strength}")
    return POLICIES[name](clock, image_size, strength)
