import math

import numpy as np
import pytest
import torch
from scipy.special import log_softmax, softmax

from cohort.evaluate.metrics import (
    TEMPERATURE_BOUNDS,
    Binning,
    adaptive_calibration_error,
    at_bound,
    classification_metrics,
    classwise_calibration_error,
    diversity,
    ensemble_logits,
    equal_width_bins,
    evaluate_cohort,
    expected_calibration_error,
    fit_temperature,
    full_calibration_error,
    maximum_calibration_error,
)

LN3 = math.log(3.0)


def log(p):
    return np.log(np.asarray(p, dtype=np.float64))


def test_accuracy_nll_brier_by_hand():
    probs = [[0.75, 0.25], [0.5, 0.5], [0.25, 0.75]]
    labels = np.array([0, 1, 0])
    row = classification_metrics(log(probs), labels)
    assert row["acc"] == pytest.approx(1 / 3)  # the tie goes to class 0 and is wrong; sample 3 is wrong
    assert row["nll"] == pytest.approx(-(math.log(0.75) + math.log(0.5) + math.log(0.25)) / 3)
    # Brier summed over classes: 2·0.25², 2·0.5², 2·0.75².
    assert row["brier"] == pytest.approx((0.125 + 0.5 + 1.125) / 3)


EDGES = np.linspace(0.0, 1.0, 16)  # the 15 bins' edges, computed as equal_width_bins computes them


def test_equal_width_bins_are_lo_exclusive_hi_inclusive():
    # 0 joins the first bin, an inner edge the bin below it, 1.0 the last bin: 15 bins in all.
    assert equal_width_bins(np.array([0.0, EDGES[2], np.nextafter(EDGES[2], 1.0), 0.999, 1.0])).tolist() == [
        0,
        1,
        2,
        14,
        14,
    ]


def test_ece_by_hand():
    # Confidences 0.9, 0.9 (bin 13), 0.65 (bin 9), 1.0 and 0.95 (both in the last bin, 14);
    # hits 1, 0, 1, 0, 1 (the saturated prediction is wrong, so keeping 1.0 apart would differ).
    probs = np.array([[0.9, 0.1], [0.9, 0.1], [0.35, 0.65], [1.0, 0.0], [0.05, 0.95]])
    labels = np.array([0, 1, 1, 1, 1])
    expected = (2 / 5) * abs(0.5 - 0.9) + (1 / 5) * abs(1 - 0.65) + (2 / 5) * abs(0.5 - 0.975)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_ece_confidence_on_an_inner_edge_is_in_the_lower_bin():
    # 8/15 (bin 7's upper edge) joins 0.51 in bin 7, not 0.55 in bin 8; hits 0, 1, 1.
    edge = EDGES[8]
    probs = np.array([[edge, 1 - edge], [0.51, 0.49], [0.55, 0.45]])
    labels = np.array([1, 0, 0])
    expected = (2 / 3) * abs(0.5 - (edge + 0.51) / 2) + (1 / 3) * abs(1 - 0.55)
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)


def test_classwise_ece_by_hand():
    probs = np.array([[0.9, 0.1], [0.2, 0.8]])
    labels = np.array([0, 0])
    # Class 0: p = 0.9 (bin 13, freq 1) and 0.2 (bin 2: an edge, so the lower bin; freq 1): (1/2)(0.1) + (1/2)(0.8).
    # Class 1: p = 0.1 (bin 1, freq 0) and 0.8 (bin 11, an edge; freq 0): (1/2)(0.1) + (1/2)(0.8).
    assert classwise_calibration_error(probs, labels) == pytest.approx(0.45)


def test_adaptive_ece_uses_equal_mass_bins():
    confidence = np.linspace(0.55, 0.99, 30)
    probs = np.stack([confidence, 1 - confidence], 1)
    labels = np.zeros(30, dtype=int)
    labels[::3] = 1  # every third prediction is wrong
    expected = sum(
        len(c) / 30 * abs(np.mean(labels[c] == 0) - confidence[c].mean()) for c in np.array_split(np.arange(30), 15)
    )
    assert adaptive_calibration_error(probs, labels) == pytest.approx(expected)


