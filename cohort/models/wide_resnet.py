"""Wide ResNet WRN-depth-k (Zagoruyko & Komodakis 2016), pre-activation blocks."""

from torch import nn


class WideBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(c_in), nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.conv2 = nn.BatchNorm2d(c_out), nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.relu = nn.ReLU(inplace=False)
        self.shortcut = None if stride == 1 and c_in == c_out else nn.Conv2d(c_in, c_out, 1, stride, bias=False)

    def forward(self, x):
        pre = self.relu(self.bn1(x))
        out = self.conv2(self.relu(self.bn2(self.conv1(pre))))
        return out + (x if self.shortcut is None else self.shortcut(pre))


class WideResNet(nn.Module):
    def __init__(self, depth: int, width: int, num_classes: int):
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        n = (depth - 4) // 6
        widths = (16, 16 * width, 32 * width, 64 * width)
        layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False)]
        c_in = widths[0]
        for stage, c_out in enumerate(widths[1:]):
            for b in range(n):
                layers.append(WideBlock(c_in, c_out, 2 if stage > 0 and b == 0 else 1))
                c_in = c_out
        layers += [
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=True),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(c_in, num_classes),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x):
        return self.net(x)
