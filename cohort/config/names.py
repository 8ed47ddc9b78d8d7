"""The names a config is checked against, without importing torch, numba or FFCV: the model
zoo's architectures, the augmentation policies, the evaluation metrics.

Config validation (``members.<i>.arch``, ``members.<i>.policy``, ``train.select_by``) reads
these, so that ``cohort train`` and ``cohort submit`` check a config in a fraction of a
second (importing torch takes about 1.5 s). The parts that implement the names assert that
they implement exactly these: ``cohort.models`` builds ``ARCHITECTURE_NAMES``,
``cohort.data.augment`` builds ``ALL_POLICIES``, ``cohort.evaluate.metrics`` computes ``METRICS``.
"""

from __future__ import annotations

import re

# --- architectures ------------------------------------------------------------------------

ARCHITECTURE_NAMES: tuple[str, ...] = (
    "small_cnn",
    "small_cnn16",
    "lenet5",
    "resnet20",
    "resnet32",
    "resnet44",
    "resnet56",
    "resnet110",
    "resnet18",
    "resnet34",
    "resnet50",
    "preact_resnet18",
    "resnet56_bottleneck",
    "mobilenetv2",
    "wrn28_2",
    "wrn28_10",
)
"""The named architectures, in the order error messages list them."""
FIXED_INPUT_ARCHITECTURES = ("lenet5",)
"""Named architectures that take images of one size only (``lenet5``: 28 px): the pre-launch
check passes them an image of the data's size (``cohort.preflight.check_input_size``)."""
WRN_PATTERN = re.compile(r"wrn(\d+)_(\d+)$")
"""Any WRN-depth-width as ``wrn<depth>_<width>`` (depth = 6n + 4), besides the named ones."""
TORCHVISION_PREFIX = "tv."
"""``tv.<name>``: any model of ``torchvision.models``."""


def is_known_architecture(arch: str) -> bool:
    """Whether ``cohort.models.build_model`` builds ``arch``. Only a ``tv.`` name imports
    torchvision (and with it torch): its list of models is torchvision's own."""
    if arch in ARCHITECTURE_NAMES or WRN_PATTERN.match(arch):
        return True
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        return arch[len(TORCHVISION_PREFIX) :] in torchvision.models.list_models(module=torchvision.models)
    return False


# --- augmentation policies ---------------------------------------------------------------

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


# --- metrics ---------------------------------------------------------------------------------

METRICS = ("acc", "nll", "brier", "ece", "cw_ece", "adaece", "mce", "full_ece")
LOWER_IS_BETTER = {"nll", "brier", "ece", "cw_ece", "adaece", "mce", "full_ece", "pairwise_kl"}
SELECTABLE = (*METRICS, *(f"c_{m}" for m in METRICS))
"""What ``train.select_by`` may select on: each metric, before and after temperature scaling."""
