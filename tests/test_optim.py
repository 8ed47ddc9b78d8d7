import math

import pytest
import torch

from cohort.config import OptimConfig, ScheduleConfig
from cohort.optim import build_optimizer, lr_factor


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
