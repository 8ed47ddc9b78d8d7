"""Diff-DML's objective as its code computes it: the project's terms, with ``learns_from`` and a
member without cross-entropy, against a float64 transcription of ``Align_model.get_loss``
(Luminova1996/Diff-DML ``align.py`` L17-137) for the primary and one or two auxiliaries."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cohort.config import load_config
from cohort.train.exchange import LogitExchange
from cohort.train.inputs import chosen_peers
from cohort.train.objective import LossInputs, build_objective

ALIGN_WEIGHT = ALIGN_WEIGHT_B = 0.9  # train_align.sh: --align_weight=${align_weight} --align_weight_B=${align_weight}


def align_get_loss(out_a: torch.Tensor, out_bs: list[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
    """``Align_model.get_loss`` as ``train_align.sh`` runs it (align_flag 1, use_ce 1, train_B 0, no
    smoothing, focal, norm, conf model, self-align, fudge, fix_A or fix_B; no ignored labels), with the
    networks' outputs given instead of the networks: the one scalar ``train.py`` L267-268 backpropagates."""
    loss = 0
    pred_A = F.log_softmax(out_a, dim=-1)  # L47
    pred_A = pred_A.view(-1, pred_A.size(-1))  # L49
    pred_A_tmp = pred_A[label != -100, :]  # L51
    label_tmp = label[label != -100]  # L52
    prob_A_tmp = F.softmax(pred_A_tmp, dim=-1).detach()  # L56
    loss_xe = F.nll_loss(pred_A_tmp, label_tmp)  # L92: classification_loss → base_loss (calibration_utils.py L12)
    pred_B_tmp_list, prob_B_tmp_list = [], []
    for out_b in out_bs:  # L103-114
        pred_B = F.log_softmax(out_b, dim=-1)
        pred_B_tmp = pred_B
        prob_B_tmp = F.softmax(pred_B_tmp, dim=-1).detach()
        pred_B_tmp_list.append(pred_B_tmp)
        prob_B_tmp_list.append(prob_B_tmp)
    loss_align_A = 0
    loss_align_B = 0
    for i in range(len(out_bs)):  # L128-130
        loss_align_A += torch.sum(prob_B_tmp_list[i] * (pred_B_tmp_list[i].detach() - pred_A_tmp)) / pred_A_tmp.size(0)
        loss_align_B += torch.sum(prob_A_tmp * (pred_A_tmp.detach() - pred_B_tmp_list[i])) / pred_A_tmp.size(0)
    loss_align_A /= len(out_bs)  # L131
    loss_align = loss_align_A * ALIGN_WEIGHT + loss_align_B * ALIGN_WEIGHT_B  # L132
    loss += loss_xe + loss_align  # L134
    return loss


def recipe(tmp_path, auxiliaries: int, learns_from: bool = True):
    """Diff-DML's objective in the project's keys (as ``configs/*_diffdml.yaml``): a primary with
    CE and mimicry 0.9, auxiliaries with mimicry 0.9 alone, learning from the primary."""
    aux = "{{name: aux{j}, loss: {{ce: 0.0}}{learns}}}"
    learns = ", learns_from: [primary]" if learns_from else ""
    members = ", ".join(["{name: primary}", *(aux.format(j=j, learns=learns) for j in range(auxiliaries))])
    path = tmp_path / "c.yaml"
    path.write_text(f"members: [{members}]\nreported_members: [primary]\nloss: {{mimicry: {{weight: 0.9}}}}\n")
    return load_config(path)


def ours(config, logits: torch.Tensor, labels: torch.Tensor) -> list[tuple[torch.Tensor, dict]]:
    """Each member's total and terms, its peers chosen as the Peers provider chooses them: the
    exchange's rows (``LogitExchange.peers``), then the member's ``learns_from`` (``chosen_peers``)."""
    out = []
    for m in range(config.num_members):
        peers = LogitExchange(None, m, config.num_members).peers(logits.detach())
        inputs = LossInputs(logits[m], labels, 0.0, peers=chosen_peers(peers, config.peer_positions(m)))
        out.append(build_objective(config, m)(inputs))
    return out


