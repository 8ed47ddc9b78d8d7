import math

import pytest
import torch
import torch.nn.functional as F

from cohort.losses import diversity_loss, js_divergence, mimicry_loss, sigmoid_rampup


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
