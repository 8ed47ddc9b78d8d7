"""The objective: named terms from the config, weighted per member, summed; no process needed."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from cohort.config import LossConfig, load_config
from cohort.data.batch import IGNORE_LABEL
from cohort.train.losses import cskd_loss, diversity_loss, focal_loss, mdca_loss, mimicry_loss, sigmoid_rampup
from cohort.train.objective import TERMS, LossInputs, build_objective, check_registry


def config(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return load_config(path)


def test_every_loss_section_is_a_registered_term():
    assert list(TERMS) == [f.name for f in dataclasses.fields(LossConfig)]


def test_total_is_the_weighted_sum_of_named_terms(tmp_path):
    torch.manual_seed(5)
    own, peers, labels = torch.randn(8, 4), torch.randn(2, 8, 4), torch.randint(0, 4, (8,))
    for kind in ("margin", "nontarget"):
        cohort = config(
            tmp_path,
            f"members: [{{}}, {{}}, {{}}]\nloss: {{mimicry: {{weight: 0.7, temperature: 2.0}}, "
            f"diversity: {{kind: {kind}, weight: 1.3, margin: 5.0}}}}\n",
        )
        objective = build_objective(cohort, 0)
        assert objective.names == ["ce", "mimicry", "diversity"] and objective.needs == {"peers"}
        loss, terms = objective(LossInputs(own, labels, progress=0.0, peers=peers))
        assert set(terms) == {"ce", "mimicry", "diversity", "loss"}
        assert terms["ce"].item() == pytest.approx(F.cross_entropy(own, labels).item(), rel=1e-6)
        assert terms["mimicry"].item() == pytest.approx(mimicry_loss(own, peers, temperature=2.0).item(), rel=1e-6)
        assert terms["diversity"].item() == pytest.approx(
            diversity_loss(own, peers, labels, kind=kind, margin=5.0, temperature=2.0).item(), rel=1e-6
        )
        expected = terms["ce"] + 0.7 * terms["mimicry"] + 1.3 * terms["diversity"]
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6) and terms["loss"] == loss.detach()


def test_gradients_reach_only_the_members_own_logits(tmp_path):
    torch.manual_seed(2)
    own = torch.randn(4, 5, requires_grad=True)
    peers = torch.randn(2, 4, 5, requires_grad=True)
    objective = build_objective(config(tmp_path, "members: [{}, {}, {}]\n"), 0)
    loss, terms = objective(LossInputs(own, torch.tensor([0, 1, 2, 3]), progress=0.0, peers=peers))
    loss.backward()
    assert own.grad is not None and own.grad.abs().sum() > 0
    assert peers.grad is None
    assert set(terms) == {"ce", "mimicry", "loss"}


def test_an_independent_member_is_plain_cross_entropy_and_reads_no_peers(tmp_path):
    own, labels = torch.randn(4, 3), torch.tensor([0, 1, 2, 0])
    objective = build_objective(config(tmp_path, "loss: {mimicry: {weight: 0}, ce: {label_smoothing: 0.1}}\n"), 0)
    assert objective.names == ["ce"] and objective.needs == set()
    loss, terms = objective(LossInputs(own, labels, progress=0.0))
    assert loss.item() == pytest.approx(F.cross_entropy(own, labels, label_smoothing=0.1).item())
    assert set(terms) == {"ce", "loss"}


def test_a_member_override_changes_only_that_members_weight(tmp_path):
    torch.manual_seed(6)
    own, peers, labels = torch.randn(6, 5), torch.randn(1, 6, 5), torch.randint(0, 5, (6,))
    cohort = config(tmp_path, "members: [{}, {loss: {mimicry: 0.25}}]\nloss: {mimicry: {weight: 1.0}}\n")
    inputs = LossInputs(own, labels, progress=0.0, peers=peers)
    (full, terms), (weak, _) = build_objective(cohort, 0)(inputs), build_objective(cohort, 1)(inputs)
    assert full.item() == pytest.approx((terms["ce"] + terms["mimicry"]).item(), rel=1e-6)
    assert weak.item() == pytest.approx((terms["ce"] + 0.25 * terms["mimicry"]).item(), rel=1e-6)


def test_mimicry_ramps_up_with_progress(tmp_path):
    torch.manual_seed(7)
    own, peers, labels = torch.randn(6, 5), torch.randn(1, 6, 5), torch.randint(0, 5, (6,))
    objective = build_objective(config(tmp_path, "loss: {mimicry: {weight: 2.0, rampup_epochs: 10}}\n"), 0)
    loss, terms = objective(LossInputs(own, labels, progress=5.0, peers=peers))
    expected = terms["ce"] + 2.0 * sigmoid_rampup(5.0, 10) * terms["mimicry"]
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_hidden_labels_reach_no_term(tmp_path):
    torch.manual_seed(8)
    own = torch.randn(6, 5, requires_grad=True)
    labels = torch.tensor([1, IGNORE_LABEL, 3, IGNORE_LABEL, 0, 2])
    objective = build_objective(config(tmp_path, "loss: {mimicry: {weight: 0}}\n"), 0)
    loss, _ = objective(LossInputs(own, labels, progress=0.0))
    loss.backward()
    known = labels != IGNORE_LABEL
    assert loss.item() == pytest.approx(F.cross_entropy(own[known], labels[known]).item(), rel=1e-6)
    assert torch.all(own.grad[~known] == 0) and torch.all(own.grad[known].abs().sum(1) > 0)


def test_a_batch_with_no_known_label_has_zero_ce_and_still_trains_on_mimicry(tmp_path):
    # Semi-supervised DML meets batches whose every label is hidden; F.cross_entropy is NaN
    # there (0 / 0), which stopped the run or, skipping the step, lost its mimicry update.
    torch.manual_seed(11)
    own = torch.randn(6, 5, requires_grad=True)
    peers = torch.randn(1, 6, 5)
    hidden = torch.full((6,), IGNORE_LABEL)
    for smoothing in (0.0, 0.1):
        cohort = config(tmp_path, f"loss: {{ce: {{label_smoothing: {smoothing}}}, mimicry: {{weight: 1.0}}}}\n")
        objective = build_objective(cohort, 0)
        ce = objective.terms["ce"][0](LossInputs(own, hidden, progress=0.0, peers=peers))
        assert ce.item() == 0.0
        (ce_grad,) = torch.autograd.grad(ce, own)
        assert torch.all(ce_grad == 0)
        loss, terms = objective(LossInputs(own, hidden, progress=0.0, peers=peers))
        assert torch.isfinite(loss) and loss.item() == pytest.approx(mimicry_loss(own, peers).item(), rel=1e-6)
        (grad,) = torch.autograd.grad(loss, own)
        assert torch.isfinite(grad).all() and grad.abs().sum(1).min() > 0  # every sample still mimics its peer


def objective_gradient(objective, own, peers, labels):
    """The gradient of the peer terms alone (CE left out) with respect to the member's logits."""
    own = own.clone().requires_grad_(True)
    inputs = LossInputs(own, labels, progress=0.0, peers=peers)
    sum(weight * term(inputs) for name, (term, weight) in objective.terms.items() if name != "ce").backward()
    return own.grad


