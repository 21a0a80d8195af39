"""Temperature scaling recovers a known temperature and makes predictions better calibrated."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dxlab.errors import EvaluationError
from dxlab.models.calibration import (
    apply_temperature,
    fit_temperature,
    negative_log_likelihood,
)
from dxlab.training.calibration import expected_calibration_error


def _binary_logits(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 2, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-true))).astype(int)
    return true, y


def _multiclass_logits(n=3000, k=4, seed=0):
    rng = np.random.default_rng(seed)
    true = rng.normal(0, 1.5, (n, k))
    p = np.exp(true) / np.exp(true).sum(axis=1, keepdims=True)
    y = (p.cumsum(axis=1) < rng.random((n, 1))).sum(axis=1)
    return true, y


def test_recovers_the_temperature_of_overconfident_binary_logits():
    true, y = _binary_logits()
    fit = fit_temperature(true * 3, y)
    assert fit.temperature == pytest.approx(3, rel=0.1)
    assert fit.nll_after < fit.nll_before
    assert fit.nll_after == pytest.approx(negative_log_likelihood(true, y), rel=0.01)
    assert not fit.at_bound and fit.n_samples == len(y)
    before = expected_calibration_error(y, apply_temperature(true * 3, 1.0))
    after = expected_calibration_error(y, apply_temperature(true * 3, fit.temperature))
    assert after < before / 2
    json.dumps(fit.to_dict(), allow_nan=False)


def test_two_class_softmax_logits_give_the_same_temperature_as_one_sigmoid_logit():
    true, y = _binary_logits(seed=1)
    one = fit_temperature(true * 3, y).temperature
    two = fit_temperature(np.stack([np.zeros_like(true), true * 3], axis=1), y).temperature
    assert two == pytest.approx(one, rel=1e-4)
    # and an (n, 1) column is read as one logit per case
    assert fit_temperature((true * 3)[:, None], y).temperature == pytest.approx(one, rel=1e-6)


def test_recovers_the_temperature_of_multiclass_logits_both_ways():
    true, y = _multiclass_logits()
    over = fit_temperature(true * 3, y)
    under = fit_temperature(true / 2, y)
    assert over.temperature == pytest.approx(3, rel=0.1)
    assert under.temperature == pytest.approx(0.5, rel=0.1)
    probs = apply_temperature(true * 3, over.temperature)
    assert expected_calibration_error(y, probs) < expected_calibration_error(y, apply_temperature(true * 3, 1.0))


def test_scaling_keeps_the_ranking():
    true, _ = _multiclass_logits(n=50)
    np.testing.assert_array_equal(apply_temperature(true, 2.5).argmax(axis=1), true.argmax(axis=1))


def test_separable_logits_stop_at_the_bound_and_say_so():
    fit = fit_temperature(np.array([5.0, -5.0, 6.0, -7.0]), [1, 0, 1, 0])
    assert fit.at_bound and fit.temperature == 0.05


def test_apply_temperature_on_arrays_and_tensors():
    z = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    expected = np.exp(z / 2) / np.exp(z / 2).sum(axis=1, keepdims=True)
    np.testing.assert_allclose(apply_temperature(z, 2.0), expected)
    out = apply_temperature(torch.tensor(z, dtype=torch.float32), 2.0)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(apply_temperature(np.array([0.0, 800.0, -800.0]), 1.0), [0.5, 1.0, 0.0])
    np.testing.assert_allclose(apply_temperature(torch.tensor([0.0, 4.0]), 2.0).numpy(), [0.5, 1 / (1 + np.exp(-2))], rtol=1e-6)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf")])
def test_bad_temperatures_are_refused(temperature):
    with pytest.raises(EvaluationError, match="temperature must be"):
        apply_temperature(np.zeros(3), temperature)


@pytest.mark.parametrize(
    ("logits", "labels", "message"),
    [
        (np.zeros((3, 2)), [0, 1], "one entry per logit row"),
        (np.zeros((3, 2)), [0, 1, 2], r"class indices in 0..1"),
        (np.array([0.0, np.nan]), [0, 1], "non-finite"),
        (np.zeros((2, 2, 2)), [0, 1], "1-D .binary. or .n, K."),
        (np.zeros(0), [], "empty"),
    ],
)
def test_bad_fit_input_is_refused(logits, labels, message):
    with pytest.raises(EvaluationError, match=message):
        fit_temperature(logits, labels)


def test_bad_bounds_are_refused():
    with pytest.raises(EvaluationError, match="bounds"):
        fit_temperature(np.zeros(2), [0, 1], bounds=(2.0, 3.0))
