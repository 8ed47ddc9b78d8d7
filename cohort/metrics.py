"""Evaluation metrics of a cohort's predictions: per member, and for the ensemble.

The ensemble averages member *probabilities* (design.md §4).
"""

from __future__ import annotations

import numpy as np
import torch


def classification_metrics(probs: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """Accuracy and NLL (mean −log p_y) of probabilities ``[N, C]``."""
    p_true = probs.gather(1, labels.unsqueeze(1)).squeeze(1)
    return {
        "acc": float((probs.argmax(1) == labels).double().mean()),
        "nll": float(-torch.log(p_true.double().clamp_min(1e-12)).mean()),
    }


def cohort_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[int | str, dict[str, float]]:
    """Metrics of each member ``0..K−1`` and of ``"ensemble"`` from logits ``[K, N, C]``."""
    logits_t = torch.from_numpy(np.asarray(logits, dtype=np.float64))
    labels_t = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    probs = torch.softmax(logits_t, dim=-1)
    rows: dict[int | str, dict[str, float]] = {m: classification_metrics(probs[m], labels_t) for m in range(len(probs))}
    rows["ensemble"] = classification_metrics(probs.mean(0), labels_t)
    return rows