@pytest.mark.parametrize("shipped", ["digits_diffdml_aug.yaml", "cifar100_resnet34x3_diffdml_aug.yaml"])
def test_the_shipped_dplo_weights_push_a_too_close_pair_apart(shipped):
    from tests.conftest import REPO

    cohort = load_config(REPO / "configs" / shipped)
    assert cohort.loss.diversity.kind == "margin"
    objective = build_objective(cohort, 0)
    torch.manual_seed(9)
    own = torch.randn(16, 10)
    peers = (own + 0.05 * torch.randn(16, 10)).unsqueeze(0)  # KL far inside the 0.1-nat margin
    labels = torch.randint(0, 10, (16,))
    closeness = lambda z: mimicry_loss(z, peers, temperature=cohort.loss.mimicry.temperature).item()  # noqa: E731
    assert closeness(own) < cohort.loss.diversity.margin
    step = own - 0.5 * objective_gradient(objective, own, peers, labels)  # a gradient-descent step
    assert closeness(step) > closeness(own)


def test_equal_margin_and_mimicry_weights_cancel_and_are_refused(tmp_path):
    torch.manual_seed(10)
    own = torch.randn(8, 5)
    peers = (own + 0.01 * torch.randn(8, 5)).unsqueeze(0)
    labels = torch.randint(0, 5, (8,))
    cohort = config(tmp_path, "loss: {diversity: {kind: margin, weight: 2.0, margin: 0.5}}\n")
    cohort.loss.diversity.weight = 1.0  # λ = β: what the shipped configs had, before validation refused it
    gradient = objective_gradient(build_objective(cohort, 0), own, peers, labels)
    assert gradient.abs().max().item() < 1e-6  # inside the margin λ·KL + β·(m − KL) is the constant β·m
    with pytest.raises(
        Exception,
        match=r"member 0: loss\.diversity\.weight β=1 must exceed loss\.mimicry\.weight λ=1 "
        r"with kind margin.*e\.g\. loss\.diversity\.weight=2$",
    ):
        config(tmp_path, "loss: {diversity: {kind: margin, weight: 1.0, margin: 0.5}}\n")


