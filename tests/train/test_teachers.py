"""Teachers and their input perturbations (``cohort.train.teachers``), in-process, against the
official code's formulas (cs-giung/giung2 ``projects/Diversity-Matters/scripts/train_student.py``)."""

from __future__ import annotations

import math
from contextlib import nullcontext

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cohort.config import CohortConfig, LossConfig, TeacherConfig
from cohort.models import build_model
from cohort.run import checkpoint_files
from cohort.run.teacher_run import TeacherPlan
from cohort.train.losses import distillation_loss
from cohort.train.teachers import (
    Teachers,
    chosen_teacher,
    gaussian_perturbation,
    ods_direction,
    ods_perturbation,
    step_generator,
)

META = {"num_classes": 5, "mean": [0.5] * 3, "std": [0.25] * 3}


def tiny_net(dtype=torch.float64) -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(4 * 4 * 4, 5)).to(dtype)


def test_ods_step_has_norm_sqrt_d_times_s_over_255_before_clipping():
    net = tiny_net(torch.float32)
    x = torch.full((6, 3, 4, 4), 0.5)  # far from 0 and 1: no clipping
    w = torch.rand(6, 5, generator=torch.Generator().manual_seed(0)) * 2 - 1
    direction, y = ods_direction(net, x, w, temperature=4.0)
    step_size = 3.0
    d = 3 * 4 * 4
    ods = ods_perturbation(x, direction, step_size) - x
    assert torch.allclose(ods.flatten(1).norm(dim=1), torch.full((6,), math.sqrt(d) * step_size / 255), rtol=1e-5)
    conf = ods_perturbation(x, direction, step_size, y.max(1).values) - x
    assert torch.allclose(conf.flatten(1).norm(dim=1), math.sqrt(d) * step_size / 255 * y.max(1).values, rtol=1e-5)
    # Same direction, shorter for less confident teachers; clipping keeps pixels in [0, 1].
    assert torch.allclose(F.normalize(conf.flatten(1), dim=1), F.normalize(ods.flatten(1), dim=1), atol=1e-5)
    edge = ods_perturbation(torch.ones_like(x), direction, 255.0)
    assert edge.min() >= 0 and edge.max() <= 1


