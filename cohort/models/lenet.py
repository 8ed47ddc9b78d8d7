"""LeNet-5 as google/uncertainty-baselines trains it on (Fashion-)MNIST, the network behind
the published anchors in README (``baselines/mnist/deterministic.py``'s ``lenet5``).

That Keras model is conv 6@5×5 → max-pool 2 → conv 16@5×5 → max-pool 2 → conv 120@5×5 →
flatten → dense 84 → dense C, every convolution ``padding='SAME'`` (so 28 → 14 → 7 and the
flatten holds 7·7·120 = 5,880 values) and ReLU after each layer but the last; weights
Glorot-uniform, biases 0 (Keras' defaults). That makes 545,546 weights for one grey channel,
not the 60 K its README's table says (the classic LeNet-5 has valid convolutions).

One difference: cohort's loaders give three channels (a grey image stored as three equal
ones), so the network first averages them, which for a grey image is that image exactly.
"""

from __future__ import annotations

import torch
from torch import nn


class LeNet5(nn.Module):
    def __init__(self, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),  # Keras' 'SAME' pooling: an odd side keeps its last row
            nn.Conv2d(6, 16, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(16, 120, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.Flatten(),
        )
        # 28×28 inputs, as (Fashion-)MNIST's: 120 maps of 7×7 after two poolings.
        self.classifier = nn.Sequential(nn.Linear(120 * 7 * 7, 84), nn.ReLU(inplace=True), nn.Linear(84, num_classes))
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(layer.weight)  # Keras' glorot_uniform: fan-in + fan-out over the kernel
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grey = x.mean(dim=1, keepdim=True)
        return self.classifier(self.features(grey))
