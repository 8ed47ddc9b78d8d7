import math

import numpy as np
import pytest
import torch

from cohort.config import OptimConfig, ScheduleConfig
from cohort.optim import build_optimizer, lr_factor, parameter_groups


def test_step_schedule_divides_at_milestones():
    s = ScheduleConfig(name="step", milestones=[60, 120, 180], gamma=0.1)
    assert [lr_factor(s, e, 200) for e in (0, 59.9, 60, 120, 199)] == pytest.approx([1, 1, 0.1, 0.01, 0.001])


def test_cosine_with_linear_warmup():
    s = ScheduleConfig(name="cosine", warmup_epochs=2)
    assert lr_factor(s, 1.0, 10) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.1)))
    assert lr_factor(s, 5.0, 10) == pytest.approx(0.5)
    assert lr_factor(s, 10.0, 10) == pytest.approx(0.0)


def test_optimizers_take_their_settings():
    params = [torch.nn.Parameter(torch.zeros(2))]
    sgd = build_optimizer(params, OptimConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4))
    assert sgd.param_groups[0]["nesterov"] and sgd.param_groups[0]["weight_decay"] == 5e-4
    adamw = build_optimizer(params, OptimConfig(name="adamw", lr=1e-3, betas=[0.8, 0.99], weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.99)


def test_cyclic_schedule_is_ffcv_imagenets_interpolated_within_epochs():
    # ffcv-imagenet: get_cyclic_lr(epoch) = interp(epoch, [0, peak, epochs], [1e-4·lr, lr, 0]), and its
    # training loop interpolates linearly between get_lr(epoch) and get_lr(epoch + 1) over the epoch's steps.
    s = ScheduleConfig(name="cyclic", peak_epoch=2)
    ffcv = lambda e: float(np.interp([e], [0, 2, 16], [1e-4, 1.0, 0.0])[0])  # noqa: E731
    for epoch in range(16):
        for step, steps in ((0, 10), (3, 10), (9, 10)):
            expected = ffcv(epoch) + (ffcv(epoch + 1) - ffcv(epoch)) * step / steps
            assert lr_factor(s, epoch + step / steps, 16) == pytest.approx(expected)


def test_batchnorm_parameters_can_skip_weight_decay():
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.Linear(4, 2))
    groups = parameter_groups(net, OptimConfig(bn_weight_decay=False, weight_decay=1e-4))
    sgd = build_optimizer(groups, OptimConfig(weight_decay=1e-4))
    decayed, free = sgd.param_groups
    assert decayed["weight_decay"] == 1e-4 and free["weight_decay"] == 0.0
    assert {id(p) for p in free["params"]} == {id(net[1].weight), id(net[1].bias)}
    assert len(decayed["params"]) == 4  # the convolution's and the linear layer's weights and biases
    (single,) = parameter_groups(net, OptimConfig())
    assert len(single["params"]) == 6
