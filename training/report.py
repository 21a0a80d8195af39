"""One call that evaluates a model's held-out predictions: the entry point of the training loop.

The threshold is chosen beforehand on validation data
(:func:`dxlab.training.operating_point.choose_operating_point`) and handed in;
choosing it on the test data would flatter the model. The result is a
JSON-serialisable dict for the model card, and :func:`flatten_metrics` turns it
into the flat ``name -> float`` mapping that ``mlflow.log_metrics`` takes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dxlab.errors import EvaluationError
from dxlab.training.calibration import DEFAULT_BINS, reliability_diagram
from dxlab.training.metrics import (
    auroc,
    average_precision,
    check_probabilities,
    classification_metrics,
    one_vs_rest_auroc,
    threshold_metrics,
)
from dxlab.training.operating_point import OperatingPoint, parse_rule
from dxlab.training.subgroups import subgroup_metrics

DEFAULT_THRESHOLD = 0.5


def evaluate_predictions(
    y_true: Any,
    probs: Any,
    class_names: Sequence[str],
    *,
    operating_point: OperatingPoint | float | None = None,
    metadata: pd.DataFrame | Mapping[str, Sequence[Any]] | None = None,
    subgroup_columns: Sequence[str] = (),
    bands: Mapping[str, Sequence[float]] | None = None,
    min_subgroup_size: int = 10,
    n_bootstrap: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    n_bins: int = DEFAULT_BINS,
    plots_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Evaluate held-out ``probs`` against ``y_true``; every metric with a bootstrap CI.

    Binary tasks (K = 2) decide at ``operating_point`` (an :class:`OperatingPoint`
    chosen on validation, or a bare threshold; 0.5 when none, and the result says
    so); multi-class tasks decide by the top probability. ``metadata`` holds the
    rows' metadata columns in the same order as ``y_true``, for the subgroups.
    With ``plots_dir`` the four plots are written there as PNG and their paths returned.
    """
    y, p = check_probabilities(y_true, probs)
    k = p.shape[1]
    names = [str(c) for c in class_names]
    if len(names) != k:
        raise EvaluationError(f"{len(names)} class names given for {k} classes: {names}")
    if subgroup_columns and metadata is None:
        raise EvaluationError(f"subgroup columns {list(subgroup_columns)} asked for, but no metadata given")
    if k > 2 and operating_point is not None:
        raise EvaluationError(f"an operating point applies to a binary task; this one has {k} classes {names}")
    boot = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed}

    result: dict[str, Any] = {
        "task": "binary" if k == 2 else "multiclass",
        "class_names": names,
        "n": int(len(y)),
        "n_by_class": {names[c]: int(np.sum(y == c)) for c in range(k)},
        "bootstrap": {"n_resamples": n_bootstrap, "confidence": confidence, "seed": seed,
                      "method": "percentile", "stratified": True},
        "auroc": auroc(y, p, **boot).to_dict(),  # macro one-vs-rest when K > 2
    }
    threshold = None
    if k == 2:
        result["average_precision"] = average_precision(y, p, **boot).to_dict()
        threshold, result["operating_point"] = _operating_point(operating_point)
        at = threshold_metrics(y, p, threshold, **boot)
        result["at_operating_point"] = at.to_dict()
        if isinstance(operating_point, OperatingPoint):
            result["rule_on_test"] = _rule_on_test(operating_point.rule, at.sensitivity.value, at.specificity.value)
        y_pred = (p[:, 1] >= threshold).astype(np.int64)
    else:
        result["auroc_per_class"] = {names[c]: e.to_dict() for c, e in enumerate(one_vs_rest_auroc(y, p, **boot))}
        y_pred = p.argmax(axis=1)
    result["classification"] = classification_metrics(y, y_pred, class_names=names, **boot).to_dict()
    result["calibration"] = reliability_diagram(y, p, n_bins=n_bins).to_dict()
    if subgroup_columns:
        reports = subgroup_metrics(y, p, metadata, subgroup_columns, threshold=threshold, class_names=names,
                                   bands=bands, min_size=min_subgroup_size, **boot)
        result["subgroups"] = {col: r.to_dict() for col, r in reports.items()}
    if plots_dir is not None:
        result["plots"] = _plots(y, p, y_pred, names, operating_point if k == 2 else None, threshold, Path(plots_dir), n_bins)
    return result


