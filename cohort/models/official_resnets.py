"""The ResNet variants of two papers' official code, for configs that follow their recipes.

- ``preact_resnet18``: CS-KD's network (Yun et al., CVPR 2020; alinlab/cs-kd
  ``models/resnet.py``, ``CIFAR_ResNet18``), a pre-activation ResNet-18 with a 3×3 stride-1
  stem; 11,217,444 parameters for 100 classes, as theirs. cohort's ``resnet18`` is the
  post-activation ResNet-18 of DML's CIFAR experiments.
- ``resnet56_bottleneck``: MDCA's ResNet-56 (Hebbalaguppe et al., CVPR 2022;
  mdca-loss/MDCA-Calibration ``models/resnet.py``, ``resnet56``: the ``bottleneck`` block,
  depth 9n + 2), 614,452 parameters for 100 classes, as theirs. cohort's ``resnet56`` is He
  et al.'s basic-block ResNet-56 (6n + 2).
- ``resnet50``: Diff-DML's primary (Luminova1996/Diff-DML ``model/resnet.py``, ``resnet50``
  L276-278: ``ResNet(Bottleneck, [3, 4, 6, 3])``, L95-126), a bottleneck ResNet-50 with a 3×3
  stride-1 stem and no max-pool (torchvision's ``tv.resnet50`` has ImageNet's 7×7 stride-2 stem
  and max-pool); 23,705,252 parameters for 100 classes, as theirs. Its ``resnet18`` and
  ``resnet34`` (L266-273) are cohort's.

Written from the papers' descriptions and the official code's structure; ``tests/models/test_models.py``
checks the parameter and layer counts against the official networks'.
"""

from torch import nn

from cohort.models.cifar_resnet import ResNet


class PreActBlock(nn.Module):
    """BN-ReLU-conv twice (He et al., "Identity Mappings in Deep Residual Networks", 2016).

    As in alinlab/cs-kd's ``PreActBlock``, the shortcut reads the pre-activated input
    relu(bn1(x)) whether it is the identity or a 1×1 projection (without BN): He et al.'s
    identity shortcut carries x itself, CS-KD's network does not, and the configs that name
    this network follow CS-KD."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        projects = stride != 1 or c_in != c_out
        self.shortcut = nn.Conv2d(c_in, c_out, 1, stride, bias=False) if projects else nn.Identity()

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        return self.conv2(self.relu(self.bn2(self.conv1(pre)))) + self.shortcut(pre)


class PreActResNet(nn.Module):
    """CS-KD's ``CIFAR_ResNet``: conv3×3(64)-BN-ReLU stem, four stages of pre-activation
    blocks (64, 128, 256, 512 channels; stride 2 from the second), global average pooling and
    a linear layer, with no BN-ReLU after the last block (the official network has none).
    PyTorch's default initialisation, as the official network keeps. The official code pools
    with a fixed 4×4 window, global for 32×32 inputs; this one pools globally at any size."""

    def __init__(self, blocks, num_classes: int):
        super().__init__()
        widths = (64, 128, 256, 512)
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True))
        layers, c_in = [], widths[0]
        for stage, (width, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(PreActBlock(c_in, width, 2 if stage > 0 and b == 0 else 1))
                c_in = width
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


class Bottleneck(nn.Module):
    """conv1×1-BN-ReLU, conv3×3(stride)-BN-ReLU, conv1×1 (×4 channels)-BN, added to the
    shortcut, then ReLU (post-activation); the shortcut is a 1×1 projection with BN where the
    shape changes (the first block of every stage, since the block widens its input ×4)."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int):
        super().__init__()
        c_out = planes * self.expansion
        self.residual = nn.Sequential(
            nn.Conv2d(c_in, planes, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, 3, stride, 1, bias=False),
            nn.BatchNorm2d(planes),
            nn.ReLU(inplace=True),
            nn.Conv2d(planes, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x):
        return self.relu(self.residual(x) + self.shortcut(x))


def bottleneck_resnet(depth: int, num_classes: int) -> ResNet:
    """MDCA's CIFAR ResNet with bottleneck blocks: depth = 9n + 2, conv3×3(16)-BN-ReLU stem,
    three stages of n blocks (16, 32, 64 planes, ×4 out; stride 2 from the second), global
    average pooling (theirs: an 8×8 window, global for 32×32 inputs) and a linear layer.
    Convolutions start from N(0, 2 / (k²·C_out)) (Kaiming, fan-out), as theirs."""
    if (depth - 2) % 9:
        raise ValueError(f"a bottleneck CIFAR ResNet's depth must be 9n + 2, got {depth}")
    n = (depth - 2) // 9
    return ResNet((16, 32, 64), (n, n, n), num_classes, block=Bottleneck)


def cifar_stem_resnet50(num_classes: int) -> ResNet:
    """Diff-DML's CIFAR ResNet-50 (``model/resnet.py`` L47-126, L276-278): a conv3×3(64)-BN-ReLU stem,
    four stages of 3, 4, 6, 3 bottleneck blocks (64, 128, 256, 512 planes, ×4 out; stride 2 from
    the second stage, on the 3×3 convolution), global average pooling and a linear layer from
    2,048 features. Where it differs: its convolutions keep PyTorch's default initialisation,
    these start Kaiming (fan-out) as the zoo's ``resnet18`` and ``resnet34``; its ``temp``
    divisor of the logits is 1 in every script and is left out."""
    return ResNet((64, 128, 256, 512), (3, 4, 6, 3), num_classes, block=Bottleneck)
