"""``cohort dee``: deep-ensemble equivalent (Ashukha et al. 2020).

The reference is an *independent* cohort (``CohortConfig.independent``: no member reads
its peers, e.g. ``loss.mimicry.weight: 0``): its sub-ensembles of
size 1..K give the curve of calibrated test NLL against ensemble size. A model's DEE is
the (linearly interpolated) size at which that curve reaches the model's calibrated NLL.

Calibrated NLL, two ways (``--temperature``): ``val`` (default) reads the ``c_nll`` the
run logged, temperature fitted on the validation split (log p_y, as every table of the
run); ``test-cv`` is the official protocol, the temperature fitted by 2-fold
cross-validation on the test set, 5 repeats, scoring log(1e-12 + p_y) as the official
code (``cohort.evaluate.metrics.cross_validated_nll``), recomputed from the saved test predictions.

Reading the curve, two rules (``--rule``, ``RULES``): ``official`` (default) is the
``dee()`` of the official notebook (SamsungLabs/pytorch-ensembles, ``notebooks/DEE camera
ready plots.ipynb``); ``running-min`` first makes the curve monotone. They differ only on a
curve that is not monotone (``deep_ensemble_equivalent``). Every line printed names both
choices.
"""

from __future__ import annotations

import numpy as np

from cohort.evaluate.metrics import cross_validated_nll, ensemble_logits, subsets
from cohort.evaluate.report import REPORTED, Run
from cohort.run.files import RunDirError

TEMPERATURES = ("val", "test-cv")
RULES = ("official", "running-min")
"""How ``deep_ensemble_equivalent`` reads the reference curve."""


def reference_curve(run: Run, temperature: str = "val") -> tuple[np.ndarray, np.ndarray]:
    """(sizes, calibrated NLL) of the independent reference run's sub-ensembles on test."""
    if not run.independent:
        raise RunDirError(
            f"{run.path / 'config.yaml'} trains with mimicry or diversity; the DEE reference must be an "
            f"independent run (loss.mimicry.weight: 0, loss.diversity.weight: 0)"
        )
    if temperature == "test-cv":
        logits, labels = run.predictions("test")
        k = len(logits)
        curve = [
            np.mean([cross_validated_nll(ensemble_logits(logits[list(s)]), labels) for s in subsets(k, size)])
            for size in range(1, k + 1)
        ]
        return np.arange(1, k + 1, dtype=float), np.array(curve)
    sizes = run.at()["ensemble"]["subensembles"]
    return np.array([s["size"] for s in sizes], dtype=float), np.array([s["c_nll"] for s in sizes])


def calibrated_nll(run: Run, temperature: str) -> dict:
    """``{member: calibrated test NLL}`` of a run (members and ``ensemble``), by ``temperature``."""
    if temperature == "val":
        return {member: row["c_nll"] for member, row in run.at().items()}
    logits, labels = run.predictions("test")
    values = {m: cross_validated_nll(logits[m], labels) for m in range(len(logits))}
    values["ensemble"] = cross_validated_nll(ensemble_logits(logits), labels)
    return values


def deep_ensemble_equivalent(
    value: float, sizes: np.ndarray, curve: np.ndarray, rule: str = "official"
) -> tuple[float, str]:
    """The interpolated size whose ensemble matches ``value``, and a note when off the curve.

    Both rules find the same segment: the first size i whose NLL is at most ``value`` (the
    value is worse than every smaller size's). ``official``, the notebook's ``dee()``
    (SamsungLabs/pytorch-ensembles, ``DEE camera ready plots.ipynb``): it walks the curve
    from size 1 while the value beats it, and interpolates between the raw curve's points
    i − 1 and i (its step assumes sizes one apart; this one scales by their spacing).
    ``running-min`` (ours, before the official rule was followed): the curve is made monotone
    first (a larger deep ensemble is never credited with a worse NLL than a smaller one), so
    the segment's upper end is the best NLL of sizes up to i − 1, not size i − 1's own. On a
    monotone curve the two agree; where size i − 1 is worse than a smaller size, ``official``
    gives the larger DEE.
    """
    if rule == "official":
        return official_dee(value, sizes, curve)
    if rule != "running-min":
        raise ValueError(f"unknown DEE rule {rule!r}; valid: {', '.join(RULES)}")
    monotone = np.minimum.accumulate(curve)
    if value >= monotone[0]:
        return float(sizes[0]), f"off the curve: no better than one independent member ({monotone[0]:.4f})"
    if value < monotone[-1]:
        return float(
            sizes[-1]
        ), f"off the curve: better than all {int(sizes[-1])} independent members ({monotone[-1]:.4f})"
    for i in range(1, len(sizes)):
        if value >= monotone[i]:
            lo, hi = monotone[i - 1], monotone[i]
            fraction = (lo - value) / (lo - hi) if lo > hi else 0.0
            return float(sizes[i - 1] + fraction * (sizes[i] - sizes[i - 1])), ""
    return float(sizes[-1]), ""


def official_dee(value: float, sizes: np.ndarray, curve: np.ndarray) -> tuple[float, str]:
    """``deep_ensemble_equivalent``'s ``official`` rule, for one value."""
    i = 0
    while i < len(curve) and value < curve[i]:
        i += 1
    if i == 0:
        return float(sizes[0]), f"off the curve: no better than one independent member ({curve[0]:.4f})"
    if i == len(curve):
        return float(sizes[-1]), (
            f"off the curve: better than all {int(sizes[-1])} independent members ({curve.min():.4f})"
        )
    upper, lower = curve[i - 1], curve[i]  # upper > value >= lower
    return float(max(sizes[i - 1], sizes[i] - (value - lower) / (upper - lower) * (sizes[i] - sizes[i - 1]))), ""


def run_dee(reference: str, runs: list[str], temperature: str = "val", rule: str = "official") -> list[dict]:
    if temperature not in TEMPERATURES:
        raise ValueError(f"unknown temperature protocol {temperature!r}; valid: {', '.join(TEMPERATURES)}")
    if rule not in RULES:
        raise ValueError(f"unknown DEE rule {rule!r}; valid: {', '.join(RULES)}")
    sizes, curve = reference_curve(Run.load(reference), temperature)
    how = "fitted on val" if temperature == "val" else "cross-validated on test, 2 folds × 5 repeats"
    reading = "the official dee()" if rule == "official" else "made monotone first (running minimum)"
    print(
        f"reference curve (calibrated test NLL by ensemble size; temperature {how}; curve read by {reading}): "
        + ", ".join(f"{int(s)}: {v:.4f}" for s, v in zip(sizes, curve))
    )
    results = []
    for path in runs:
        run = Run.load(path)
        values = calibrated_nll(run, temperature)
        # The run's reported members (reported_members) first, marked; then the others and the ensemble.
        for member in [*run.reported, *(m for m in values if m not in run.reported)]:
            c_nll = values[member]
            dee, note = deep_ensemble_equivalent(c_nll, sizes, curve, rule)
            results.append(
                {
                    "run": str(run.path),
                    "member": member,
                    "name": run.member_name(member),
                    "c_nll": c_nll,
                    "dee": dee,
                    "note": note,
                    "temperature": temperature,
                    "rule": rule,
                    "reported": member in run.reported,
                }
            )
            label = run.member_name(member)
            label += f" {REPORTED}" if member in run.reported else ""
            print(f"{run.name:<24} {label:<10} c_nll {c_nll:.4f}  DEE {dee:.2f}" + (f"  ({note})" if note else ""))
    return results
