"""Pixel routines of the augmentations (numba-compiled, on one HWC uint8 image)."""

from __future__ import annotations

import math

import numba
import numpy as np

# Shared by the single-purpose ops of cohort.data.augment and by RandAugment, which chains
# several on one image. Each writes ``dst`` from ``src``; the pointwise ones read a pixel
# before writing it, so RandAugment can run them in place (``dst is src``).


@numba.njit(cache=True)
def shift(src, dst, dy, dx):
    height, width = src.shape[0], src.shape[1]
    for y in range(height):
        for x in range(width):
            sy, sx = y + dy, x + dx
            for c in range(src.shape[2]):
                dst[y, x, c] = src[sy, sx, c] if 0 <= sy < height and 0 <= sx < width else 0


@numba.njit(cache=True)
def erase(src, dst, cy, cx, size):
    height, width = src.shape[0], src.shape[1]
    y0, x0 = cy - size // 2, cx - size // 2
    for y in range(height):
        for x in range(width):
            inside = y0 <= y < y0 + size and x0 <= x < x0 + size
            for c in range(src.shape[2]):
                dst[y, x, c] = 0 if inside else src[y, x, c]


@numba.njit(cache=True)
def rotate_by(src, dst, degrees):
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
def desaturate(src, dst, amount):
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
def solarize_pixels(src, dst, threshold):
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                v = src[y, x, c]
                dst[y, x, c] = 255 - v if v >= threshold else v


@numba.njit(cache=True)
def posterize_pixels(src, dst, bits):
    mask = np.uint8((0xFF << (8 - bits)) & 0xFF)
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                dst[y, x, c] = src[y, x, c] & mask


@numba.njit(cache=True)
def scale_contrast(src, dst, factor):
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
def scale_brightness(src, dst, factor):
    for y in range(src.shape[0]):
        for x in range(src.shape[1]):
            for c in range(src.shape[2]):
                dst[y, x, c] = np.uint8(min(max(np.round(factor * src[y, x, c]), 0.0), 255.0))