def test_ece_agrees_with_torchmetrics_on_random_logits():
    from torchmetrics.classification import MulticlassCalibrationError

    # torchmetrics bins [lo, hi), we bin (lo, hi]: the two agree except on confidences that lie
    # on an edge or saturate to 1.0, so this data has neither (see the giung2 check for those).
    rng = np.random.default_rng(0)
    for scale in (0.5, 2.0, 6.0):
        logits = rng.normal(size=(2000, 10)) * scale
        labels = rng.integers(0, 10, size=2000)
        probs = torch.softmax(torch.from_numpy(logits), 1)
        assert not np.isin(probs.max(1).values.numpy(), EDGES).any()
        expected = MulticlassCalibrationError(num_classes=10, n_bins=15, norm="l1")(probs, torch.from_numpy(labels))
        ours = expected_calibration_error(probs.numpy(), labels)
        assert ours == pytest.approx(expected.item(), abs=1e-6)


def giung2_ece(probs, labels, n_bins=15):
    """ECE as giung2 computes it, transcribed to numpy for this test only.

    From cs-giung/giung2, giung2/evaluation/calibration.py, ``evaluate_ece`` (commit e524e206):
    the top-1 confidence in bin (lo, hi] of ``linspace(0, 1, n_bins + 1)``, and
    Σ_bins |mean confidence − accuracy| · (share of samples in the bin) over non-empty bins.
    giung2's edges are float32 (torch.linspace); ours are float64, as the package's are.
    """
    confidence, hit = probs.max(1), probs.argmax(1) == labels
    ticks = np.linspace(0.0, 1.0, n_bins + 1)
    ece = 0.0
    for lo, hi in zip(ticks[:-1], ticks[1:]):
        in_bin = (confidence > lo) & (confidence <= hi)
        share = in_bin.mean()
        if share > 0:
            ece += abs(confidence[in_bin].mean() - hit[in_bin].mean()) * share
    return ece


def test_ece_agrees_with_giung2_including_saturated_confidences():
    rng = np.random.default_rng(3)
    for scale in (1.0, 5.0, 50.0):
        logits = rng.normal(size=(2000, 10)) * scale
        probs = np.exp(log_softmax(logits, axis=1))
        # Labels from sharper probabilities (the model is underconfident), except that a fifth of
        # the saturated predictions are wrong: their gap has the other sign from the rest of the
        # last bin's, so a convention that kept 1.0 apart would give another ECE (by ~4e-3 here).
        labels = np.array([rng.choice(10, p=p) for p in softmax(2 * logits, axis=1)])
        saturated = probs.max(1) == 1.0
        wrong = saturated & (rng.random(2000) < 0.2)
        labels[wrong] = (probs.argmax(1)[wrong] + 1) % 10
        if scale == 50.0:
            assert saturated.sum() > 200 and wrong.any()  # exactly 1.0 in float64
        assert expected_calibration_error(probs, labels) == pytest.approx(giung2_ece(probs, labels), abs=1e-12)


def test_temperature_scaling_cures_overconfidence_without_changing_accuracy():
    rng = np.random.default_rng(1)
    true_logits = rng.normal(size=(3000, 5)) * 1.5
    labels = np.array([rng.choice(5, p=p) for p in torch.softmax(torch.from_numpy(true_logits), 1).numpy()])
    overconfident = true_logits * 4.0
    temperature = fit_temperature(overconfident, labels)
    assert 3.0 < temperature < 5.5
    before = classification_metrics(torch.log_softmax(torch.from_numpy(overconfident), 1).numpy(), labels)
    after = classification_metrics(torch.log_softmax(torch.from_numpy(overconfident / temperature), 1).numpy(), labels)
    assert after["nll"] < before["nll"] - 0.3
    assert after["acc"] == before["acc"] and after["ece"] < before["ece"]


def calibrated_logits_and_labels(rng, n, classes=5):
    """Logits and labels drawn from their softmax: the true temperature is 1."""
    logits = rng.normal(size=(n, classes)) * 1.5
    return logits, np.array([rng.choice(classes, p=p) for p in softmax(logits, axis=1)])


def test_temperature_beyond_the_old_bound_of_20_is_fitted():
    logits, labels = calibrated_logits_and_labels(np.random.default_rng(4), 20000)
    temperature = fit_temperature(logits * 40, labels)
    assert temperature == pytest.approx(40, rel=0.03) and not at_bound(temperature)


def test_at_bound_flags_both_bounds_only():
    lowest, highest = TEMPERATURE_BOUNDS
    assert at_bound(lowest) and at_bound(highest) and at_bound(highest * 0.99999)
    assert not at_bound(1.0) and not at_bound(highest * 0.99) and not at_bound(lowest * 1.01)


