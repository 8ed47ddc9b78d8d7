"""The augmentation policies' names, their order from mildest to strongest, and strengths.

Config validation reads these, so this module imports nothing heavy (no numba, FFCV or
torch); the policies themselves, FFCV operations, are built in ``cohort.data.augment``.
"""

from __future__ import annotations

POLICY_ORDER: tuple[str, ...] = (
    "none",
    "crop",
    "standard",
    "gray",
    "posterize",
    "rotate",
    "color",
    "standard_cutout",
    "solarize",
    "randaugment",
)
"""Every policy, from the mildest to the strongest (at equal strength)."""

EXTRA_POLICIES: tuple[str, ...] = ("flip",)
"""Policies outside the mild-to-strong order (``policies: auto`` never picks them): ``flip``
alone follows ImageNet's random-resized crop (``data.random_resized_crop``)."""
ALL_POLICIES = POLICY_ORDER + EXTRA_POLICIES
CROP_FREE_POLICIES = ("none", "flip")
"""The policies that do not crop: those that may follow a random-resized crop."""

STRENGTH_RANGE = (0.0, 2.0)
"""Valid policy strengths: 0 is no augmentation, 1 each policy's default, 2 the strongest."""


def auto_policies(num_members: int) -> list[str]:
    """``num_members`` distinct policies spread evenly over ``POLICY_ORDER``.

    With two or more members the first gets the mildest policy and the last the strongest;
    a lone member gets the middle one.
    """
    available = len(POLICY_ORDER)
    if num_members < 1:
        raise ValueError(f"policies: auto needs at least one member, got {num_members}")
    if num_members > available:
        raise ValueError(
            f"policies: auto has {num_members} members but only {available} policies exist; name each member's policy"
        )
    if num_members == 1:
        return [POLICY_ORDER[(available - 1) // 2]]
    # Round i·(M − 1)/(N − 1) half up in integers: steps of at least 1 stay distinct.
    span, gaps = available - 1, num_members - 1
    return [POLICY_ORDER[(2 * i * span + gaps) // (2 * gaps)] for i in range(num_members)]
