"""Every evaluation number of a cohort, computed in one place from its logits.

Per member and for the ensemble (the mean of member *probabilities*; docs/usage.md,
"Evaluating and comparing"): accuracy, NLL, Brier (summed over classes), ECE (15 equal-width bins (lo, hi], as the
seeds' code: see ``equal_width_bins``; ``Binning`` sets another count and rule), class-wise ECE,
adaptive ECE (15 equal-mass bins), MCE and full ECE (Diff-DML's ``metric.py``);
the same after temperature scaling fitted on the validation split (``c_`` prefix); cohort
diversity (argmax disagreement, pairwise KL); and sub-ensembles of every size 1..K for the
ensemble-size curve.

The ensemble's temperature (ours): the ensemble's logits are log p̄ (p̄ the mean of member
probabilities) and one temperature divides them, as for a single model.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax, softmax

from cohort.config.names import METRICS

BINS = 15
MAX_SUBSETS = 64  # per ensemble size; beyond that a fixed random sample of member subsets
TEMPERATURE_BOUNDS = (0.01, 100.0)  # the search range of fit_temperature
DEE_EPSILON = 1e-12
"""The official DEE protocol scores log(ε + p_y), not log p_y (SamsungLabs/pytorch-ensembles
``metrics.py``, ``get_ll``; its temperature fit ``ts`` minimises the same): one sample whose
p_y underflows costs at most −log ε ≈ 27.6 nats there, where log p_y can cost hundreds."""
AT_BOUND_TOLERANCE = (
    1e-3  # in log T: far above the search's own tolerance (1e-5), so a fit stopped by a bound is caught
)


def _binned_gap(confidence: np.ndarray, hit: np.ndarray, bin_of: np.ndarray, total: int) -> float:
    """Σ_b (n_b / total) · |mean hit_b − mean confidence_b| over the non-empty bins."""
    counts = np.bincount(bin_of)
    nonempty = counts > 0
    hit_sum = np.bincount(bin_of, weights=hit)[nonempty]
    conf_sum = np.bincount(bin_of, weights=confidence)[nonempty]
    return float(np.abs(hit_sum - conf_sum).sum() / total)


def equal_width_bins(confidence: np.ndarray, bins: int = BINS) -> np.ndarray:
    """Bin b in 0..bins−1 holds (b/bins, (b+1)/bins]: a confidence of exactly 1.0 is in the last bin.

    (lo, hi] is the convention of Guo et al. (2017), giung2 (cs-giung), MDCA's official code
    and SamsungLabs/pytorch-ensembles, whose numbers we compare with; torchmetrics' [lo, hi)
    differs only on confidences that lie on an edge or saturate to 1.0. A confidence of 0
    (which those codes leave out of every bin) joins bin 0, and one rounded above 1 the last.
    """
    edges = np.linspace(0.0, 1.0, bins + 1)
    return np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)


@dataclass(frozen=True)
class Binning:
    """How the calibration errors bin a probability p (``train.calibration_bins`` and
    ``train.calibration_binning``): ``bins`` equal-width bins (adaptive ECE: equal-mass), bin b
    holding (b/M, (b+1)/M] (``upper``, ``equal_width_bins``: the project's 15) or bin floor(p·M),
    1.0 in the last (``floor``: Luminova1996/Diff-DML ``metric.py`` L14-16, its 10 bins; torchmetrics'
    [lo, hi) too). The two differ only on a p that lies on an edge."""

    bins: int = BINS
    rule: str = "upper"

    @classmethod
    def of(cls, config) -> Binning:
        """A run's binning, from its ``CohortConfig``."""
        return cls(config.train.calibration_bins, config.train.calibration_binning)

    def assign(self, p: np.ndarray) -> np.ndarray:
        """Each probability's equal-width bin, 0..bins−1."""
        if self.rule == "upper":
            return equal_width_bins(p, self.bins)
        if self.rule == "floor":
            return np.clip(np.floor(p * self.bins).astype(np.int64), 0, self.bins - 1)
        raise ValueError(f"unknown binning {self.rule!r}")

    def describe(self) -> str:
        """The binning, as a table names it."""
        rule = "(lo, hi]" if self.rule == "upper" else "floor(p·M), as Diff-DML's metric.py"
        return f"{self.bins} bins, {rule}"


DEFAULT_BINNING = Binning()
"""The project's: 15 equal-width bins (lo, hi]."""


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING) -> float:
    """ECE: Σ_b (n_b/N) |acc_b − conf_b| over equal-width bins of the top-1 confidence."""
    confidence = probs.max(1)
    hit = (probs.argmax(1) == labels).astype(np.float64)
    return _binned_gap(confidence, hit, binning.assign(confidence), len(labels))


