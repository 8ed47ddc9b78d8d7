"""BatchEnsemble members (``cohort.models.batch_ensemble``), in-process: the layers against a
transcription of the official code's forward (cs-giung/giung2 ``giung2/layers/conv.py``
``Conv2d_BatchEnsemble``, ``linear.py`` ``Linear_BatchEnsemble``), the factors' start, the
optimiser groups, the objective over internal members against the official student loss
(``projects/Diversity-Matters/scripts/train_student.py``), and predictions of K·n networks."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cohort.config import BatchEnsembleConfig, CohortConfig, MemberConfig, OptimConfig, TeacherConfig, load_config
from cohort.models import build_model
from cohort.models.batch_ensemble import (
    BatchEnsemble,
    BatchEnsembleConv2d,
    BatchEnsembleLinear,
    FactorInit,
    as_members,
)
from cohort.run import checkpoint_files
from cohort.run.teacher_run import TeacherPlan
from cohort.train.exchange import LogitExchange
from cohort.train.objective import LossInputs, build_objective
from cohort.train.optim import build_optimizer, parameter_groups, set_lr
from cohort.train.teachers import Teachers

META = {"num_classes": 10, "mean": [0.5] * 3, "std": [0.25] * 3}


def official_conv(x, weight, bias, alpha, gamma, ensemble_bias, n, stride, padding, groups):
    """giung2's ``Conv2d_BatchEnsemble.forward``, transcribed onto plain tensors."""
    _, c1, h1, w1 = x.size()
    r_x = (x.view(n, -1, c1, h1, w1) * alpha.view(n, 1, c1, 1, 1)).view(-1, c1, h1, w1)
    w_r_x = F.conv2d(r_x, weight, bias, stride, padding, 1, groups)
    _, c2, h2, w2 = w_r_x.size()
    s_w_r_x = w_r_x.view(n, -1, c2, h2, w2) * gamma.view(n, 1, c2, 1, 1)
    if ensemble_bias is not None:
        s_w_r_x = s_w_r_x + ensemble_bias.view(n, 1, c2, 1, 1)
    return s_w_r_x.view(-1, c2, h2, w2)