def test_baselines_and_cskd_are_terms_by_name(tmp_path):
    torch.manual_seed(6)
    own, partners, labels = torch.randn(8, 5, requires_grad=True), torch.randn(8, 5), torch.randint(0, 5, (8,))
    cohort = config(
        tmp_path,
        "members: [{}]\nloss: {ce: {weight: 0}, focal: {weight: 1, gamma: 3}, mdca: {weight: 0.5}, "
        "cskd: {weight: 2, temperature: 4}, mimicry: {weight: 0}}\n",
    )
    objective = build_objective(cohort, 0)
    assert objective.names == ["focal", "mdca", "cskd"] and objective.needs == {"partners"}
    assert cohort.pairs_partners and cohort.independent
    loss, terms = objective(LossInputs(own, labels, progress=0.0, partners=partners))
    expected = focal_loss(own, labels, 3.0) + 0.5 * mdca_loss(own, labels) + 2 * cskd_loss(own, partners, 4.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert terms["cskd"].item() == pytest.approx(cskd_loss(own, partners, 4.0).item(), rel=1e-6)


def test_a_semi_supervised_cohort_trains_on_every_sample_and_its_independent_twin_on_the_labelled(tmp_path):
    dml = config(tmp_path, "members: [{}, {}]\ndata: {labelled_fraction: 0.1}\n")
    twin = config(tmp_path, "members: [{}, {}]\ndata: {labelled_fraction: 0.1}\nloss: {mimicry: {weight: 0}}\n")
    assert dml.data.semi_supervised and dml.trains_on_unlabelled
    assert twin.data.semi_supervised and not twin.trains_on_unlabelled


def test_each_term_is_registered_with_its_sections_config_class():
    sections = LossConfig().terms()
    assert {name: term.config_class for name, term in TERMS.items()} == {n: type(c) for n, c in sections.items()}
    check_registry(TERMS)


@pytest.mark.parametrize(
    "change, message",
    [
        (
            lambda terms: terms.pop("mdca"),
            r"^LossConfig\.mdca \(MDCAConfig\) has no registered term; "
            r"register its class with @register\('mdca', MDCAConfig\)$",
        ),
        (
            lambda terms: terms.update(ce=terms["focal"]),
            r"^term ce \(Focal\) is registered with FocalConfig, but LossConfig\.ce is CrossEntropyConfig$",
        ),
        (
            lambda terms: terms.update(extra=terms["ce"]),
            r"^term extra \(CrossEntropy\) is registered, but LossConfig has no field extra; "
            r"add one of type CrossEntropyConfig$",
        ),
        (
            lambda terms: terms.update({"ce": terms.pop("ce")}),
            r"^terms are registered in the order focal, mdca, cskd, mimicry, diversity, distill, ce, "
            r"but LossConfig's fields "
            r"are ce, focal, .*, distill; register them in the fields' order$",
        ),
    ],
)
def test_the_import_time_check_names_a_missing_or_mismatched_term(change, message):
    terms = dict(TERMS)
    change(terms)
    with pytest.raises(TypeError, match=message):
        check_registry(terms)


def test_terms_whose_input_is_absent_sit_the_step_out(tmp_path):
    """Between two exchanges (``exchange.every``) or before codistillation's first refresh the
    peers are absent: mimicry sits out, logged as 0; a member with no other term learns nothing."""
    torch.manual_seed(6)
    own, labels = torch.randn(8, 4, requires_grad=True), torch.randint(0, 4, (8,))
    cohort = config(tmp_path, "members: [{}, {loss: {ce: 0}}]\nloss: {mimicry: {weight: 0.5}}\n")
    loss, terms = build_objective(cohort, 0)(LossInputs(own, labels, progress=0.0, peers=None))
    assert torch.equal(loss, F.cross_entropy(own, labels)) and terms["mimicry"].item() == 0.0
    assert terms["loss"].item() == pytest.approx(loss.item())
    loss, terms = build_objective(cohort, 1)(LossInputs(own, labels, progress=0.0, peers=None))
    assert loss is None and terms == {"mimicry": torch.tensor(0.0), "loss": torch.tensor(0.0)}
    loss, _ = build_objective(cohort, 1)(LossInputs(own, labels, progress=0.0, peers=torch.randn(1, 8, 4)))
    assert loss is not None and loss.requires_grad
