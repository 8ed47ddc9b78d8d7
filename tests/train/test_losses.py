import math

import pytest
import torch
import torch.nn.functional as F

from cohort.train.losses import (
    cskd_loss,
    diversity_loss,
    focal_loss,
    js_divergence,
    kdcl_target,
    mdca_loss,
    mimicry_loss,
    sigmoid_rampup,
)


def kl_by_hand(p, q):
    return sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))


def test_pairwise_kl_matches_a_hand_computed_value():
    own = torch.tensor([[0.0, 1.0, 2.0]])
    peer = torch.tensor([[[2.0, 1.0, 0.0]]])
    p_own = torch.softmax(own[0], 0).tolist()
    p_peer = torch.softmax(peer[0, 0], 0).tolist()
    # p_own = (1, e, e²)/Z and p_peer its reverse; the middle class cancels and
    # ln(p_own[2] / p_own[0]) = 2, so KL(peer ‖ own) = 2 (e² − 1) / (1 + e + e²) = 1.15042.
    expected = 2 * (math.e**2 - 1) / (1 + math.e + math.e**2)
    assert kl_by_hand(p_peer, p_own) == pytest.approx(expected, rel=1e-6)  # float32 softmax
    assert mimicry_loss(own, peer).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_scales_by_t_squared():
    own, peer = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[[2.0, 1.0, 0.0]]])
    p_own = torch.softmax(own[0] / 4, 0).tolist()
    p_peer = torch.softmax(peer[0, 0] / 4, 0).tolist()
    assert mimicry_loss(own, peer, temperature=4.0).item() == pytest.approx(16 * kl_by_hand(p_peer, p_own), rel=1e-6)


def test_pairwise_averages_peers_and_peer_mean_uses_the_mean_distribution():
    torch.manual_seed(0)
    own, peers = torch.randn(5, 4), torch.randn(2, 5, 4)
    log_own = F.log_softmax(own, -1)
    each = [F.kl_div(log_own, F.log_softmax(p, -1), log_target=True, reduction="batchmean") for p in peers]
    assert mimicry_loss(own, peers).item() == pytest.approx(float(sum(each) / 2), rel=1e-6)
    mean_probs = torch.softmax(peers, -1).mean(0)
    expected = F.kl_div(log_own, mean_probs, reduction="batchmean")
    assert mimicry_loss(own, peers, target="peer_mean").item() == pytest.approx(expected.item(), rel=1e-6)


def test_pairwise_equals_peer_mean_for_two_members():
    torch.manual_seed(1)
    own, peer = torch.randn(8, 10), torch.randn(1, 8, 10)
    for divergence in ("kl", "js"):
        a = mimicry_loss(own, peer, target="pairwise", divergence=divergence, temperature=2.0)
        b = mimicry_loss(own, peer, target="peer_mean", divergence=divergence, temperature=2.0)
        assert a.item() == pytest.approx(b.item(), rel=1e-6)


def test_js_divergence_is_symmetric_bounded_and_matches_hand_value():
    a = torch.log(torch.tensor([[0.5, 0.5]]))
    b = torch.log(torch.tensor([[1.0 - 1e-9, 1e-9]]))
    m = [0.75, 0.25]
    expected = 0.5 * kl_by_hand([0.5, 0.5], m) + 0.5 * (1.0 * math.log(1.0 / 0.75))
    assert js_divergence(a, b).item() == pytest.approx(expected, abs=1e-6)
    assert js_divergence(b, a).item() == pytest.approx(expected, abs=1e-6)
    assert js_divergence(a, b).item() <= math.log(2)


def test_identical_peers_give_zero_mimicry():
    own = torch.randn(3, 6)
    assert mimicry_loss(own, own.unsqueeze(0).clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_sigmoid_rampup():
    assert sigmoid_rampup(0.0, 10) == pytest.approx(math.exp(-5))
    assert sigmoid_rampup(5.0, 10) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(10.0, 10) == 1.0 and sigmoid_rampup(3.0, 0) == 1.0


def test_margin_term_is_zero_with_zero_gradient_when_every_peer_is_far():
    own = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]], requires_grad=True)
    peers = torch.tensor([[[0.0, 0.0, 4.0], [4.0, 0.0, 0.0]]])  # KL well above the margin for both samples
    loss = diversity_loss(own, peers, torch.tensor([0, 1]), kind="margin", margin=0.5)
    loss.backward()
    assert loss.item() == 0.0 and torch.count_nonzero(own.grad) == 0


