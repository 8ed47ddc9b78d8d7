import math

import torch
from torch import nn

from cohort.models import build_model
from cohort.models.lenet import LeNet5


def test_lenet5_has_the_keras_models_layers_and_weights():
    """uncertainty-baselines' lenet5 on 28×28×1: 'SAME' convolutions of 6, 16 and 120 maps, two
    2×2 poolings (28 → 14 → 7), dense 84 and C. Its weights, counted from those layers:
    (25·1+1)·6 + (25·6+1)·16 + (25·16+1)·120 + (7·7·120+1)·84 + (84+1)·10."""
    net = LeNet5(10)
    assert sum(p.numel() for p in net.parameters()) == 156 + 2_416 + 48_120 + 494_004 + 850 == 545_546
    maps = net.features[:-1](torch.zeros(1, 1, 28, 28))
    assert maps.shape == (1, 120, 7, 7)


def test_lenet5_starts_as_keras_does():
    """Glorot-uniform weights, within ±sqrt(6 / (fan_in + fan_out)) and filling that range; zero biases."""
    torch.manual_seed(0)
    for layer in LeNet5(10).modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            field = layer.weight[0, 0].numel() if layer.weight.dim() == 4 else 1
            limit = math.sqrt(6 / ((layer.weight.shape[1] + layer.weight.shape[0]) * field))
            assert layer.weight.abs().max() <= limit and layer.weight.abs().max() > 0.9 * limit
            assert torch.all(layer.bias == 0)


def test_lenet5_reads_a_grey_image_stored_as_three_equal_channels_as_that_image():
    net = build_model("lenet5", 10, [0.3] * 3, [0.4] * 3).eval()
    grey = torch.rand(4, 1, 28, 28)
    direct = net[1].classifier(net[1].features((grey - 0.3) / 0.4))
    assert torch.allclose(net(grey.expand(4, 3, 28, 28)), direct, atol=1e-6)