def maximum_calibration_error(probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING) -> float:
    """MCE: max over the non-empty equal-width bins of |acc_b − conf_b| (Naeini et al. 2015; as
    Luminova1996/Diff-DML ``metric.py`` ``MCE``, L29-46, whose empty bins give 0 through a 1e-9)."""
    confidence = probs.max(1)
    hit = (probs.argmax(1) == labels).astype(np.float64)
    bin_of = binning.assign(confidence)
    counts = np.bincount(bin_of)
    nonempty = counts > 0
    gaps = np.bincount(bin_of, weights=hit - confidence)[nonempty] / counts[nonempty]
    return float(np.abs(gaps).max())


def full_calibration_error(probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING) -> float:
    """ "Full ECE" (Luminova1996/Diff-DML ``metric.py`` ``Full_ECE``, L90-111): every probability p_ic
    of every class in one set of equal-width bins, Σ_b |Σ_{(i,c) ∈ b} (1[y_i = c] − p_ic)| / N.
    Not class-wise ECE, which bins each class apart and divides by N·C."""
    flat = probs.reshape(-1)
    hit = (np.arange(probs.shape[1])[None, :] == labels[:, None]).reshape(-1).astype(np.float64)
    bin_of = binning.assign(flat)
    return float(np.abs(np.bincount(bin_of, weights=hit - flat)).sum() / len(labels))


def classwise_calibration_error(probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING) -> float:
    """Class-wise ECE (SCE): 1/C Σ_c Σ_b (n_bc/N) |freq_bc − conf_bc|, bins on every p_c."""
    num_classes = probs.shape[1]
    total = sum(
        _binned_gap(probs[:, c], (labels == c).astype(np.float64), binning.assign(probs[:, c]), len(labels))
        for c in range(num_classes)
    )
    return total / num_classes


def adaptive_calibration_error(probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING) -> float:
    """adaECE: ECE over ``binning.bins`` equal-mass bins of the sorted top-1 confidences."""
    confidence = probs.max(1)
    order = np.argsort(confidence, kind="stable")
    bin_of = np.empty(len(labels), dtype=np.int64)
    for b, chunk in enumerate(np.array_split(order, binning.bins)):
        bin_of[chunk] = b
    hit = (probs.argmax(1) == labels).astype(np.float64)
    return _binned_gap(confidence, hit, bin_of, len(labels))