@pytest.mark.parametrize("auxiliaries", [1, 2])
def test_primary_and_auxiliaries_equal_the_codes_loss_and_gradients(tmp_path, auxiliaries):
    config = recipe(tmp_path, auxiliaries)
    assert config.peer_positions(0) is None and all(config.peer_positions(m) == [0] for m in range(1, auxiliaries + 1))
    torch.manual_seed(auxiliaries)
    logits = (3 * torch.randn(1 + auxiliaries, 32, 10, dtype=torch.float64)).requires_grad_(True)
    labels = torch.randint(0, 10, (32,))
    code = align_get_loss(logits[0], list(logits[1:]), labels)
    (code_grad,) = torch.autograd.grad(code, logits)

    members = ours(config, logits, labels)
    assert [sorted(terms) for _, terms in members] == [["ce", "loss", "mimicry"]] + [["loss", "mimicry"]] * auxiliaries
    total = sum(loss for loss, _ in members)
    (grad,) = torch.autograd.grad(total, logits)
    # One scalar there, K objectives here: each member's gradient reaches its own logits only.
    assert torch.allclose(total, code, rtol=1e-12, atol=1e-12)
    assert torch.allclose(grad, code_grad, rtol=1e-10, atol=1e-13)
    # The primary: CE + 0.9 · mean_B KL(p_B ‖ p_A); each auxiliary: 0.9 · KL(p_A ‖ p_B), no CE.
    (primary, terms), *auxiliary = members
    kl = lambda p, q: (p.exp() * (p - q)).sum(-1).mean()  # noqa: E731
    logs = F.log_softmax(logits.detach(), -1)
    mean_kl = sum(kl(logs[j], logs[0]) for j in range(1, auxiliaries + 1)) / auxiliaries
    assert torch.allclose(primary, F.cross_entropy(logits[0], labels) + 0.9 * mean_kl, rtol=1e-12)
    for j, (loss, _) in enumerate(auxiliary, start=1):
        assert torch.allclose(loss, 0.9 * kl(logs[0], logs[j]), rtol=1e-12)


def test_auxiliaries_that_read_every_peer_differ_from_the_code(tmp_path):
    """Without ``learns_from``, two auxiliaries read each other too (DML): not the code's objective."""
    torch.manual_seed(3)
    logits = torch.randn(3, 16, 10, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 10, (16,))
    (code_grad,) = torch.autograd.grad(align_get_loss(logits[0], list(logits[1:]), labels), logits)
    members = ours(recipe(tmp_path, 2, learns_from=False), logits, labels)
    (grad,) = torch.autograd.grad(sum(loss for loss, _ in members), logits)
    assert torch.allclose(grad[0], code_grad[0], rtol=1e-10)  # the primary reads both either way
    assert not torch.allclose(grad[1:], code_grad[1:], rtol=1e-3)


def test_chosen_peers_are_rows_of_the_exchanges_peers_of_plain_and_batch_ensemble_members(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(
        "members: [{name: a}, {name: b, batch_ensemble: 2, learns_from: [a, d]}, {name: c}, "
        "{name: d, learns_from: [1, c]}]\n"
    )
    config = load_config(path)
    # Networks in member_names' order: a, b.0, b.1, c, d (rows 0..4).
    assert config.member_names == ["a", "b.0", "b.1", "c", "d"]
    assert config.peer_positions(0) is None and config.peer_positions(2) is None
    assert config.peer_positions(1) == [0, 2]  # b's peers: a, c, d (its own rows removed) → a and d
    assert config.peer_positions(3) == [1, 2, 3]  # d's peers: a, b.0, b.1, c → b.0, b.1, c
    logits = torch.arange(5.0).view(5, 1, 1).expand(5, 2, 3)
    plain = LogitExchange(None, 3, 4, sizes=[1, 2, 1, 1]).peers(logits)
    assert chosen_peers(plain, config.peer_positions(3))[:, 0, 0].tolist() == [1.0, 2.0, 3.0]
    ensemble = LogitExchange(None, 1, 4, sizes=[1, 2, 1, 1]).peers(logits)  # [2, 3, B, C]
    assert chosen_peers(ensemble, config.peer_positions(1))[:, :, 0, 0].tolist() == [[0.0, 4.0], [0.0, 4.0]]
    assert chosen_peers(plain, None) is plain and chosen_peers(None, [0]) is None
