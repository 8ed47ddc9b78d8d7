"""The loss functions behind the objective's terms (``cohort.objective``): DML mimicry and
DPLO diversity against detached peers.

Notation (design.md §3): p^T = softmax(z / T), K members; member i's own logits carry
gradients, its peers' logits arrive detached from the exchange.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def kl_divergence(target_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ p) per sample, from log-probabilities ``[..., B, C]`` → ``[..., B]``."""
    return (target_log_probs.exp() * (target_log_probs - log_probs)).sum(-1)


def js_divergence(a_log_probs: torch.Tensor, b_log_probs: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence per sample: ½ KL(a ‖ m) + ½ KL(b ‖ m), m = (a + b) / 2."""
    mixture = torch.logsumexp(torch.stack([a_log_probs, b_log_probs]), dim=0) - math.log(2.0)
    return 0.5 * kl_divergence(a_log_probs, mixture) + 0.5 * kl_divergence(b_log_probs, mixture)


def mimicry_loss(own_logits: torch.Tensor, peer_logits: torch.Tensor, *, target: str = "pairwise",
                 divergence: str = "kl", temperature: float = 1.0) -> torch.Tensor:
    """DML's mimicry term of one member (paper, Zhang et al. 2018), scaled by T².

    own_logits ``[B, C]``; peer_logits ``[K−1, B, C]`` (treated as constants).
    ``pairwise``: 1/(K−1) Σ_j D(p_j ‖ p_i); ``peer_mean``: D(mean_j p_j ‖ p_i).
    """
    if peer_logits.shape[0] == 0:
        return own_logits.new_zeros(())
    peer_logits = peer_logits.detach()
    own = F.log_softmax(own_logits / temperature, dim=-1)
    peers = F.log_softmax(peer_logits / temperature, dim=-1)
    if target == "peer_mean":
        peers = (torch.logsumexp(peers, dim=0) - math.log(peers.shape[0])).unsqueeze(0)
    elif target != "pairwise":
        raise ValueError(f"unknown mimicry target {target!r}")
    if divergence == "kl":
        per_sample = kl_divergence(peers, own.unsqueeze(0))
    elif divergence == "js":
        per_sample = js_divergence(peers, own.unsqueeze(0).expand_as(peers))
    else:
        raise ValueError(f"unknown divergence {divergence!r}")
    return temperature**2 * per_sample.mean()


def diversity_loss(own_logits: torch.Tensor, peer_logits: torch.Tensor, labels: torch.Tensor, *, kind: str,
                   margin: float = 0.0, temperature: float = 1.0) -> torch.Tensor:
    """DPLO, the diversity-preserving term of Diff-DML. Our formulation (design.md §3): the
    paper (CVPR 2025) publishes no code, so these are this project's definitions.

    ``margin``:    T² · 1/(K−1) Σ_j relu(m − KL(p_j^T ‖ p_i^T)), penalising only the peers
                   that have come closer than ``margin`` nats (zero loss and gradient otherwise).
                   Its gradient inside the margin is −T²·∇KL: added to mimicry's λ·T²·∇KL, the
                   pair is pushed apart only when β > λ (``CohortConfig.validate`` refuses
                   β ≤ λ); at β = 2λ members settle where their KL reaches m.
    ``nontarget``: −T² · 1/(K−1) Σ_j JS(q_i, q_j), q = softmax over the non-target logits
                   (the true class masked out): agree on the true class, differ on the wrong
                   ones; its gradient never touches the true class's logit.
    Both carry mimicry's T², so at any temperature the two terms' gradients are on one scale
    (the reason Hinton et al. scale distillation by T²). Peers are constants (detached).
    """
    if peer_logits.shape[0] == 0 or kind == "none":
        return own_logits.new_zeros(())
    peer_logits = peer_logits.detach()
    if kind == "margin":
        own = F.log_softmax(own_logits / temperature, dim=-1)
        peers = F.log_softmax(peer_logits / temperature, dim=-1)
        closeness = kl_divergence(peers, own.unsqueeze(0))  # [K−1, B]
        return temperature**2 * F.relu(margin - closeness).mean()
    if kind == "nontarget":
        mask = F.one_hot(labels, own_logits.shape[-1]).bool()
        own = F.log_softmax((own_logits / temperature).masked_fill(mask, float("-inf")), dim=-1)
        peers = F.log_softmax((peer_logits / temperature).masked_fill(mask, float("-inf")), dim=-1)
        # The masked class has probability 0 in both; zero its log so 0·log 0 terms vanish.
        own, peers = own.masked_fill(mask, 0.0), peers.masked_fill(mask, 0.0)
        return -(temperature**2) * js_divergence(peers, own.unsqueeze(0).expand_as(peers)).mean()
    raise ValueError(f"unknown diversity kind {kind!r}")


def sigmoid_rampup(epoch: float, rampup_epochs: float) -> float:
    """exp(−5 (1 − t)²) for t = epoch / rampup_epochs < 1, else 1 (Laine & Aila; ONE)."""
    if rampup_epochs <= 0 or epoch >= rampup_epochs:
        return 1.0
    t = max(epoch, 0.0) / rampup_epochs
    return math.exp(-5.0 * (1.0 - t) ** 2)