def classification_metrics(
    log_probs: np.ndarray, labels: np.ndarray, binning: Binning = DEFAULT_BINNING
) -> dict[str, float]:
    """All of ``METRICS`` for log-probabilities ``[N, C]`` and integer labels ``[N]``."""
    log_probs = np.asarray(log_probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    probs = np.exp(log_probs)
    onehot = np.eye(probs.shape[1])[labels]
    return {
        "acc": float((probs.argmax(1) == labels).mean()),
        "nll": float(-log_probs[np.arange(len(labels)), labels].mean()),
        "brier": float(((probs - onehot) ** 2).sum(1).mean()),
        "ece": expected_calibration_error(probs, labels, binning),
        "cw_ece": classwise_calibration_error(probs, labels, binning),
        "adaece": adaptive_calibration_error(probs, labels, binning),
        "mce": maximum_calibration_error(probs, labels, binning),
        "full_ece": full_calibration_error(probs, labels, binning),
    }


def true_class_nll(log_probs: np.ndarray, labels: np.ndarray, epsilon: float = 0.0) -> float:
    """Mean −log p_y; with ``epsilon`` > 0, mean −log(ε + p_y), the official DEE protocol's
    score (``DEE_EPSILON``)."""
    picked = log_probs[np.arange(len(labels)), labels]
    return float(-(np.log(epsilon + np.exp(picked)) if epsilon > 0 else picked).mean())


def fit_temperature(logits: np.ndarray, labels: np.ndarray, epsilon: float = 0.0) -> float:
    """The temperature T that minimises the NLL of softmax(logits / T), searched over log T
    (with ``epsilon`` > 0 the NLL of ``true_class_nll``, as the official DEE protocol fits it).

    The search stays within ``TEMPERATURE_BOUNDS``; a result there (``at_bound``) means the
    optimum lies at or beyond the bound, so T is not the optimum and must be reported as such.
    """
    logits = np.asarray(logits, dtype=np.float64)

    def nll(log_t: float) -> float:
        return true_class_nll(log_softmax(logits / math.exp(log_t), axis=1), labels, epsilon)

    lowest, highest = TEMPERATURE_BOUNDS
    result = minimize_scalar(
        nll, bounds=(math.log(lowest), math.log(highest)), method="bounded", options={"xatol": 1e-5}
    )
    return float(math.exp(result.x))


def cross_validated_nll(
    logits: np.ndarray, labels: np.ndarray, folds: int = 2, repeats: int = 5, seed: int = 0
) -> float:
    """NLL after temperature scaling fitted by test-time cross-validation: the official DEE
    protocol (Ashukha et al. 2020; SamsungLabs/pytorch-ensembles ``metrics.py``,
    ``metrics_kfold``): split the test set into ``folds`` random folds, fit T on the others,
    score the held-out fold, over ``repeats`` shuffles; the mean over the folds × repeats
    scores. Fits and scores read log(ε + p_y) as theirs (``DEE_EPSILON``). The shuffles are
    seeded here (theirs are not), so a table is reproducible."""
    logits, labels = np.asarray(logits, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(repeats):
        parts = np.array_split(rng.permutation(len(labels)), folds)
        for held in range(folds):
            fit = np.concatenate([part for i, part in enumerate(parts) if i != held])
            temperature = fit_temperature(logits[fit], labels[fit], DEE_EPSILON)
            log_probs = log_softmax(logits[parts[held]] / temperature, axis=1)
            scores.append(true_class_nll(log_probs, labels[parts[held]], DEE_EPSILON))
    return float(np.mean(scores))


def at_bound(temperature: float) -> bool:
    """Whether a fitted temperature lies at (within ``AT_BOUND_TOLERANCE`` in log T of) a search bound."""
    return any(abs(math.log(temperature) - math.log(bound)) < AT_BOUND_TOLERANCE for bound in TEMPERATURE_BOUNDS)


def ensemble_logits(member_logits: np.ndarray) -> np.ndarray:
    """log of the mean member probability, ``[K, N, C]`` → ``[N, C]``."""
    log_probs = log_softmax(np.asarray(member_logits, dtype=np.float64), axis=-1)
    return np.logaddexp.reduce(log_probs, axis=0) - math.log(len(log_probs))


def diversity(member_logits: np.ndarray) -> dict[str, float]:
    """Mean over member pairs of argmax disagreement, and of KL(p_i ‖ p_j) over ordered pairs."""
    log_probs = log_softmax(np.asarray(member_logits, dtype=np.float64), axis=-1)
    k = len(log_probs)
    if k < 2:
        return {"disagreement": 0.0, "pairwise_kl": 0.0}
    predictions = log_probs.argmax(-1)
    pairs = list(itertools.combinations(range(k), 2))
    disagreement = np.mean([(predictions[i] != predictions[j]).mean() for i, j in pairs])
    kl = np.mean(
        [
            (np.exp(log_probs[i]) * (log_probs[i] - log_probs[j])).sum(-1).mean()
            for i in range(k)
            for j in range(k)
            if i != j
        ]
    )
    return {"disagreement": float(disagreement), "pairwise_kl": float(kl)}


def subsets(k: int, size: int) -> list[tuple[int, ...]]:
    """The member subsets of one size whose ensembles the sub-ensemble metrics average."""
    every = list(itertools.combinations(range(k), size))
    if len(every) > MAX_SUBSETS:
        chosen = np.random.default_rng(size).choice(len(every), MAX_SUBSETS, replace=False)
        every = [every[i] for i in sorted(chosen)]
    return every


def evaluate_cohort(
    logits: dict[str, np.ndarray], labels: dict[str, np.ndarray], binning: Binning = DEFAULT_BINNING
) -> dict[str, dict]:
    """Every metric of a cohort on each split, temperatures fitted on ``val``; calibration errors
    binned by ``binning``.

    ``logits[split]`` is ``[K, N, C]``. Returns ``{split: {member: row}}`` with member
    ``0..K−1`` and ``"ensemble"``; each row has ``METRICS``, their ``c_`` versions,
    ``temperature`` and ``temperature_at_bound`` (the fit stopped at a bound of
    ``TEMPERATURE_BOUNDS``); ensemble rows also carry ``disagreement``, ``pairwise_kl`` and
    ``subensembles`` (mean metrics of ensembles of each size 1..K, over member subsets).
    """
    k = next(iter(logits.values())).shape[0]
    fit_split = "val" if "val" in logits else next(iter(logits))
    temperatures = {m: fit_temperature(logits[fit_split][m], labels[fit_split]) for m in range(k)}
    temperatures["ensemble"] = fit_temperature(ensemble_logits(logits[fit_split]), labels[fit_split])
    subset_temperatures = {
        subset: fit_temperature(ensemble_logits(logits[fit_split][list(subset)]), labels[fit_split])
        for size in range(1, k + 1)
        for subset in subsets(k, size)
    }
    results = {}
    for split, split_logits in logits.items():
        y = labels[split]
        table: dict = {}
        for member in [*range(k), "ensemble"]:
            z = split_logits[member] if member != "ensemble" else ensemble_logits(split_logits)
            table[member] = _scored(z, y, temperatures[member], binning)
        table["ensemble"].update(diversity(split_logits))
        table["ensemble"]["subensembles"] = [
            _subensemble_row(split_logits, y, size, subset_temperatures, binning) for size in range(1, k + 1)
        ]
        results[split] = table
    return results


def _subensemble_row(
    split_logits: np.ndarray, labels: np.ndarray, size: int, temperatures: dict, binning: Binning
) -> dict:
    """Every metric averaged over the ensembles of ``size`` members, each subset scored once
    (scoring it again for every metric took a K = 10 evaluation of 10,000 images a split 229 s,
    most of the 300 s its peers wait for rank 0)."""
    k = split_logits.shape[0]
    rows = [
        _scored(ensemble_logits(split_logits[list(subset)]), labels, temperatures[subset], binning)
        for subset in subsets(k, size)
    ]
    keys = (*METRICS, *(f"c_{m}" for m in METRICS))
    return {"size": size, **{key: float(np.mean([row[key] for row in rows])) for key in keys}}


def _scored(logits: np.ndarray, labels: np.ndarray, temperature: float, binning: Binning) -> dict[str, float]:
    row = classification_metrics(log_softmax(logits, axis=-1), labels, binning)
    calibrated = classification_metrics(log_softmax(logits / temperature, axis=-1), labels, binning)
    row.update(
        {f"c_{key}": value for key, value in calibrated.items()},
        temperature=temperature,
        temperature_at_bound=at_bound(temperature),
    )
    return row


def probabilities(logits: np.ndarray) -> np.ndarray:
    """softmax over the last axis, in float64."""
    return softmax(np.asarray(logits, dtype=np.float64), axis=-1)