def test_evaluate_cohort_flags_a_temperature_at_the_bound():
    rng = np.random.default_rng(5)
    logits, labels = {}, {}
    for split in ("val", "test"):
        calibrated, labels[split] = calibrated_logits_and_labels(rng, 2000)
        # Member 0 is calibrated; member 1 overconfident by 1000, beyond the largest temperature.
        logits[split] = np.stack([calibrated, calibrated * 1000])
    rows = evaluate_cohort(logits, labels)["test"]
    assert rows[0]["temperature"] == pytest.approx(1.0, rel=0.15) and rows[0]["temperature_at_bound"] is False
    assert rows[1]["temperature"] == pytest.approx(TEMPERATURE_BOUNDS[1], rel=1e-3)
    assert rows[1]["temperature_at_bound"] is True


def test_ensemble_averages_probabilities():
    logits = np.array([[[LN3, 0.0]], [[0.0, LN3]]])  # (.75, .25) and (.25, .75)
    np.testing.assert_allclose(np.exp(ensemble_logits(logits)), [[0.5, 0.5]])


def test_diversity_by_hand():
    logits = np.array([[[LN3, 0.0], [LN3, 0.0]], [[LN3, 0.0], [0.0, LN3]]])
    row = diversity(logits)
    assert row["disagreement"] == 0.5
    kl = 0.75 * math.log(3) + 0.25 * math.log(1 / 3)  # KL((.75,.25) ‖ (.25,.75))
    assert row["pairwise_kl"] == pytest.approx(kl / 2)  # one sample of two disagrees, both directions equal


def test_evaluate_cohort_rows_and_subensembles():
    rng = np.random.default_rng(2)
    logits = {s: rng.normal(size=(3, 200, 4)) * 2 for s in ("val", "test")}
    labels = {s: rng.integers(0, 4, size=200) for s in ("val", "test")}
    results = evaluate_cohort(logits, labels)
    assert set(results) == {"val", "test"} and set(results["test"]) == {0, 1, 2, "ensemble"}
    ens = results["test"]["ensemble"]
    assert {
        "acc",
        "nll",
        "brier",
        "ece",
        "cw_ece",
        "adaece",
        "mce",
        "full_ece",
        "c_nll",
        "c_ece",
        "c_mce",
        "temperature",
        "temperature_at_bound",
        "disagreement",
        "pairwise_kl",
    } <= set(ens)
    sizes = ens["subensembles"]
    assert [s["size"] for s in sizes] == [1, 2, 3]
    assert sizes[0]["nll"] == pytest.approx(np.mean([results["test"][m]["nll"] for m in range(3)]))
    assert sizes[2]["nll"] == pytest.approx(ens["nll"])
    # Size 2: each metric the mean over the three pairs, each pair scored at its own val temperature.
    pairs = [evaluate_cohort({s: z[list(p)] for s, z in logits.items()}, labels) for p in ((0, 1), (0, 2), (1, 2))]
    for key in ("acc", "nll", "ece", "c_nll", "c_ece"):
        assert sizes[1][key] == pytest.approx(np.mean([pair["test"]["ensemble"][key] for pair in pairs]))
    # Calibration on val can only help val NLL.
    for m in (0, 1, 2, "ensemble"):
        assert results["val"][m]["c_nll"] <= results["val"][m]["nll"] + 1e-9


# Luminova1996/Diff-DML metric.py (commit 25cee66), transcribed for this test only: ECE L5-27 (its
# over/under-confidence log line left out), MCE L29-46, AdaECE L48-66, Classwise_ECE L68-88,
# Full_ECE L90-111; ignore_index −100 never occurs here.
ignore_index = -100


def diffdml_ece(pred, label, M):
    conf = np.max(pred, axis=-1)
    y = np.argmax(pred, axis=-1)
    count_M, count_A, count_C = np.zeros(M), np.zeros(M), np.zeros(M)
    for i in range(len(label)):
        if label[i] != ignore_index:
            k = int(np.floor(conf[i] * M))
            if k == M:
                k = M - 1
            count_M[k] += 1
            if y[i] == label[i]:
                count_A[k] += 1
            count_C[k] += conf[i]
    return np.sum(np.abs(count_A - count_C)) / np.sum(label != ignore_index)


def diffdml_mce(pred, label, M):
    conf = np.max(pred, axis=-1)
    y = np.argmax(pred, axis=-1)
    count_M, count_A, count_C = np.zeros(M), np.zeros(M), np.zeros(M)
    for i in range(len(label)):
        if label[i] != ignore_index:
            k = int(np.floor(conf[i] * M))
            if k == M:
                k = M - 1
            count_M[k] += 1
            if y[i] == label[i]:
                count_A[k] += 1
            count_C[k] += conf[i]
    return np.max(np.abs(count_A - count_C) / (count_M + 1e-9))


