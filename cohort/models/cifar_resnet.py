"""ResNets for 32×32 inputs.

- ``cifar_resnet(depth)``: He et al. 2016 §4.2, depth = 6n + 2 (20, 32, 56, 110), widths
  16/32/64, the shortcut a 1×1 projection where the shape changes (option B).
- ``cifar_stem_resnet(blocks)``: ResNet-18/34 with a 3×3 stride-1 stem and no max-pool,
  as in the CIFAR experiments of DML and CS-KD.
"""

from torch import nn


class BasicBlock(nn.Module):
    expansion = 1
    """Output channels per width (a bottleneck block's is 4)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNet(nn.Module):
    """A conv3×3-BN-ReLU stem, stages of ``blocks`` blocks of ``widths`` (stride 2 from the second
    stage), global average pooling and a linear layer; convolutions start Kaiming (fan-out).
    ``block``: the residual block class, called ``block(c_in, width, stride)``, whose output
    has ``width · block.expansion`` channels."""

    def __init__(self, widths, blocks, num_classes: int, block: type[nn.Module] = BasicBlock):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True)
        )
        layers, c_in = [], widths[0]
        for stage, (width, n) in enumerate(zip(widths, blocks)):
            for b in range(n):
                layers.append(block(c_in, width, 2 if stage > 0 and b == 0 else 1))
                c_in = width * block.expansion
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        return self.head(self.layers(self.stem(x)))


def cifar_resnet(depth: int, num_classes: int) -> ResNet:
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth}")
    n = (depth - 2) // 6
    return ResNet((16, 32, 64), (n, n, n), num_classes)


def cifar_stem_resnet(blocks, num_classes: int) -> ResNet:
    return ResNet((64, 128, 256, 512), blocks, num_classes)