def _operating_point(point: OperatingPoint | float | None) -> tuple[float, dict[str, Any]]:
    if isinstance(point, OperatingPoint):
        return point.threshold, {"source": "validation", **point.to_dict()}
    if point is None:
        return DEFAULT_THRESHOLD, {"source": "default", "threshold": DEFAULT_THRESHOLD,
                                   "note": "no operating point chosen on validation; 0.5 used"}
    threshold = float(point)
    if not math.isfinite(threshold):
        raise EvaluationError(f"operating point threshold must be a finite number; got {point!r}")
    return threshold, {"source": "given", "threshold": threshold}


def _rule_on_test(rule: str, sensitivity: float, specificity: float) -> dict[str, Any]:
    """Whether the bounds of the validation rule hold on these data too."""
    parsed = parse_rule(rule)
    checks = {}
    for c in (parsed.primary, parsed.secondary):
        if c is not None:
            value = sensitivity if c.measure == "sensitivity" else specificity
            checks[str(c)] = {"value": value if math.isfinite(value) else None,
                              "met": bool(math.isfinite(value) and value >= c.target - 1e-12)}
    return {"rule": rule, "checks": checks, "met": all(v["met"] for v in checks.values())}


def _plots(y: np.ndarray, p: np.ndarray, y_pred: np.ndarray, names: list[str], point: OperatingPoint | float | None,
           threshold: float | None, folder: Path, n_bins: int) -> dict[str, str]:
    from dxlab.training import plots  # matplotlib is imported only when plots are asked for

    marker = point if point is not None else threshold
    return {
        "roc": str(plots.plot_roc(y, p, folder / "roc.png", operating_point=marker, class_names=names)),
        "precision_recall": str(plots.plot_precision_recall(y, p, folder / "precision_recall.png",
                                                            operating_point=marker, class_names=names)),
        "reliability": str(plots.plot_reliability(y, p, folder / "reliability.png", n_bins=n_bins)),
        "confusion_matrix": str(plots.plot_confusion_matrix(y, y_pred, folder / "confusion_matrix.png", class_names=names)),
    }


def _metric_key(text: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]+", "_", text).strip("_").lower()


def flatten_metrics(evaluation: Mapping[str, Any], prefix: str = "test_") -> dict[str, float]:
    """The headline numbers of :func:`evaluate_predictions` as ``{name: float}`` for ``mlflow.log_metrics``.

    Each estimate gives ``name`` and, with a CI, ``name_ci_low`` and ``name_ci_high``;
    undefined values are left out (MLflow would store them as NaN).
    """
    out: dict[str, float] = {}

    def put(name: str, estimate: Mapping[str, Any] | None) -> None:
        if not estimate or estimate.get("value") is None:
            return
        key = prefix + _metric_key(name)
        out[key] = float(estimate["value"])
        ci = estimate.get("ci")
        if ci and ci.get("low") is not None and ci.get("high") is not None:
            out[key + "_ci_low"], out[key + "_ci_high"] = float(ci["low"]), float(ci["high"])

    put("auroc", evaluation.get("auroc"))
    for name, est in evaluation.get("auroc_per_class", {}).items():
        put(f"auroc_{name}", est)
    put("average_precision", evaluation.get("average_precision"))
    at = evaluation.get("at_operating_point")
    if at:
        out[prefix + "threshold"] = float(at["threshold"])
        for name in ("sensitivity", "specificity", "ppv", "npv"):
            put(name, at[name])
    cls = evaluation.get("classification", {})
    put("accuracy", cls.get("accuracy"))
    put("balanced_accuracy", cls.get("balanced_accuracy"))
    for name, est in cls.get("recall", {}).items():
        put(f"recall_{name}", est)
    for name, est in cls.get("precision", {}).items():
        put(f"precision_{name}", est)
    cal = evaluation.get("calibration")
    if cal:
        out[prefix + "ece"] = float(cal["ece"])
    return out