def diffdml_ada_ece(pred, label, M):
    conf = np.max(pred, axis=-1)
    y = np.argmax(pred, axis=-1)
    cut_index = np.array_split(np.argsort(conf), M)
    count_M, count_A, count_C = np.zeros(M), np.zeros(M), np.zeros(M)
    for i in range(M):
        if label[i] != ignore_index:
            count_M[i] = len(cut_index[i])
            for j in cut_index[i]:
                if y[j] == label[j]:
                    count_A[i] += 1
                count_C[i] += conf[j]
    return np.sum(np.abs(count_A - count_C)) / np.sum(label != ignore_index)


def diffdml_classwise_ece(pred, label, M):
    num_classes = len(pred[0])
    count_M, count_A, count_C = np.zeros((M, num_classes)), np.zeros((M, num_classes)), np.zeros((M, num_classes))
    for i in range(len(label)):
        if label[i] != ignore_index:
            for j in range(num_classes):
                k = int(np.floor(pred[i][j] * M))
                if k == M:
                    k = M - 1
                count_M[k][j] += 1
                if j == label[i]:
                    count_A[k][j] += 1
                count_C[k][j] += pred[i][j]
    return np.sum(np.abs(count_A - count_C)) / (np.sum(label != ignore_index) * num_classes)


def diffdml_full_ece(pred, label, M):
    num_classes = len(pred[0])
    count_M, count_A, count_C = np.zeros(1), np.zeros(M), np.zeros(M)
    for i in range(len(label)):
        if label[i] != ignore_index:
            count_M += 1
            for j in range(num_classes):
                k = int(np.floor(pred[i][j] * M))
                if k == M:
                    k = M - 1
                if j == label[i]:
                    count_A[k] += 1
                count_C[k] += pred[i][j]
    return np.sum(np.abs(count_A - count_C)) / np.sum(count_M)


def test_calibration_errors_with_floor_binning_equal_diffdmls_metric_py():
    rng = np.random.default_rng(7)
    floor = Binning(10, "floor")
    for scale in (0.5, 3.0, 40.0):
        logits = rng.normal(size=(600, 10)) * scale
        probs = np.exp(log_softmax(logits, axis=1))
        probs[:5] = np.eye(10)[:5] * 0.0 + 0.1  # 0.1 each: p·M lands on the edge 1 (floor: bin 1)
        labels = np.array([rng.choice(10, p=p) for p in softmax(0.7 * logits, axis=1)])
        if scale == 40.0:
            assert (probs.max(1) == 1.0).sum() > 50  # saturated: floor puts 1.0 in the last bin, as k == M there
        assert expected_calibration_error(probs, labels, floor) == pytest.approx(
            diffdml_ece(probs, labels, 10), abs=1e-12
        )
        assert maximum_calibration_error(probs, labels, floor) == pytest.approx(
            diffdml_mce(probs, labels, 10), rel=1e-8
        )
        assert adaptive_calibration_error(probs, labels, floor) == pytest.approx(
            diffdml_ada_ece(probs, labels, 10), abs=1e-12
        )
        assert classwise_calibration_error(probs, labels, floor) == pytest.approx(
            diffdml_classwise_ece(probs, labels, 10), abs=1e-12
        )
        assert full_calibration_error(probs, labels, floor) == pytest.approx(
            diffdml_full_ece(probs, labels, 10), abs=1e-12
        )
    # Full ECE pools every class's probabilities: it is not class-wise ECE (which also divides by C).
    assert full_calibration_error(probs, labels, floor) != pytest.approx(
        classwise_calibration_error(probs, labels, floor)
    )


def test_the_two_binnings_differ_only_on_an_edge():
    confidence = np.array([0.0, 0.05, 0.1, np.nextafter(0.1, 1.0), 0.55, 1.0])
    assert Binning(10, "upper").assign(confidence).tolist() == [0, 0, 0, 1, 5, 9]
    assert Binning(10, "floor").assign(confidence).tolist() == [0, 0, 1, 1, 5, 9]
    assert Binning().describe() == "15 bins, (lo, hi]" and "floor" in Binning(10, "floor").describe()


def test_mce_is_the_worst_bins_gap():
    # Bin (0.6, 0.8] of 5: confidences 0.7 and 0.7, one right → gap 0.2; bin (0.8, 1.0]: 0.9, right → 0.1.
    probs = np.array([[0.7, 0.3], [0.3, 0.7], [0.9, 0.1]])
    labels = np.array([0, 0, 0])
    assert maximum_calibration_error(probs, labels, Binning(5)) == pytest.approx(0.2)
    assert classification_metrics(log(probs), labels, Binning(5))["mce"] == pytest.approx(0.2)
