"""A small CNN for the digits demo: trains in seconds per epoch on a CPU."""

from torch import nn


class SmallCNN(nn.Sequential):
    def __init__(self, num_classes: int, width: int = 32):
        def block(c_in, c_out):
            return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]

        super().__init__(
            *block(3, width),
            nn.MaxPool2d(2),
            *block(width, 2 * width),
            nn.MaxPool2d(2),
            *block(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, num_classes),
        )
