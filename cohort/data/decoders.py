"""The ImageNet training decoder, seeded like every other augmentation of cohort, and the
progressive-resizing schedule of ffcv-imagenet.

FFCV's ``RandomResizedCropRGBImageDecoder`` draws its crop boxes from numba's unseeded
per-thread generator (ffcv #164, #392): a run that uses it cannot be repeated or resumed
exactly. ``SeededRandomResizedCrop`` draws the box as a pure function of (cohort seed,
view stream, epoch, sample index), through the same ``AugmentationClock`` and SplitMix64
streams as ``cohort.data.augment``, then decodes and resizes it to the current resolution
inside FFCV's compiled pipeline (FFCV's own JPEG decoder and resize, ``ffcv.libffcv``).

The box follows torchvision's ``RandomResizedCrop.get_params``: up to 10 draws of an area
fraction s ~ U[scale] and a log-uniform aspect ratio r in [ratio], w = round(√(s·A·r)),
h = round(√(s·A/r)), accepted when the box fits, at a uniform position; after 10 failures,
the largest centred box whose ratio is clamped to [ratio].
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numba
import numpy as np
from ffcv.fields.rgb_image import IMAGE_MODES, ResizedCropRGBImageDecoder
from ffcv.libffcv import imdecode, resize_crop
from ffcv.pipeline.compiler import Compiler

from cohort.data.randomness import AugmentationClock, int64_pointer, sample_key, uniform

CROP_SALT = 0xC40
"""The stream of the crop box, apart from every ``SeededImageOp``'s salt."""
ATTEMPTS = 10
"""Draws before the centre-crop fallback (torchvision's)."""


@numba.njit(cache=True)
def random_resized_box(
    height: int, width: int, key: np.uint64, scale_lo: float, scale_hi: float, ratio_lo: float, ratio_hi: float
) -> tuple[int, int, int, int]:
    """(top, left, box height, box width) of a random-resized crop of a ``height`` × ``width`` image."""
    area = height * width
    log_lo, log_hi = math.log(ratio_lo), math.log(ratio_hi)
    for attempt in range(ATTEMPTS):
        target = area * (scale_lo + (scale_hi - scale_lo) * uniform(key, 4 * attempt))
        aspect = math.exp(log_lo + (log_hi - log_lo) * uniform(key, 4 * attempt + 1))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(uniform(key, 4 * attempt + 2) * (height - h + 1))
            left = int(uniform(key, 4 * attempt + 3) * (width - w + 1))
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < ratio_lo:
        w, h = width, int(round(width / ratio_lo))
    elif in_ratio > ratio_hi:
        h, w = height, int(round(height * ratio_hi))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


@functools.cache
def compiled(routine: Callable) -> Callable:
    """One numba dispatcher per FFCV C routine in a process. The pipeline is compiled anew at
    each new resolution; fresh dispatchers of one function each time made numba's finalizers
    collide when the old ones were collected (a KeyError printed as "Exception ignored")."""
    return Compiler.compile(routine)


class SeededRandomResizedCrop(ResizedCropRGBImageDecoder):
    """FFCV decoder: a seeded random-resized crop of each image, resized to ``output_size``.

    Change ``output_size`` between epochs for progressive resizing; the loader then
    recompiles its pipeline (``cohort.data.loader.MemberLoader.epoch``)."""

    def __init__(self, clock: AugmentationClock, output_size: tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
        super().__init__(output_size)
        self.clock, self.scale, self.ratio = clock, scale, ratio

    @property
    def get_crop_generator(self):  # the abstract hook of FFCV's base class; the box comes from random_resized_box
        return None

    def box(self, height: int, width: int, index: int) -> tuple[int, int, int, int]:
        """The box the compiled decoder cuts from sample ``index`` in the clock's epoch (tests, references)."""
        key = self.clock.key(index, CROP_SALT)
        return random_resized_box(height, width, key, *self.scale, *self.ratio)

    def generate_code(self) -> Callable:
        jpg = IMAGE_MODES["jpg"]
        read = self.memory_read
        loop = Compiler.get_iterator()
        decode_jpeg, crop_and_resize = compiled(imdecode), compiled(resize_crop)
        address, salt = self.clock.address, np.uint64(CROP_SALT)
        scale_lo, scale_hi = float(self.scale[0]), float(self.scale[1])
        ratio_lo, ratio_hi = float(self.ratio[0]), float(self.ratio[1])

        def decode(batch_indices, my_storage, metadata, storage_state):
            destination, scratch = my_storage
            cell = numba.carray(int64_pointer(address), 2)
            stream, epoch = np.uint64(cell[0]), np.uint64(cell[1])
            for row in loop(len(batch_indices)):
                index = batch_indices[row]
                field = metadata[index]
                data = read(field["data_ptr"], storage_state)
                height, width = np.uint32(field["height"]), np.uint32(field["width"])
                if field["mode"] == jpg:
                    image = scratch[row]
                    decode_jpeg(data, image, height, width, height, width, 0, 0, 1, 1, False, False)
                    image = image.reshape(-1)[: 3 * height * width].reshape(height, width, 3)
                else:
                    image = data.reshape(height, width, 3)
                key = sample_key(stream, epoch, np.uint64(index), salt)
                top, left, h, w = random_resized_box(height, width, key, scale_lo, scale_hi, ratio_lo, ratio_hi)
                crop_and_resize(image, top, top + h, left, left + w, destination[row])
            return destination[: len(batch_indices)]

        decode.is_parallel = True
        return decode
