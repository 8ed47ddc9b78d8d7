import math

import numpy as np
import pytest
import torch

from cohort.config import OptimConfig, ScheduleConfig
from cohort.train.optim import build_optimizer, lr_factor, parameter_groups


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
    adamw = build_optimizer(params, OptimConfig(name="adamw", lr=1e-3, betas=[0.8, 0.99], eps=1e-7, weight_decay=0.05))
    assert isinstance(adamw, torch.optim.AdamW) and adamw.param_groups[0]["betas"] == (0.8, 0.99)
    assert adamw.param_groups[0]["eps"] == 1e-7


def test_cyclic_schedule_is_ffcv_imagenets_interpolated_within_epochs():
    # ffcv-imagenet: get_cyclic_lr(epoch) = interp(epoch, [0, peak, epochs], [1e-4·lr, lr, 0]), and its
    # training loop interpolates linearly between get_lr(epoch) and get_lr(epoch + 1) over the epoch's steps.
    s = ScheduleConfig(name="cyclic", peak_epoch=2)
    ffcv = lambda e: float(np.interp([e], [0, 2, 16], [1e-4, 1.0, 0.0])[0])  # noqa: E731
    for epoch in range(16):
        for step, steps in ((0, 10), (3, 10), (9, 10)):
            expected = ffcv(epoch) + (ffcv(epoch + 1) - ffcv(epoch)) * step / steps
            assert lr_factor(s, epoch + step / steps, 16) == pytest.approx(expected)


def giung2_warmup_linear_decay(epoch, milestones=(5, 150, 270), warmup_factor=0.01, gamma=0.01):
    """A transcription of giung2's ``build_warmup_linear_decay_lr`` lambda (WARMUP_METHOD linear)."""
    epoch += 1
    if epoch < milestones[0]:
        return (1.0 - warmup_factor) / (milestones[0] - 1) * (epoch - 1) + warmup_factor
    elif epoch < milestones[1]:
        return 1.0
    elif epoch < milestones[2]:
        return (gamma - 1.0) / (milestones[2] - milestones[1]) * (epoch - milestones[2]) + gamma
    return gamma


def test_warmup_linear_decay_is_giung2s_stepped_once_per_epoch():
    # The official scripts wrap the lambda in LambdaLR and call scheduler.step() after each training
    # epoch: every step of epoch e (0-based) trains at base_lr · lambda(e).
    s = ScheduleConfig(name="warmup_linear_decay", milestones=[5, 150, 270], warmup_factor=0.01, gamma=0.01)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.2)
    official = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda=giung2_warmup_linear_decay)
    for epoch in range(300):
        for step, steps in ((0, 196), (97, 196), (195, 196)):
            assert 0.2 * lr_factor(s, epoch + step / steps, 300) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()
        official.step()
    by_epoch = {e: lr_factor(s, e + 0.5, 300) for e in (0, 3, 4, 148, 149, 150, 209, 268, 269, 299)}
    expected = {0: 0.01, 3: 0.7525, 4: 1.0, 148: 1.0, 149: 1.0, 150: 1 - 0.99 / 120, 209: 0.505, 268: 0.01 + 0.99 / 120}
    assert by_epoch == pytest.approx({**expected, 269: 0.01, 299: 0.01})
    # Other milestones (the CIFAR-10 students' [5, 125, 225] for 250 epochs) follow the same rule.
    s = ScheduleConfig(name="warmup_linear_decay", milestones=[5, 125, 225], gamma=0.01)
    for epoch in (0, 2, 4, 124, 125, 180, 224, 249):
        assert lr_factor(s, epoch, 250) == pytest.approx(giung2_warmup_linear_decay(epoch, (5, 125, 225)))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"milestones": [150, 270]}, r"need three milestones \[m0, m1, m2\] with m0 >= 1"),
        ({"milestones": [0, 150, 270]}, r"need three milestones"),
        ({"warmup_epochs": 5}, r"warms up itself.*warmup_epochs 0"),
        ({"warmup_factor": 0.0}, r"schedule\.warmup_factor must be in \(0, 1\]"),
    ],
)
def test_warmup_linear_decay_refuses_settings_it_cannot_follow(changes, message):
    from cohort.config import ConfigError

    settings = {"name": "warmup_linear_decay", "milestones": [5, 150, 270], **changes}
    with pytest.raises(ConfigError, match=message):
        ScheduleConfig(**settings).validate()


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


@pytest.mark.parametrize("step_size, step_begin, epochs", [(50, 50, 350), (3, 2, 14), (1, 0, 5)])
def test_step_lr_is_torchs_step_lr_stepped_as_diffdmls_train_py(step_size, step_begin, epochs):
    # Luminova1996/Diff-DML train.py: StepLR(optimizer_A, step_size, gamma) (L126), and after each
    # training epoch `if epoch >= schedule_begin: scheduler_A.step()` (L312-317).
    s = ScheduleConfig(name="step_lr", step_size=step_size, step_begin=step_begin, gamma=0.1)
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    official = torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=0.1)
    for epoch in range(epochs):
        for fraction in (0.0, 0.5, 0.99):
            assert 0.1 * lr_factor(s, epoch + fraction, epochs) == pytest.approx(optimizer.param_groups[0]["lr"])
        optimizer.step()  # the epoch's steps (no gradient: nothing moves), before the scheduler's, as there
        if epoch >= step_begin:
            official.step()
    if (step_size, step_begin) == (50, 50):  # CIFAR's (dataset_utils/cifar.py L98-100): the first decay at 100
        assert [lr_factor(s, e, epochs) for e in (0, 99, 100, 149, 150, 349)] == pytest.approx(
            [1, 1, 0.1, 0.1, 0.01, 1e-5]
        )