def test_margin_term_pushes_a_too_similar_member_away():
    torch.manual_seed(3)
    own = torch.randn(4, 5, requires_grad=True)
    peers = (own.detach() + 0.01 * torch.randn(4, 5)).unsqueeze(0)
    loss = diversity_loss(own, peers, torch.zeros(4, dtype=torch.long), kind="margin", margin=0.5)
    kl = mimicry_loss(own, peers).item()
    assert loss.item() == pytest.approx(0.5 - kl, rel=1e-5)  # every sample is inside the margin
    hot = diversity_loss(own, peers, torch.zeros(4, dtype=torch.long), kind="margin", margin=0.5, temperature=2.0)
    assert hot.item() == pytest.approx(4.0 * (0.5 - mimicry_loss(own, peers, temperature=2.0).item() / 4.0), rel=1e-5)
    loss.backward()
    assert own.grad.abs().sum() > 0


def test_nontarget_term_ignores_the_true_class_logit():
    torch.manual_seed(4)
    own, peers, labels = torch.randn(6, 5), torch.randn(2, 6, 5), torch.tensor([0, 1, 2, 3, 4, 0])
    base = diversity_loss(own, peers, labels, kind="nontarget")
    shifted = own.clone()
    shifted[torch.arange(6), labels] += torch.randn(6) * 10
    assert diversity_loss(shifted, peers, labels, kind="nontarget").item() == pytest.approx(base.item(), abs=1e-6)
    assert base.item() < 0  # it rewards disagreement on the wrong classes
    own_grad = own.clone().requires_grad_(True)
    diversity_loss(own_grad, peers, labels, kind="nontarget").backward()
    assert torch.all(own_grad.grad[torch.arange(6), labels] == 0)


# --- the calibration baselines and CS-KD, against their official code -------------------------
# Each transcription below follows the official implementation line by line (paths in the
# docstrings of cohort.train.losses); ours is vectorised and skips hidden labels.


def official_focal(logits, target, gamma):  # mdca-loss/MDCA-Calibration solvers/loss.py FocalLoss
    logpt = torch.nn.functional.log_softmax(logits, dim=1).gather(1, target.view(-1, 1)).view(-1)
    pt = logpt.exp()
    return (-1 * (1 - pt) ** gamma * logpt).mean()


def official_mdca(output, target):  # mdca-loss/MDCA-Calibration solvers/loss.py MDCA
    loss = torch.tensor(0.0)
    output = torch.softmax(output, dim=1)
    classes = output.shape[1]
    for c in range(classes):
        avg_count = (target == c).float().mean()
        avg_conf = torch.mean(output[:, c])
        loss = loss + torch.abs(avg_conf - avg_count)
    return loss / classes


def official_kdloss(inputs, target, temp_factor):  # alinlab/cs-kd train.py KDLoss
    log_p = torch.log_softmax(inputs / temp_factor, dim=1)
    q = torch.softmax(target / temp_factor, dim=1)
    return torch.nn.KLDivLoss(reduction="sum")(log_p, q) * (temp_factor**2) / inputs.size(0)


def test_focal_matches_a_hand_value_the_official_code_and_is_ce_at_gamma_zero():
    # p_y = 1/2: −(1/2)² ln(1/2) = 0.25 ln 2.
    assert focal_loss(torch.zeros(1, 2), torch.tensor([0]), 2.0).item() == pytest.approx(0.25 * math.log(2), rel=1e-6)
    torch.manual_seed(0)
    logits, labels = torch.randn(16, 7) * 3, torch.randint(0, 7, (16,))
    for gamma in (0.0, 1.0, 3.0):
        assert focal_loss(logits, labels, gamma).item() == pytest.approx(
            official_focal(logits, labels, gamma).item(), rel=1e-6
        )
    assert focal_loss(logits, labels, 0.0).item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-6)


def test_mdca_matches_a_hand_value_and_the_official_code():
    # Uniform predictions, both samples of class 0: |1/2 − 1| + |1/2 − 0| over 2 classes = 1/2.
    assert mdca_loss(torch.zeros(2, 2), torch.tensor([0, 0])).item() == pytest.approx(0.5)
    torch.manual_seed(1)
    logits, labels = torch.randn(32, 10) * 2, torch.randint(0, 10, (32,))
    assert mdca_loss(logits, labels).item() == pytest.approx(official_mdca(logits, labels).item(), rel=1e-6)


