"""The loss functions behind the objective's terms (``cohort.train.objective``): DML mimicry (and
KDCL's ensemble targets) and DPLO diversity against detached peers; focal loss and MDCA,
the calibration baselines; CS-KD's class-wise distillation from same-class partners;
distillation from a trained cohort's teachers.

Notation: p^T = softmax(z / T), K members; member i's own logits carry
gradients, its peers' logits arrive detached from the exchange.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from cohort.data.batch import IGNORE_LABEL


def kl_divergence(target_log_probs: torch.Tensor, log_probs: torch.Tensor) -> torch.Tensor:
    """KL(target ‖ p) per sample, from log-probabilities ``[..., B, C]`` → ``[..., B]``."""
    return (target_log_probs.exp() * (target_log_probs - log_probs)).sum(-1)


def js_divergence(a_log_probs: torch.Tensor, b_log_probs: torch.Tensor) -> torch.Tensor:
    """Jensen–Shannon divergence per sample: ½ KL(a ‖ m) + ½ KL(b ‖ m), m = (a + b) / 2."""
    mixture = torch.logsumexp(torch.stack([a_log_probs, b_log_probs]), dim=0) - math.log(2.0)
    return 0.5 * kl_divergence(a_log_probs, mixture) + 0.5 * kl_divergence(b_log_probs, mixture)


def mimicry_loss(
    own_logits: torch.Tensor,
    peer_logits: torch.Tensor,
    *,
    target: str = "pairwise",
    divergence: str = "kl",
    temperature: float = 1.0,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """DML's mimicry term of one member (paper, Zhang et al. 2018), scaled by T².

    own_logits ``[B, C]``; peer_logits ``[K−1, B, C]`` (treated as constants).
    ``pairwise``: 1/(K−1) Σ_j D(p_j ‖ p_i); ``peer_mean``: D(mean_j p_j ‖ p_i);
    ``ensemble_mean`` and ``ensemble_min_logit``: D(p_ens ‖ p_i) with KDCL's targets
    (``kdcl_target``), built from all K members' logits, the member's own detached.
    """
    if peer_logits.shape[0] == 0:
        return own_logits.new_zeros(())
    peer_logits = peer_logits.detach()
    own = F.log_softmax(own_logits / temperature, dim=-1)
    if target in KDCL_TARGETS:
        everyone = torch.cat([own_logits.detach().unsqueeze(0), peer_logits])
        peers = F.log_softmax(kdcl_target(everyone, target, labels) / temperature, dim=-1).unsqueeze(0)
    elif target == "peer_mean":
        peers = F.log_softmax(peer_logits / temperature, dim=-1)
        peers = (torch.logsumexp(peers, dim=0) - math.log(peers.shape[0])).unsqueeze(0)
    elif target == "pairwise":
        peers = F.log_softmax(peer_logits / temperature, dim=-1)
    else:
        raise ValueError(f"unknown mimicry target {target!r}")
    if divergence == "kl":
        per_sample = kl_divergence(peers, own.unsqueeze(0))
    elif divergence == "js":
        per_sample = js_divergence(peers, own.unsqueeze(0).expand_as(peers))
    else:
        raise ValueError(f"unknown divergence {divergence!r}")
    return temperature**2 * per_sample.mean()


KDCL_TARGETS = ("ensemble_mean", "ensemble_min_logit")
"""Mimicry targets built from every member's logits, the member's own included (``kdcl_target``)."""


def kdcl_target(all_logits: torch.Tensor, kind: str, labels: torch.Tensor | None = None) -> torch.Tensor:
    """KDCL's ensemble teacher logits (Guo et al., "Online Knowledge Distillation via
    Collaborative Learning", CVPR 2020, §3.2) from every member's logits ``[K, B, C]``.

    ``ensemble_mean``: the mean of the members' logits. KDCL has no official code; this is
    what its best-known public implementation (shaoeric/Online-Knowledge-Distillation-via-
    Collaborative-Learning, ``train.py``) distils from. KDCL's own "Naive" variant instead
    takes the logits of the member with the lowest cross-entropy (not offered here).
    ``ensemble_min_logit`` (KDCL-MinLogit): z_k − z_k[y] shifts each member's logits so that
    the true class's is 0, and the target takes, class by class, the smallest over members:
    the ensemble most confident in the true class any member allows. It reads the labels.
    The temperature is mimicry's (the paper's value was not verified here).
    """
    if kind == "ensemble_mean":
        return all_logits.mean(0)
    if kind == "ensemble_min_logit":
        if labels is None or bool((labels < 0).any()):
            raise ValueError("ensemble_min_logit needs every sample's label")
        true_logit = all_logits.gather(-1, labels.view(1, -1, 1).expand(all_logits.shape[0], -1, 1))
        return (all_logits - true_logit).min(0).values
    raise ValueError(f"unknown KDCL target {kind!r}")


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy (optionally label-smoothed), mean over the labelled samples; hidden labels
    (negative) contribute nothing. A batch with no known label (semi-supervised DML, §3.4 of
    Zhang et al. 2018: CE on the labelled samples only) gives exactly 0 with zero gradient:
    ``F.cross_entropy`` would divide by zero labelled samples and return NaN, stopping the run
    or, with ``train.on_nonfinite: skip_step``, losing the batch's mimicry update too."""
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    # Whenever a label is known, exactly the computation the term made before this guard.
    return F.cross_entropy(logits, labels, label_smoothing=label_smoothing, ignore_index=IGNORE_LABEL)


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, gamma: float) -> torch.Tensor:
    """Focal loss, mean over the labelled samples of −(1 − p_y)^γ log p_y (Lin et al. 2017;
    the fixed-γ form of Mukhoti et al. 2020 and of MDCA's code, mdca-loss/MDCA-Calibration
    ``solvers/loss.py``). Hidden labels (negative) contribute nothing; γ = 0 is cross-entropy."""
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    log_p = F.log_softmax(logits[known], dim=-1).gather(1, labels[known].unsqueeze(1)).squeeze(1)
    return -((1 - log_p.exp()) ** gamma * log_p).mean()


