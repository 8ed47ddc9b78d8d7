import numpy as np
import pytest

from cohort.evaluate.dee import deep_ensemble_equivalent

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


def test_a_non_monotone_reference_is_made_monotone_by_the_running_min_rule():
    dee, _ = deep_ensemble_equivalent(0.75, SIZES, np.array([1.0, 0.7, 0.8, 0.6]), rule="running-min")
    assert dee == pytest.approx(1 + 0.25 / 0.3)
    # Past the bump the running minimum interpolates from 0.7 (size 2's), the official rule from size 3's 0.8.
    bumpy = np.array([1.0, 0.7, 0.8, 0.6])
    assert deep_ensemble_equivalent(0.65, SIZES, bumpy, rule="running-min")[0] == pytest.approx(3.5)
    assert deep_ensemble_equivalent(0.65, SIZES, bumpy)[0] == pytest.approx(3.75)


def official_notebook_dee(de, df):
    """A transcription of ``dee()`` in SamsungLabs/pytorch-ensembles ``notebooks/DEE camera ready
    plots.ipynb`` for one increasing metric (the log-likelihood, 'll'), with lists of
    (n_samples, mean) rows in place of its data frames."""
    isbetter = lambda a, b: a > b  # noqa: E731
    res = []
    de_iter = iter(de)
    de_n_samples, de_mean = next(de_iter)
    de_n_samples_prev, de_mean_prev = de_n_samples, de_mean
    for n_samples, df_mean in df:
        while isbetter(df_mean, de_mean):
            de_n_samples_prev, de_mean_prev = de_n_samples, de_mean
            try:
                de_n_samples, de_mean = next(de_iter)
            except StopIteration:
                break
        if de_n_samples == de_n_samples_prev:
            curr_dee = de_n_samples
        else:
            curr_dee = max(de_n_samples_prev, de_n_samples + (df_mean - de_mean) / (de_mean - de_mean_prev))
        res.append((n_samples, curr_dee))
    return res


def test_the_official_rule_is_the_official_notebooks_dee_on_any_curve():
    rng = np.random.default_rng(3)
    sizes = np.arange(1.0, 9.0)
    moved = []
    for _ in range(300):
        # A noisy, often non-monotone curve of calibrated NLLs, and values on, off and between its points.
        curve = np.sort(rng.uniform(0.6, 1.0, 8))[::-1] + rng.normal(0, 0.03, 8)
        for value in [*rng.uniform(0.5, 1.1, 5), *curve]:
            ((_, official),) = official_notebook_dee([(s, -c) for s, c in zip(sizes, curve)], [(1, -value)])
            ours, _ = deep_ensemble_equivalent(value, sizes, curve)
            assert ours == pytest.approx(official, abs=1e-12)
            moved.append(abs(ours - deep_ensemble_equivalent(value, sizes, curve, rule="running-min")[0]))
    assert max(moved) > 0.1  # the two rules do differ on such curves
    with pytest.raises(ValueError, match="unknown DEE rule 'nope'; valid: official, running-min"):
        deep_ensemble_equivalent(0.7, sizes, curve, rule="nope")


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


def test_cross_validated_nll_scores_log_of_epsilon_plus_p_as_the_official_protocol():
    # Ten confidently wrong samples whose p_y underflows: log p_y costs them hundreds of nats
    # (the mean NLL would be 1.67), the official get_ll's log(1e-12 + p_y) at most 27.6.
    from cohort.evaluate.metrics import cross_validated_nll

    rng = np.random.default_rng(1)
    labels = rng.integers(0, 10, 2000)
    logits = 4.0 * (rng.normal(size=(2000, 10)) + 2.0 * np.eye(10)[labels])
    wrong = rng.choice(2000, 10, replace=False)
    logits[wrong] = 0.0
    logits[wrong, (labels[wrong] + 1) % 10] = 400.0
    assert cross_validated_nll(logits, labels) == pytest.approx(official_kfold_nll(logits, labels, seed=0), abs=5e-3)


def test_cross_validated_temperature_agrees_with_the_official_protocol():
    from scipy.special import log_softmax

    from cohort.evaluate.metrics import cross_validated_nll

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
