"""evaluate_predictions: the whole evaluation in one JSON-ready dict, and its flat MLflow metrics."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from dxlab.errors import EvaluationError
from dxlab.training.metrics import auroc, threshold_metrics
from dxlab.training.operating_point import choose_operating_point
from dxlab.training.report import evaluate_predictions, flatten_metrics


def _binary(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    return y, np.clip(0.35 * y + rng.random(n) * 0.65, 0, 1)


def test_binary_evaluation_end_to_end(tmp_path):
    y_val, p_val = _binary(200, 0)
    y, p = _binary(300, 1)
    meta = pd.DataFrame({"sex": np.where(np.arange(300) % 2, "F", "M"), "age": np.linspace(2, 90, 300)})
    op = choose_operating_point(y_val, p_val, "sensitivity>=0.9,specificity>=0.7")
    result = evaluate_predictions(y, p, ["normal", "tb"], operating_point=op, metadata=meta,
                                  subgroup_columns=["sex", "age"], n_bootstrap=200, seed=0, plots_dir=tmp_path)
    json.dumps(result, allow_nan=False)

    assert result["task"] == "binary" and result["n"] == 300
    assert result["auroc"]["value"] == auroc(y, p).value
    assert result["auroc"]["ci"]["n_used"] == 200
    assert result["operating_point"]["source"] == "validation"
    assert result["operating_point"]["threshold"] == op.threshold
    at = threshold_metrics(y, p, op.threshold)
    assert result["at_operating_point"]["sensitivity"]["value"] == at.sensitivity.value
    checks = result["rule_on_test"]["checks"]
    assert checks["sensitivity>=0.9"]["met"] == (at.sensitivity.value >= 0.9)
    assert checks["specificity>=0.7"]["met"] == (at.specificity.value >= 0.7)
    assert result["classification"]["recall"]["tb"]["value"] == at.sensitivity.value
    assert set(result["subgroups"]) == {"sex", "age"}
    assert set(result["plots"]) == {"roc", "precision_recall", "reliability", "confusion_matrix"}
    assert all(Path(path).stat().st_size > 0 for path in result["plots"].values())

    flat = flatten_metrics(result)
    assert flat["test_auroc"] == result["auroc"]["value"]
    assert flat["test_auroc_ci_low"] <= flat["test_auroc"] <= flat["test_auroc_ci_high"]
    assert flat["test_threshold"] == op.threshold
    assert {"test_sensitivity", "test_specificity", "test_ppv", "test_npv", "test_ece",
            "test_balanced_accuracy", "test_recall_tb", "test_average_precision"} <= set(flat)
    assert all(isinstance(v, float) and math.isfinite(v) for v in flat.values())


def test_without_an_operating_point_the_default_threshold_is_stated():
    y, p = _binary(100, 2)
    result = evaluate_predictions(y, p, ["neg", "pos"], n_bootstrap=0)
    assert result["operating_point"]["source"] == "default"
    assert "0.5 used" in result["operating_point"]["note"]
    assert "ci" not in result["auroc"] and "rule_on_test" not in result
    assert "test_auroc_ci_low" not in flatten_metrics(result)


def test_multiclass_evaluation():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    z = rng.normal(size=(200, 3))
    z[np.arange(200), y] += 1.5
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    result = evaluate_predictions(y, p, ["mel", "nev", "bkl"], n_bootstrap=100)
    json.dumps(result, allow_nan=False)
    assert result["task"] == "multiclass" and "at_operating_point" not in result
    assert set(result["auroc_per_class"]) == {"mel", "nev", "bkl"}
    assert result["calibration"]["kind"] == "top_label"
    flat = flatten_metrics(result, prefix="")
    assert {"auroc", "auroc_mel", "recall_mel", "precision_bkl", "balanced_accuracy", "ece"} <= set(flat)


def test_bad_evaluation_requests_are_refused():
    y, p = _binary(50, 4)
    with pytest.raises(EvaluationError, match="3 class names given for 2"):
        evaluate_predictions(y, p, ["a", "b", "c"])
    with pytest.raises(EvaluationError, match="no metadata"):
        evaluate_predictions(y, p, ["a", "b"], subgroup_columns=["sex"])
    with pytest.raises(EvaluationError, match="binary task"):
        evaluate_predictions([0, 1, 2], np.eye(3), ["a", "b", "c"], operating_point=0.5)
    with pytest.raises(EvaluationError, match="finite"):
        evaluate_predictions(y, p, ["a", "b"], operating_point=float("nan"))