def test_cskd_matches_a_hand_value_and_the_official_kdloss():
    anchor, partner = torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([[2.0, 1.0, 0.0]])
    # KL(partner ‖ anchor) at T = 1 is 2 (e² − 1) / (1 + e + e²) (see the mimicry test above).
    assert cskd_loss(anchor, partner, 1.0).item() == pytest.approx(
        2 * (math.e**2 - 1) / (1 + math.e + math.e**2), rel=1e-6
    )
    assert cskd_loss(anchor, anchor, 4.0).item() == pytest.approx(0.0, abs=1e-7)
    torch.manual_seed(2)
    anchors, partners = torch.randn(12, 5) * 3, torch.randn(12, 5) * 3
    for t in (1.0, 4.0):
        assert cskd_loss(anchors, partners, t).item() == pytest.approx(
            official_kdloss(anchors, partners, t).item(), rel=1e-5
        )


def test_cskd_sends_no_gradient_to_the_partner():
    anchors, partners = torch.randn(4, 3, requires_grad=True), torch.randn(4, 3, requires_grad=True)
    cskd_loss(anchors, partners).backward()
    assert anchors.grad.abs().sum() > 0 and partners.grad is None


def test_hidden_labels_give_no_gradient_to_their_samples():
    torch.manual_seed(3)
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([0, -100, 2, -100, 3, 1])
    for loss in (
        focal_loss(logits, labels, 2.0),
        mdca_loss(logits, labels),
        F.cross_entropy(logits, labels, ignore_index=-100),
    ):
        (grad,) = torch.autograd.grad(loss, logits)
        assert grad[labels < 0].abs().sum() == 0 and grad[labels >= 0].abs().sum() > 0
    # A batch without any label contributes zero loss, not NaN.
    assert focal_loss(logits, torch.full((6,), -100), 1.0).item() == 0.0
    assert mdca_loss(logits, torch.full((6,), -100)).item() == 0.0


def test_kdcl_targets_by_hand():
    own = torch.tensor([[1.0, 3.0, 0.0]])
    peer = torch.tensor([[[2.0, 0.0, 5.0]]])
    everyone = torch.cat([own.unsqueeze(0), peer])
    assert kdcl_target(everyone, "ensemble_mean").tolist() == [[1.5, 1.5, 2.5]]
    # Shifted by the true class (0): [0, 2, −1] and [0, −2, 3]; their class-wise minimum:
    assert kdcl_target(everyone, "ensemble_min_logit", torch.tensor([0])).tolist() == [[0.0, -2.0, -1.0]]
    for target, labels in (("ensemble_mean", None), ("ensemble_min_logit", torch.tensor([0]))):
        expected = F.log_softmax(kdcl_target(everyone, target, labels) / 2, -1)
        kl = (expected.exp() * (expected - F.log_softmax(own / 2, -1))).sum()
        assert mimicry_loss(own, peer, target=target, temperature=2.0, labels=labels).item() == pytest.approx(
            4 * kl.item(), rel=1e-6
        )


def test_kdcl_target_is_a_constant_even_though_it_holds_the_members_own_logits():
    torch.manual_seed(4)
    own = torch.randn(5, 4, requires_grad=True)
    peers, labels = torch.randn(2, 5, 4), torch.randint(0, 4, (5,))
    for target in ("ensemble_mean", "ensemble_min_logit"):
        (grad,) = torch.autograd.grad(mimicry_loss(own, peers, target=target, labels=labels), own)
        fixed = kdcl_target(torch.cat([own.detach().unsqueeze(0), peers]), target, labels)
        reference = own.detach().clone().requires_grad_()
        kl = (F.softmax(fixed, -1) * (F.log_softmax(fixed, -1) - F.log_softmax(reference, -1))).sum(-1).mean()
        (expected,) = torch.autograd.grad(kl, reference)
        torch.testing.assert_close(grad, expected)


def test_nontarget_diversity_reads_only_samples_whose_label_is_known():
    torch.manual_seed(5)
    own, peers = torch.randn(6, 5), torch.randn(2, 6, 5)
    labels = torch.tensor([0, -100, 2, 4, -100, 1])
    known = labels >= 0
    got = diversity_loss(own, peers, labels, kind="nontarget", temperature=2.0)
    expected = diversity_loss(own[known], peers[:, known], labels[known], kind="nontarget", temperature=2.0)
    assert got.item() == pytest.approx(expected.item(), rel=1e-6)
    assert diversity_loss(own, peers, torch.full((6,), -100), kind="nontarget").item() == 0.0
