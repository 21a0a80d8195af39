"""ECE and reliability diagrams, by hand and against scikit-learn's calibration_curve."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve

from dxlab.errors import EvaluationError
from dxlab.training.calibration import expected_calibration_error, reliability_diagram


def test_ece_by_hand():
    # bin (0.1, 0.2]: predicts 0.2, half are positive (gap 0.3); bin (0.7, 0.8]: predicts 0.8, all are (gap 0.2)
    y = [0, 1, 1, 1]
    p = [0.2, 0.2, 0.8, 0.8]
    diagram = reliability_diagram(y, p, n_bins=10)
    assert diagram.kind == "positive_class"
    assert diagram.counts == [0, 2, 0, 0, 0, 0, 0, 2, 0, 0]
    assert diagram.confidence[1] == pytest.approx(0.2) and diagram.observed[1] == pytest.approx(0.5)
    assert diagram.confidence[0] is None and diagram.observed[0] is None
    assert diagram.ece == pytest.approx((2 * 0.3 + 2 * 0.2) / 4)
    assert diagram.mce == pytest.approx(0.3)
    assert expected_calibration_error(y, p, n_bins=10) == pytest.approx(0.25)
    json.dumps(diagram.to_dict(), allow_nan=False)


def test_top_label_ece_for_multiclass_by_hand():
    # confidences 0.6 (right), 0.6 (wrong), 0.9 (right): bins (0.5,0.6] gap 0.1, (0.8,0.9] gap 0.1
    p = np.array([[0.6, 0.3, 0.1], [0.6, 0.2, 0.2], [0.05, 0.05, 0.9]])
    diagram = reliability_diagram([0, 1, 2], p, n_bins=10)
    assert diagram.kind == "top_label"
    assert diagram.counts[5] == 2 and diagram.counts[8] == 1
    assert diagram.ece == pytest.approx((2 * 0.1 + 1 * 0.1) / 3)


def test_reliability_matches_sklearn_calibration_curve():
    rng = np.random.default_rng(0)
    p = rng.random(2000)
    y = (rng.random(2000) < p**1.5).astype(int)
    diagram = reliability_diagram(y, p, n_bins=12)
    prob_true, prob_pred = calibration_curve(y, p, n_bins=12, strategy="uniform")
    assert [o for o in diagram.observed if o is not None] == pytest.approx(prob_true)
    assert [c for c in diagram.confidence if c is not None] == pytest.approx(prob_pred)


def test_calibrated_predictions_have_a_small_ece_and_overconfident_ones_a_large_one():
    rng = np.random.default_rng(1)
    p = rng.random(20000)
    y = (rng.random(20000) < p).astype(int)
    assert expected_calibration_error(y, p) < 0.02
    overconfident = np.where(p > 0.5, 1.0, 0.0) * 0.98 + 0.01
    assert expected_calibration_error(y, overconfident) > 0.2


def test_the_edges_fall_in_the_first_and_last_bins():
    diagram = reliability_diagram([0, 1], [0.0, 1.0], n_bins=5)
    assert diagram.counts == [1, 0, 0, 0, 1]
    assert diagram.ece == 0.0


@pytest.mark.parametrize("bins", [0, -3, 2.5, True])
def test_bad_bin_counts_are_refused(bins):
    with pytest.raises(EvaluationError, match="n_bins"):
        reliability_diagram([0, 1], [0.2, 0.8], n_bins=bins)


def test_bad_probabilities_are_refused():
    with pytest.raises(EvaluationError, match=r"\[0, 1\]"):
        expected_calibration_error([0, 1], [0.2, 3.0])
