"""MobileNetV2 (Sandler et al. 2018) for 32×32 inputs: stride-1 stem and first stages."""

from torch import nn

# (expansion t, channels c, repeats n, first stride s); strides adapted for CIFAR.
_CIFAR_SETTINGS = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _conv_bn(c_in, c_out, kernel, stride, groups=1, act=True):
    layers = [nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(c_out)]
    return layers + [nn.ReLU6(inplace=True)] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, c_in, c_out, stride, expansion):
        super().__init__()
        hidden = c_in * expansion
        layers = _conv_bn(c_in, hidden, 1, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden) + _conv_bn(hidden, c_out, 1, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and c_in == c_out

    def forward(self, x):
        return x + self.block(x) if self.residual else self.block(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        layers, c_in = _conv_bn(3, 32, 3, 1), 32
        for t, c, n, s in _CIFAR_SETTINGS:
            for i in range(n):
                layers.append(InvertedResidual(c_in, c, s if i == 0 else 1, t))
                c_in = c
        layers += _conv_bn(c_in, 1280, 1, 1) + [
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(0.2),
            nn.Linear(1280, num_classes),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
