"""Index-seeded FFCV augmentation operations: each random decision drawn from the sample's
own stream (``cohort.data.randomness``), so a run is repeatable and resumable bit for bit.
The named policies that combine them are ``cohort.data.policies``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numba
import numpy as np
from ffcv.pipeline.allocation_query import AllocationQuery
from ffcv.pipeline.compiler import Compiler
from ffcv.pipeline.operation import Operation
from ffcv.pipeline.state import State

from cohort.data.pixels import (
    desaturate,
    erase,
    posterize_pixels,
    rotate_by,
    scale_brightness,
    scale_contrast,
    shift,
    solarize_pixels,
)
from cohort.data.randomness import AugmentationClock, int64_pointer, sample_key, uniform

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
            cell = numba.carray(int64_pointer(address), 2)
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


# --- augmentations -----------------------------------------------------------------------


@numba.njit(cache=True)
def _translate(src, dst, key, params):
    pad = int(params[0])
    dy = int(uniform(key, 0) * (2 * pad + 1)) - pad
    dx = int(uniform(key, 1) * (2 * pad + 1)) - pad
    shift(src, dst, dy, dx)


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
    erase(src, dst, cy, cx, size)


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
        desaturate(src, dst, 1.0)
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
        solarize_pixels(src, dst, params[1])
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
        posterize_pixels(src, dst, int(params[1]))
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
    rotate_by(src, dst, params[0] * (2.0 * uniform(key, 0) - 1.0))


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
        rotate_by(image, scratch, sign * 30.0 * level)
        image[:] = scratch
    elif kind == _RA_SOLARIZE:
        solarize_pixels(image, image, 256.0 * (1.0 - level))
    elif kind == _RA_POSTERIZE:
        posterize_pixels(image, image, 8 - int(4.0 * level + 0.5))
    elif kind == _RA_GRAYSCALE:
        desaturate(image, image, level)
    elif kind == _RA_CONTRAST:
        scale_contrast(image, image, 1.0 + sign * 0.9 * level)
    elif kind == _RA_BRIGHTNESS:
        scale_brightness(image, image, 1.0 + sign * 0.9 * level)
    elif kind == _RA_CUTOUT:
        size = int(level * min(height, width) / 2.0 + 0.5)
        cy, cx = int(uniform(key, draw) * height), int(uniform(key, draw + 1) * width)
        erase(image, image, cy, cx, size)
    elif kind == _RA_TRANSLATE:
        if uniform(key, draw + 1) < 0.5:
            shift(image, scratch, 0, int(sign * int(0.3 * level * width + 0.5)))
        else:
            shift(image, scratch, int(sign * int(0.3 * level * height + 0.5)), 0)
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
