import pytest

from cohort.dee import deep_ensemble_equivalent
import numpy as np

SIZES = np.array([1.0, 2.0, 3.0, 4.0])
CURVE = np.array([1.0, 0.8, 0.7, 0.65])


@pytest.mark.parametrize("value, expected", [(0.8, 2.0), (0.9, 1.5), (0.75, 2.5), (0.66, 3.8), (0.65, 4.0)])
def test_interpolates_on_the_curve(value, expected):
    dee, note = deep_ensemble_equivalent(value, SIZES, CURVE)
    assert dee == pytest.approx(expected) and note == ""


def test_off_the_curve_is_said():
    assert deep_ensemble_equivalent(1.2, SIZES, CURVE) == (1.0, pytest.approx("off the curve: no better than one independent member (1.0000)"))
    dee, note = deep_ensemble_equivalent(0.5, SIZES, CURVE)
    assert dee == 4.0 and note.startswith("off the curve: better than all 4")


def test_a_non_monotone_reference_is_made_monotone():
    dee, _ = deep_ensemble_equivalent(0.75, SIZES, np.array([1.0, 0.7, 0.8, 0.6]))
    assert dee == pytest.approx(1 + 0.25 / 0.3)