def mdca_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MDCA (Hebbalaguppe et al., CVPR 2022; official code mdca-loss/MDCA-Calibration,
    ``solvers/loss.py``, class ``MDCA``): 1/C · Σ_c |mean_batch p_c − mean_batch 1[y = c]|,
    over the batch's labelled samples. It reads one batch: with R replicas, each replica's
    local shard of B samples (the gradient is then averaged by DDP, not the statistic)."""
    known = labels >= 0
    if not bool(known.any()):
        return logits.sum() * 0.0
    probs = F.softmax(logits[known], dim=-1)
    frequency = F.one_hot(labels[known], logits.shape[-1]).to(probs.dtype)
    return (probs.mean(0) - frequency.mean(0)).abs().mean()


def cskd_loss(anchor_logits: torch.Tensor, partner_logits: torch.Tensor, temperature: float = 4.0) -> torch.Tensor:
    """CS-KD's class-wise term (Yun et al., CVPR 2020; official code alinlab/cs-kd ``KDLoss``):
    T² · Σ_c KL(softmax(z_partner/T) ‖ softmax(z_anchor/T)) / B, the partner (a sample of the
    anchor's class) a constant. Equal to a batch-mean KL."""
    partner = F.log_softmax(partner_logits.detach() / temperature, dim=-1)
    anchor = F.log_softmax(anchor_logits / temperature, dim=-1)
    return temperature**2 * kl_divergence(partner, anchor).mean()


def distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 4.0
) -> torch.Tensor:
    """Knowledge distillation from an ensemble (Hinton et al. 2015), as Nam et al.'s official code
    (cs-giung/giung2 ``projects/Diversity-Matters/scripts/train_student.py``) computes it:
    T² · KL(p_teacher^T ‖ p_student^T) with ``F.kl_div(..., reduction="batchmean")``, i.e. the
    batch mean of the per-sample KL. ``teacher_logits`` ``[J, B, C]`` are constants; with J > 1
    the target is the mean of the J teachers' tempered probabilities (one student, many teachers).
    """
    teachers = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    target = torch.logsumexp(teachers, dim=0) - math.log(teachers.shape[0])
    student = F.log_softmax(student_logits / temperature, dim=-1)
    return temperature**2 * kl_divergence(target, student).mean()


def diversity_loss(
    own_logits: torch.Tensor,
    peer_logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    kind: str,
    margin: float = 0.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """DPLO as the summary of Diff-DML reads it, a diversity-preserving term. Our formulation
    (docs/methods.md, "Diff-DML as the summary reads it"), written when no code was known: these are
    this project's definitions. The code (Luminova1996/Diff-DML ``align.py``) has no such term.

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
        # A sample whose label is hidden has no known non-target set: it takes no part.
        known = labels >= 0
        if not bool(known.all()):
            if not bool(known.any()):
                return own_logits.sum() * 0.0
            own_logits, peer_logits, labels = own_logits[known], peer_logits[:, known], labels[known]
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