def official_linear(x, weight, bias, alpha, gamma, ensemble_bias, n):
    """giung2's ``Linear_BatchEnsemble.forward``, transcribed onto plain tensors."""
    _, d1 = x.size()
    r_x = (x.view(n, -1, d1) * alpha.view(n, 1, d1)).view(-1, d1)
    w_r_x = F.linear(r_x, weight, bias)
    _, d2 = w_r_x.size()
    s_w_r_x = w_r_x.view(n, -1, d2) * gamma.view(n, 1, d2)
    if ensemble_bias is not None:
        s_w_r_x = s_w_r_x + ensemble_bias.view(n, 1, d2)
    return s_w_r_x.view(-1, d2)


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("rows_per_member", [1, 3])
@pytest.mark.parametrize("bias,stride,padding,groups", [(False, 1, 1, 1), (True, 2, 0, 1), (False, 1, 1, 2)])
def test_the_conv_layer_equals_the_official_forward(n, rows_per_member, bias, stride, padding, groups):
    torch.manual_seed(n * 10 + rows_per_member)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups, bias=bias).double()
    layer = BatchEnsembleConv2d(conv, n, FactorInit())
    with torch.no_grad():
        if layer.member_bias is not None:
            layer.member_bias.normal_()  # zeros at the start: give the official bias term something to add
    x = torch.randn(n * rows_per_member, 4, 7, 7, dtype=torch.float64)
    expected = official_conv(
        x, conv.weight, None, layer.input_factor, layer.output_factor, layer.member_bias, n, stride, padding, groups
    )
    assert torch.allclose(layer(x), expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("n", [1, 2, 4])
@pytest.mark.parametrize("bias", [True, False])
def test_the_linear_layer_equals_the_official_forward(n, bias):
    torch.manual_seed(n)
    linear = nn.Linear(8, 5, bias=bias).double()
    layer = BatchEnsembleLinear(linear, n, FactorInit())
    with torch.no_grad():
        if layer.member_bias is not None:
            layer.member_bias.normal_()
    x = torch.randn(n * 3, 8, dtype=torch.float64)
    expected = official_linear(x, linear.weight, None, layer.input_factor, layer.output_factor, layer.member_bias, n)
    assert torch.allclose(layer(x), expected, rtol=0, atol=1e-12)
    assert (layer.member_bias is not None) == bias and linear.bias is None  # a bias of each member's own


def test_a_batch_that_is_not_a_multiple_of_n_is_a_clear_error():
    layer = BatchEnsembleLinear(nn.Linear(8, 5), 4, FactorInit())
    with pytest.raises(ValueError, match="got 6 rows, not a multiple of 4: feed it the batch repeated 4 times"):
        layer(torch.randn(6, 8))


def test_a_batch_ensemble_is_the_plain_network_when_its_factors_are_one():
    """The shared weights are the plain network's (the factors are drawn after them), and with
    every factor 1 and member biases set to the plain bias each internal member is that network."""
    torch.manual_seed(5)
    plain = build_model("small_cnn16", 10, META["mean"], META["std"]).eval()
    torch.manual_seed(5)
    ensemble = build_model("small_cnn16", 10, META["mean"], META["std"], batch_ensemble=3).eval()
    assert isinstance(ensemble, BatchEnsemble)
    layers = [m for m in plain.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    shared = [m for m in ensemble.modules() if isinstance(m, (BatchEnsembleConv2d, BatchEnsembleLinear))]
    assert len(layers) == len(shared) == 4
    assert all(torch.equal(p.weight, be.layer.weight) for p, be in zip(layers, shared))
    norms = zip(*(([m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]) for net in (plain, ensemble)))
    assert all(torch.equal(a.weight, b.weight) and torch.equal(a.running_var, b.running_var) for a, b in norms)
    with torch.no_grad():
        for be in shared:
            be.input_factor.fill_(1.0)
            be.output_factor.fill_(1.0)
        shared[-1].member_bias.copy_(layers[-1].bias.expand_as(shared[-1].member_bias))
    x = torch.rand(5, 3, 8, 8)
    logits = ensemble(x)
    assert logits.shape == (3, 5, 10)
    for j in range(3):
        assert torch.allclose(logits[j], plain(x), atol=1e-5)


def test_n_1_builds_todays_plain_network():
    torch.manual_seed(1)
    today = build_model("resnet20", 10, META["mean"], META["std"])
    torch.manual_seed(1)
    one = build_model("resnet20", 10, META["mean"], META["std"], batch_ensemble=1)
    assert not any(isinstance(m, BatchEnsemble) for m in one.modules())
    assert all(torch.equal(a, b) for a, b in zip(today.state_dict().values(), one.state_dict().values()))


def test_the_factors_start_as_the_official_normal_or_as_random_signs():
    torch.manual_seed(0)
    normal = BatchEnsembleLinear(nn.Linear(2048, 2048), 4, FactorInit("normal", std=0.5))
    values = torch.cat([normal.input_factor.flatten(), normal.output_factor.flatten()]).detach()
    assert abs(float(values.mean()) - 1.0) < 0.01 and abs(float(values.std()) - 0.5) < 0.01
    assert torch.equal(normal.member_bias, torch.zeros(4, 2048))
    signs = BatchEnsembleLinear(nn.Linear(2048, 2048), 4, FactorInit("random_sign", sign_probability=0.75))
    values = torch.cat([signs.input_factor.flatten(), signs.output_factor.flatten()]).detach()
    assert set(values.unique().tolist()) == {-1.0, 1.0}
    assert abs(float((values > 0).double().mean()) - 0.75) < 0.01


@pytest.mark.parametrize("arch", ["small_cnn", "resnet20", "resnet18", "wrn16_2", "mobilenetv2"])
def test_every_zoo_architecture_of_convolutions_and_linear_layers_can_be_wrapped(arch):
    net = build_model(arch, 10, META["mean"], META["std"], batch_ensemble=2).eval()
    assert net(torch.rand(3, 3, 32, 32)).shape == (2, 3, 10)
    plain = [m for m in net.modules() if type(m) in (nn.Conv2d, nn.Linear)]
    assert all(isinstance(p, (nn.Conv2d, nn.Linear)) for p in plain)
    assert sum(isinstance(m, (BatchEnsembleConv2d, BatchEnsembleLinear)) for m in net.modules()) == len(plain)


def test_an_architecture_with_other_weights_is_refused_naming_the_layer():
    with pytest.raises(ValueError, match=r"its layer 1 \(VisionTransformer\) has weights \(class_token\)"):
        with torch.device("meta"):
            build_model("tv.vit_b_16", 10, META["mean"], META["std"], batch_ensemble=2)


def test_the_factors_train_in_their_own_group_at_half_the_learning_rate_without_weight_decay():
    net = build_model("small_cnn16", 10, META["mean"], META["std"], batch_ensemble=4)
    optim = OptimConfig(lr=0.1, weight_decay=5e-4, bn_weight_decay=False)
    groups = parameter_groups(net, optim, BatchEnsembleConfig())
    names = {id(p): name for name, p in net.named_parameters()}
    main, norms, fast = ([names[id(p)] for p in g["params"]] for g in groups)
    assert fast and all(name.endswith(("input_factor", "output_factor")) for name in fast)
    assert "net.1.13.member_bias" in main and all("factor" not in name for name in main + norms)
    assert len(main) + len(norms) + len(fast) == len(names)
    optimizer = build_optimizer(groups, optim)
    set_lr(optimizer, 0.08)
    assert [g["lr"] for g in optimizer.param_groups] == [0.08, 0.08, 0.04]
    assert [g["weight_decay"] for g in optimizer.param_groups] == [5e-4, 0.0, 0.0]
    custom = parameter_groups(net, OptimConfig(), BatchEnsembleConfig(fast_lr_scale=1.0, fast_weight_decay=5e-4))
    assert (len(custom), custom[-1]["lr_scale"], custom[-1]["weight_decay"]) == (2, 1.0, 5e-4)


def test_a_plain_network_keeps_todays_optimiser_groups():
    net = build_model("small_cnn16", 10, META["mean"], META["std"])
    assert [len(g["params"]) for g in parameter_groups(net, OptimConfig())] == [len(list(net.parameters()))]
    assert all("lr_scale" not in g for g in parameter_groups(net, OptimConfig(bn_weight_decay=False)))


def teacher_folder(tmp_path, count: int):
    folder = tmp_path / "checkpoints" / "best"
    for j in range(count):
        torch.manual_seed(20 + j)
        net = build_model("small_cnn16", 10, **NORM)
        checkpoint_files.save_part(folder, j, {"arch": "small_cnn16", "model": net.state_dict()})
    return folder


NORM = {"mean": META["mean"], "std": META["std"]}


def test_a_batch_ensemble_student_has_the_official_one_to_one_distillation_loss(tmp_path):
    """Member 1 of a cohort [plain, BE-2] is students 1 and 2: it reads teachers 1 and 2, and its
    objective equals train_student.py's (1 − α)·CE + α·T²·KL(batchmean) over the repeated batch,
    internal member j's block distilled from teacher j."""
    from cohort.train.inputs import TeacherInputs

    config = CohortConfig(
        members=[MemberConfig(arch="small_cnn16"), MemberConfig(arch="small_cnn16", batch_ensemble=2)],
        teacher=TeacherConfig(run_dir=str(tmp_path), mapping="one_to_one"),
    )
    config.loss.ce.weight, config.loss.distill.weight, config.loss.distill.temperature = 0.1, 0.9, 4.0
    config.loss.mimicry.weight = 0.0
    config.resolve()
    plan = TeacherPlan(tmp_path, teacher_folder(tmp_path, 3), ("small_cnn16",) * 3, "one_to_one", epoch=0)
    teachers = Teachers(config, plan, 1, META, torch.device("cpu"), nullcontext(), False)
    assert teachers.targets == [1, 2]

    torch.manual_seed(0)
    student = build_model("small_cnn16", 10, **NORM, batch_ensemble=2).train()
    x, labels = torch.rand(6, 3, 8, 8), torch.randint(0, 10, (6,))
    provider = TeacherInputs.__new__(TeacherInputs)  # its per-student stacking, without a mesh
    provider.teachers, provider.internal_members = teachers, 2
    objective = build_objective(config, 1)
    logits = student(x)
    loss, terms = objective(LossInputs(logits, labels, 0.0, teachers=provider.per_student(teachers.logits(x))))

    images = x.repeat(2, 1, 1, 1)
    with torch.no_grad():
        t_logits = torch.cat([teachers.nets[j](block) for j, block in zip([1, 2], torch.split(images, 6))])
    outputs = logits.flatten(0, 1)
    loss_ce = F.cross_entropy(outputs, labels.repeat(2))
    loss_kd = F.kl_div(F.log_softmax(outputs / 4, dim=1), F.softmax(t_logits / 4, dim=1), reduction="batchmean") * 16
    assert torch.allclose(loss, 0.1 * loss_ce + 0.9 * loss_kd, atol=1e-6)
    assert torch.allclose(terms["ce"], loss_ce, atol=1e-6) and torch.allclose(terms["distill"], loss_kd, atol=1e-6)


def test_mimicry_reads_the_other_members_and_siblings_only_when_asked():
    """The exchange of one rank holding a BE-3 member (K = 1): its internal members have no peers,
    or each other with ``siblings_are_peers``; with peers, mimicry is the mean over internal members."""
    logits = torch.randn(3, 4, 5)
    indices = torch.arange(4)
    alone = LogitExchange(None, 0, 1, sizes=[3])
    everyone = alone.gather(logits, indices, step=0)
    assert torch.equal(everyone, logits)
    assert alone.peers(everyone).shape == (3, 0, 4, 5)
    siblings = LogitExchange(None, 0, 1, sizes=[3], siblings_are_peers=True).peers(everyone)
    assert siblings.shape == (3, 2, 4, 5)
    assert torch.equal(siblings[1], logits[[0, 2]])

    config = CohortConfig(members=[MemberConfig(batch_ensemble=3)])
    config.loss.mimicry.weight = 1.0
    config.resolve()
    objective = build_objective(config, 0)
    labels = torch.randint(0, 5, (4,))
    _, terms = objective(LossInputs(logits, labels, 0.0, peers=siblings))
    from cohort.train.losses import mimicry_loss

    each = [mimicry_loss(logits[j], siblings[j]) for j in range(3)]
    assert torch.allclose(terms["mimicry"], torch.stack(each).mean())
    _, alone_terms = objective(LossInputs(logits, labels, 0.0, peers=alone.peers(everyone)))
    assert float(alone_terms["mimicry"]) == 0.0


def test_predictions_hold_every_internal_member_and_the_ensemble_averages_probabilities(digits_root):
    from cohort.evaluate.metrics import evaluate_cohort
    from cohort.evaluate.predict import predict

    config = load_config(
        "configs/digits_pair.yaml",
        [f"data.root={digits_root}", "members.1.batch_ensemble=2", "data.eval_batch_size=64"],
    )
    assert config.member_names == ["crop", "plain.0", "plain.1"] and config.owner(2) == 1
    torch.manual_seed(0)
    models = [
        build_model("small_cnn", 10, **NORM).eval(),
        build_model("small_cnn", 10, **NORM, batch_ensemble=2).eval(),
    ]
    logits, labels = predict(models, digits_root / "val.beton", config)
    assert logits.shape == (3, len(labels), 10)
    results = evaluate_cohort({"val": logits, "test": logits}, {"val": labels, "test": labels})["val"]
    probs = torch.softmax(torch.from_numpy(logits).double(), dim=-1).mean(0)
    nll = float(-torch.log(probs[torch.arange(len(labels)), torch.from_numpy(labels)]).mean())
    assert results["ensemble"]["nll"] == pytest.approx(nll, rel=1e-6)
    assert set(results) == {0, 1, 2, "ensemble"}
    assert as_members(torch.zeros(4, 10)).shape == (1, 4, 10)
