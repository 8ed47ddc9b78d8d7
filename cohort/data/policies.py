"""The named augmentation policies, each a list of seeded operations (``cohort.data.augment``).

Their names, order and strength range live in ``cohort.config.names``, which imports no
numba or FFCV, so that validating a config stays fast.
"""

from __future__ import annotations

from collections.abc import Callable

from cohort.config.names import ALL_POLICIES, STRENGTH_RANGE
from cohort.data.augment import (
    RANDAUGMENT_MAX_MAGNITUDE,
    ColorJitter,
    Cutout,
    Grayscale,
    Posterize,
    RandAugment,
    RandomFlip,
    RandomTranslate,
    Rotate,
    SeededImageOp,
    Solarize,
)
from cohort.data.randomness import AugmentationClock

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

assert sorted(POLICIES) == sorted(ALL_POLICIES), "cohort.config.names names every policy built here"


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