def test_ods_direction_is_the_finite_difference_gradient_of_w_dot_softmax():
    net = tiny_net()
    x = torch.rand(2, 3, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    w = torch.rand(2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 2 - 1
    temperature = 4.0
    direction, _ = ods_direction(net, x, w, temperature)

    def objective(z: torch.Tensor) -> float:
        with torch.no_grad():
            return float((w * torch.softmax(net(z) / temperature, dim=1)).sum())

    h = 1e-6
    numeric = torch.zeros_like(x)
    for i in range(x.numel()):
        bump = torch.zeros(x.numel(), dtype=x.dtype)
        bump[i] = h
        bump = bump.view_as(x)
        numeric.view(-1)[i] = (objective(x + bump) - objective(x - bump)) / (2 * h)
    assert torch.allclose(direction, numeric, rtol=1e-5, atol=1e-9)


def test_gaussian_perturbation_is_s_over_255_noise_drawn_from_the_step():
    x = torch.full((64, 3, 8, 8), 0.5)
    a = gaussian_perturbation(x, 2.0, step_generator(0, 7, 0, x.device))
    b = gaussian_perturbation(x, 2.0, step_generator(0, 7, 0, x.device))
    assert torch.equal(a, b)
    assert float((a - x).std()) == pytest.approx(2.0 / 255, rel=0.05)
    assert not torch.equal(a, gaussian_perturbation(x, 2.0, step_generator(0, 8, 0, x.device)))
    assert not torch.equal(
        a, gaussian_perturbation(x, 2.0, step_generator(0, 7, 1, x.device))
    )  # another replica's shard


def test_the_draws_are_pure_functions_of_seed_and_step_and_leave_the_global_rng_alone():
    before = torch.get_rng_state()
    picks = [chosen_teacher(0, step, 4) for step in range(400)]
    assert picks == [chosen_teacher(0, step, 4) for step in range(400)]
    assert picks != [chosen_teacher(1, step, 4) for step in range(400)]
    assert np.bincount(picks, minlength=4).min() > 70  # uniform over the four teachers
    torch.rand(3, generator=step_generator(0, 5, 0, torch.device("cpu")))
    assert torch.equal(before, torch.get_rng_state())


def test_distillation_matches_the_official_batchmean_kl_and_the_teachers_mean():
    torch.manual_seed(0)
    student, teacher = torch.randn(8, 5), torch.randn(8, 5)
    t = 4.0
    official = F.kl_div(F.log_softmax(student / t, dim=1), F.softmax(teacher / t, dim=1), reduction="batchmean") * t * t
    assert torch.allclose(distillation_loss(student, teacher.unsqueeze(0), t), official)
    many = torch.randn(3, 8, 5)
    mean = F.softmax(many / t, dim=-1).mean(0)
    expected = F.kl_div(F.log_softmax(student / t, dim=1), mean, reduction="batchmean") * t * t
    assert torch.allclose(distillation_loss(student, many, t), expected, atol=1e-6)


def teachers_in(tmp_path, perturbation: str, mapping: str = "one_to_one", students: int = 2) -> Teachers:
    """Teachers loaded from a checkpoint written here (two small CNNs, as a run's parts are)."""
    folder = tmp_path / "checkpoints" / "best"
    for j in range(2):
        torch.manual_seed(10 + j)
        net = build_model("small_cnn", 5, META["mean"], META["std"])
        with torch.no_grad():  # BatchNorm statistics a teacher learnt: not the defaults
            for module in net.modules():
                if isinstance(module, nn.BatchNorm2d):
                    module.running_mean.uniform_(-0.1, 0.1)
                    module.running_var.uniform_(0.5, 2.0)
        checkpoint_files.save_part(folder, j, {"arch": "small_cnn", "model": net.state_dict()})
    config = CohortConfig(
        seed=0, loss=LossConfig(), teacher=TeacherConfig(run_dir=str(tmp_path), perturbation=perturbation)
    )
    plan = TeacherPlan(tmp_path, folder, ("small_cnn", "small_cnn"), mapping, epoch=0)
    return Teachers(
        config,
        plan,
        member=1 if students > 1 else 0,
        meta=META,
        device=torch.device("cpu"),
        autocast=nullcontext(),
        channels_last=False,
    )


def state_of(net: nn.Module) -> dict:
    return {k: v.clone() for k, v in net.state_dict().items()}


@pytest.mark.parametrize("perturbation", ["none", "gaussian", "ods", "confods"])
def test_teachers_stay_bit_identical_while_a_student_learns_from_them(tmp_path, perturbation):
    teachers = teachers_in(tmp_path, perturbation)
    assert set(teachers.nets) == ({0, 1} if "ods" in perturbation else {1})  # ODS may pick either teacher
    before = {j: state_of(net) for j, net in teachers.nets.items()}
    torch.manual_seed(0)
    student = build_model("small_cnn16", 5, META["mean"], META["std"]).train()
    optimizer = torch.optim.SGD(student.parameters(), lr=0.5)
    for step in range(3):
        x = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(step))
        x_prime, drawn = teachers.perturb(x, step, replica=0)
        assert (x_prime is None) == (perturbation == "none")
        target_input = x if x_prime is None else x_prime
        loss = distillation_loss(student(target_input), teachers.logits(target_input), 4.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if "ods" in perturbation:
            assert drawn["teacher"] == chosen_teacher(0, step, 2)
    for j, net in teachers.nets.items():
        assert not net.training and all(p.grad is None and not p.requires_grad for p in net.parameters())
        after = net.state_dict()
        assert all(torch.equal(before[j][k], after[k]) for k in after), f"teacher {j} changed"


def test_one_student_learns_from_the_mean_of_every_teacher(tmp_path):
    teachers = teachers_in(tmp_path, "none", mapping="mean", students=1)
    x = torch.rand(4, 3, 16, 16)
    logits = teachers.logits(x)
    assert logits.shape == (2, 4, 5)
    with torch.no_grad():
        assert torch.equal(logits[1], teachers.nets[1](x))


def test_without_a_perturbation_the_distill_term_is_the_official_plain_kd():
    """``none``: the student runs once and KD reads its clean logits, as the official script
    does without --kd-method-name; with x′ the term reads the student's logits on x′ instead."""
    from cohort.config import DistillConfig
    from cohort.train.objective import Distillation, LossInputs

    torch.manual_seed(0)
    clean, on_x_prime, teacher = torch.randn(8, 5), torch.randn(8, 5), torch.randn(8, 5)
    term = Distillation(DistillConfig(weight=0.9, temperature=4.0), LossConfig())
    official = F.kl_div(F.log_softmax(clean / 4, dim=1), F.softmax(teacher / 4, dim=1), reduction="batchmean") * 16
    plain = LossInputs(clean, torch.zeros(8, dtype=torch.long), 0.0, teachers=teacher.unsqueeze(0))
    assert torch.allclose(term(plain), official)
    perturbed = LossInputs(
        clean, torch.zeros(8, dtype=torch.long), 0.0, teachers=teacher.unsqueeze(0), perturbed=on_x_prime
    )
    assert torch.allclose(term(perturbed), distillation_loss(on_x_prime, teacher.unsqueeze(0), 4.0))
