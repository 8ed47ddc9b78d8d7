"""The model zoo: CIFAR-style networks, torchvision's ImageNet models, a small demo CNN.

``build_model`` returns the network behind a ``Normalize`` layer, because loaders hand
over [0, 1] images (see ``cohort.data.loader``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cohort.config.names import (
    ARCHITECTURE_NAMES,
    TORCHVISION_PREFIX,
    WRN_PATTERN,
    is_known_architecture,
)
from cohort.models.batch_ensemble import DEFAULT_FACTOR_INIT, BatchEnsemble, FactorInit, factor_init
from cohort.models.cifar_resnet import cifar_resnet, cifar_stem_resnet
from cohort.models.lenet import LeNet5
from cohort.models.mobilenetv2 import MobileNetV2
from cohort.models.official_resnets import PreActResNet, bottleneck_resnet, cifar_stem_resnet50
from cohort.models.small_cnn import SmallCNN
from cohort.models.wide_resnet import WideResNet

ARCHITECTURES: dict[str, Callable[[int], nn.Module]] = {
    "small_cnn": SmallCNN,
    "small_cnn16": lambda c: SmallCNN(c, width=16),  # a quarter of small_cnn's weights: digits' students
    "lenet5": LeNet5,  # uncertainty-baselines' (Fashion-)MNIST network, 28×28 inputs
    **{f"resnet{d}": (lambda c, d=d: cifar_resnet(d, c)) for d in (20, 32, 44, 56, 110)},
    "resnet18": lambda c: cifar_stem_resnet((2, 2, 2, 2), c),
    "resnet34": lambda c: cifar_stem_resnet((3, 4, 6, 3), c),
    "resnet50": cifar_stem_resnet50,  # Diff-DML's (Luminova1996/Diff-DML): the CIFAR stem, bottleneck blocks
    # The official code's networks of CS-KD (alinlab/cs-kd) and MDCA (mdca-loss/MDCA-Calibration).
    "preact_resnet18": lambda c: PreActResNet((2, 2, 2, 2), c),
    "resnet56_bottleneck": lambda c: bottleneck_resnet(56, c),
    "mobilenetv2": MobileNetV2,
    # WRN-depth-width; any wrn<depth>_<width> with depth = 6n + 4 works.
    "wrn28_2": lambda c: WideResNet(28, 2, c),
    "wrn28_10": lambda c: WideResNet(28, 10, c),
}
# Config validation checks names against cohort.config.names, which imports no torch.
assert tuple(ARCHITECTURES) == ARCHITECTURE_NAMES, "cohort.config.names names every architecture built here, in order"


class Normalize(nn.Module):
    """Per-channel (x − mean) / std on [0, 1] images."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class BlurPoolConv2d(nn.Module):
    """A strided convolution that first blurs its input with the 3×3 binomial filter
    [1, 2, 1]ᵀ[1, 2, 1]/16, channel by channel (BlurPool, Zhang, ICML 2019), as
    ffcv-imagenet's ``BlurPoolConv2d`` does."""

    def __init__(self, conv: nn.Conv2d):
        super().__init__()
        binomial = torch.tensor([1.0, 2.0, 1.0])
        kernel = (binomial[:, None] * binomial[None, :]) / 16.0
        self.conv = conv
        self.register_buffer("blur", kernel.expand(conv.in_channels, 1, 3, 3).clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        blurred = torch.nn.functional.conv2d(x, self.blur.to(x.dtype), padding=1, groups=self.conv.in_channels)
        return self.conv(blurred)


def add_blurpool(net: nn.Module) -> nn.Module:
    """Wrap every strided convolution of at least 16 input channels in ``BlurPoolConv2d``
    (ffcv-imagenet's rule: the stem's 3-channel convolution stays as it is)."""
    for name, child in net.named_children():
        if isinstance(child, nn.Conv2d) and max(child.stride) > 1 and child.in_channels >= 16:
            setattr(net, name, BlurPoolConv2d(child))
        else:
            add_blurpool(child)
    return net


def build_model(
    arch: str,
    num_classes: int,
    mean: Sequence[float],
    std: Sequence[float],
    blurpool: bool = False,
    batch_ensemble: int = 1,
    factor_init: FactorInit = DEFAULT_FACTOR_INIT,
) -> nn.Module:
    """``Normalize`` followed by network ``arch`` with ``num_classes`` outputs (``blurpool``:
    its strided convolutions blurred first, ``add_blurpool``); with ``batch_ensemble`` n > 1,
    that network as n internal members (``BatchEnsemble``: logits ``[n, B, C]``), its factors
    drawn after the shared weights, so the shared weights are those of the plain network."""
    if arch in ARCHITECTURES:
        net = ARCHITECTURES[arch](num_classes)
    elif match := WRN_PATTERN.match(arch):
        net = WideResNet(int(match[1]), int(match[2]), num_classes)
    elif arch.startswith(TORCHVISION_PREFIX) and is_known_architecture(arch):
        import torchvision

        net = torchvision.models.get_model(arch[len(TORCHVISION_PREFIX) :], weights=None, num_classes=num_classes)
    else:
        raise ValueError(f"unknown architecture {arch!r}; valid: {', '.join(ARCHITECTURES)}, or tv.<torchvision model>")
    model = nn.Sequential(Normalize(mean, std), add_blurpool(net) if blurpool else net)
    return BatchEnsemble(model, batch_ensemble, factor_init) if batch_ensemble > 1 else model


def member_network(config, member: int, meta: dict) -> nn.Module:
    """Member ``member``'s network as the config builds it (a ``CohortConfig``): its architecture,
    BlurPool and BatchEnsemble size, behind the data's input scaling (``meta``: the data folder's
    ``meta.json``). Its weights are drawn from torch's global generator: seed it first."""
    own = config.members[member]
    return build_model(
        own.arch,
        meta["num_classes"],
        *config.data.input_statistics(meta),
        blurpool=own.blurpool,
        batch_ensemble=own.batch_ensemble,
        factor_init=factor_init(config.batch_ensemble),
    )
