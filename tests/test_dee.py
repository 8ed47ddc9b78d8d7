import numpy as np
import pytest

from cohort.dee import deep_ensemble_equivalent

SIZES = np.array([1.0, 2.0, 3.0, 4.0])
CURVE = np.array([1.0, 0.8, 0.7, 0.65])


@pytest.mark.parametrize("value, expected", [(0.8, 2.0), (0.9, 1.5), (0.75, 2.5), (0.66, 3.8), (0.65, 4.0)])
def test_interpolates_on_the_curve(value, expected):
    dee, note = deep_ensemble_equivalent(value, SIZES, CURVE)
    assert dee == pytest.approx(expected) and note == ""


def test_off_the_curve_is_said():
    assert deep_ensemble_equivalent(1.2, SIZES, CURVE) == (
        1.0,
        pytest.approx("off the curve: no better than one independent member (1.0000)"),
    )
    dee, note = deep_ensemble_equivalent(0.5, SIZES, CURVE)
    assert dee == 4.0 and note.startswith("off the curve: better than all 4")


def test_a_non_monotone_reference_is_made_monotone():
    dee, _ = deep_ensemble_equivalent(0.75, SIZES, np.array([1.0, 0.7, 0.8, 0.6]))
    assert dee == pytest.approx(1 + 0.25 / 0.3)


def official_kfold_nll(logits: np.ndarray, labels: np.ndarray, seed: int) -> float:
    """A transcription of SamsungLabs/pytorch-ensembles ``metrics_kfold(..., temp_scale=True)``'s
    NLL: KFold(2, shuffle) × 5 runs, T by Nelder–Mead from 1 on the training fold."""
    from scipy.optimize import minimize
    from scipy.special import log_softmax
    from sklearn.model_selection import KFold

    def ll(lp, y):
        return np.log(1e-12 + np.exp(lp)[np.arange(len(y)), y]).mean()

    total = 0.0
    for run in range(5):
        for tr, te in KFold(n_splits=2, shuffle=True, random_state=seed + run).split(logits):
            t = minimize(
                lambda t: -ll(log_softmax(logits[tr] / t, axis=1), labels[tr]),  # noqa: B023 (called at once)
                1,
                method="nelder-mead",
                options={"xatol": 1e-3},
            ).x[0]  # theirs passes xtol, the older scipy name
            total += -ll(log_softmax(logits[te] / t, axis=1), labels[te]) / 10
    return total


def test_cross_validated_temperature_agrees_with_the_official_protocol():
    from scipy.special import log_softmax

    from cohort.metrics import cross_validated_nll

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 4000)
    logits = rng.normal(size=(4000, 10)) + 2.0 * np.eye(10)[labels]
    logits *= 4.0  # overconfident: temperature scaling helps
    raw = -log_softmax(logits, axis=1)[np.arange(4000), labels].mean()
    ours = cross_validated_nll(logits, labels)
    assert ours < raw - 0.05
    # Different random folds, same protocol: the two agree to within the folds' noise.
    assert ours == pytest.approx(official_kfold_nll(logits, labels, seed=0), abs=5e-3)
    assert ours == cross_validated_nll(logits, labels)  # seeded: a table is reproducible
