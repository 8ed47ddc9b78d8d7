import math

import numpy as np
import pytest

from cohort.metrics import cohort_metrics


def test_member_and_ensemble_metrics_by_hand():
    # Two members, two samples, two classes; logits chosen so probabilities are simple.
    ln3 = math.log(3.0)
    logits = np.array([[[ln3, 0.0], [ln3, 0.0]],      # member 0: p = (.75, .25) twice
                       [[0.0, 0.0], [0.0, ln3]]])     # member 1: (.5, .5), (.25, .75)
    labels = np.array([0, 1])
    rows = cohort_metrics(logits, labels)
    assert rows[0]["acc"] == 0.5 and rows[0]["nll"] == pytest.approx(-(math.log(0.75) + math.log(0.25)) / 2)
    assert rows[1]["acc"] == 1.0  # a tie goes to class 0, which is right for sample 0
    assert rows[1]["nll"] == pytest.approx(-(math.log(0.5) + math.log(0.75)) / 2)
    # Ensemble averages probabilities: (.625, .375) and (.5, .5).
    assert rows["ensemble"]["nll"] == pytest.approx(-(math.log(0.625) + math.log(0.5)) / 2)
    assert rows["ensemble"]["acc"] == 0.5  # sample 1 ties at (.5, .5) and goes to class 0
