"""The model zoo's architecture names and which names are valid, without importing torch.

Config validation (``members.<i>.arch``) reads these, so that ``cohort train`` and
``cohort submit`` check a config without importing torch (about 1.5 s). ``cohort.models``
builds the networks and asserts that it builds exactly ``ARCHITECTURE_NAMES``.
"""

from __future__ import annotations

import re

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
