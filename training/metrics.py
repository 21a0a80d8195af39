"""Classification metrics with percentile-bootstrap confidence intervals.

Conventions, shared by every function here and in the other evaluation modules:

- ``y_true`` holds integer class indices ``0 .. K-1`` (bools and integral floats
  are accepted); for a binary task 1 is the positive class.
- ``probs`` is either a 1-D array of positive-class probabilities (binary), or an
  ``(n, K)`` matrix whose rows sum to 1 (a softmax output; ``K == 2`` is binary
  and its column 1 is the positive class).
- A binary case is called positive when its probability is ``>= threshold``, as
  in scikit-learn's ``roc_curve``.

Every metric is written once, as a function of per-sample weights: a weight of
1 everywhere is the point estimate, and a bootstrap resample is the same data
weighted by how often each sample was drawn. So the estimate and its interval
come from the same code, and thousands of resamples cost a few matrix products.

Resampling is stratified by class by default (each resample keeps the class
counts of ``y_true``), so every resample has every class and AUROC is always
defined. A resample in which a metric is still undefined (PPV with no predicted
positive, say) is skipped, and the interval reports how many resamples it used.

Undefined values (a 0/0) are NaN here; :meth:`Estimate.to_dict` writes them as
``None`` so that results serialise as strict JSON.
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dxlab.errors import EvaluationError

log = logging.getLogger(__name__)

#: Probabilities may overshoot [0, 1] or their row sum by float rounding this much.
_PROB_TOL = 1e-6
_ROW_SUM_TOL = 1e-3

Weighted = Callable[[np.ndarray], dict[str, np.ndarray]]


# --------------------------------------------------------------------------- results


def _clean(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class ConfidenceInterval:
    """A percentile-bootstrap interval, and how many resamples it rests on."""

    low: float
    high: float
    level: float
    n_resamples: int
    n_used: int
    stratified: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "low": _clean(self.low),
            "high": _clean(self.high),
            "level": self.level,
            "n_resamples": self.n_resamples,
            "n_used": self.n_used,
            "stratified": self.stratified,
        }


@dataclass(frozen=True)
class Estimate:
    """A metric's value on the data, with its bootstrap interval when one was asked for."""

    value: float
    ci: ConfidenceInterval | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"value": _clean(self.value)}
        if self.ci is not None:
            out["ci"] = self.ci.to_dict()
        return out

    def __float__(self) -> float:
        return float(self.value)


#: the estimates of :class:`ThresholdMetrics`, in order
THRESHOLD_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "balanced_accuracy")


@dataclass(frozen=True)
class ThresholdMetrics:
    """Binary metrics when cases with probability ``>= threshold`` are called positive."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    sensitivity: Estimate
    specificity: Estimate
    ppv: Estimate
    npv: Estimate
    accuracy: Estimate
    balanced_accuracy: Estimate

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"threshold": float(self.threshold)}
        out.update({k: int(getattr(self, k)) for k in ("tp", "fp", "tn", "fn")})
        out.update({k: getattr(self, k).to_dict() for k in THRESHOLD_METRICS})
        return out



@dataclass(frozen=True)
class ClassificationMetrics:
    """Hard-decision metrics over K classes: rows of the confusion matrix are true classes."""

    class_names: list[str]
    confusion_matrix: list[list[int]]
    accuracy: Estimate
    balanced_accuracy: Estimate
    recall: dict[str, Estimate] = field(default_factory=dict)
    precision: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "class_names": list(self.class_names),
            "confusion_matrix": [list(map(int, row)) for row in self.confusion_matrix],
            "accuracy": self.accuracy.to_dict(),
            "balanced_accuracy": self.balanced_accuracy.to_dict(),
            "recall": {k: v.to_dict() for k, v in self.recall.items()},
            "precision": {k: v.to_dict() for k, v in self.precision.items()},
        }


# --------------------------------------------------------------------------- input checks


def check_labels(y_true: Any, n_classes: int | None = None, *, name: str = "y_true") -> np.ndarray:
    """``y_true`` as a 1-D int array of class indices, or an :class:`EvaluationError`."""
    y = np.asarray(y_true)
    if y.ndim != 1:
        raise EvaluationError(f"{name} must be 1-D class indices; got shape {y.shape}")
    if y.size == 0:
        raise EvaluationError(f"{name} is empty; evaluation needs at least one sample")
    if y.dtype == bool:
        y = y.astype(np.int64)
    elif not np.issubdtype(y.dtype, np.number):
        raise EvaluationError(
            f"{name} must hold integer class indices 0..K-1; got dtype {y.dtype} "
            f"(first value {y[0]!r}); map class names to indices first"
        )
    elif not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            bad = y[~(np.isfinite(y) & (y == np.round(y)))][0]
            raise EvaluationError(f"{name} must hold integer class indices; found {bad!r}")
        y = y.astype(np.int64)
    y = y.astype(np.int64, copy=False)
    if y.min() < 0 or (n_classes is not None and y.max() >= n_classes):
        bad = y[(y < 0) | (y >= (n_classes or np.iinfo(np.int64).max))][0]
        valid = f"0..{n_classes - 1}" if n_classes is not None else "non-negative"
        raise EvaluationError(f"{name} holds class index {bad}, outside the valid range {valid}")
    return y


def check_probabilities(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (labels, probabilities) pair; return labels and an ``(n, K)`` matrix.

    A 1-D ``probs`` is read as positive-class probabilities of a binary task.
    """
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim == 1:
        p = np.stack([1.0 - p, p], axis=1)
        one_d = True
    elif p.ndim == 2:
        one_d = False
    else:
        raise EvaluationError(f"probs must be 1-D (binary) or (n, K); got shape {p.shape}")
    if p.shape[1] < 2:
        raise EvaluationError(f"probs has {p.shape[1]} column(s); a classifier needs at least 2 classes")
    y = check_labels(y_true, p.shape[1])
    if len(y) != len(p):
        raise EvaluationError(f"y_true has {len(y)} samples but probs has {len(p)}; they must match")
    if not np.all(np.isfinite(p)):
        raise EvaluationError(f"probs holds {int(np.sum(~np.isfinite(p)))} non-finite value(s) (NaN or inf)")
    lo, hi = float(p.min()), float(p.max())
    if lo < -_PROB_TOL or hi > 1 + _PROB_TOL:
        raise EvaluationError(
            f"probs must be probabilities in [0, 1]; found values in [{lo:.4g}, {hi:.4g}] "
            "(logits? apply a sigmoid or softmax first)"
        )
    if not one_d:
        sums = p.sum(axis=1)
        worst = int(np.argmax(np.abs(sums - 1)))
        if abs(sums[worst] - 1) > _ROW_SUM_TOL:
            raise EvaluationError(
                f"each row of probs must sum to 1 (a softmax output); row {worst} sums to {sums[worst]:.4g}"
            )
    return y, np.clip(p, 0.0, 1.0)


def check_binary(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray]:
    """Labels and positive-class probabilities of a binary task, validated."""
    y, p = check_probabilities(y_true, probs)
    if p.shape[1] != 2:
        raise EvaluationError(f"this metric is binary; probs has {p.shape[1]} classes")
    return y, p[:, 1]


def _need_classes(y: np.ndarray, n_classes: int, what: str) -> None:
    absent = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if absent:
        present = sorted(set(np.unique(y).tolist()))
        raise EvaluationError(
            f"{what} needs every class in y_true; class(es) {absent} are absent "
            f"(present: {present}, n={len(y)})"
        )


# --------------------------------------------------------------------------- bootstrap engine


def _bootstrap_weights(y: np.ndarray, n_resamples: int, seed: int, stratified: bool) -> Iterator[np.ndarray]:
    """Yield ``(b, n)`` matrices of draw counts, one row per resample, in chunks."""
    n = len(y)
    rng = np.random.default_rng(seed)
    strata = [np.flatnonzero(y == c) for c in np.unique(y)] if stratified else [np.arange(n)]
    chunk = max(1, min(512, (1 << 22) // n))
    for start in range(0, n_resamples, chunk):
        b = min(chunk, n_resamples - start)
        w = np.zeros(b * n)
        offsets = (np.arange(b) * n)[:, None]
        for members in strata:
            draws = members[rng.integers(0, len(members), size=(b, len(members)))]
            w += np.bincount((draws + offsets).ravel(), minlength=b * n)
        yield w.reshape(b, n)


def _estimates(
    stat: Weighted,
    y: np.ndarray,
    *,
    n_bootstrap: int,
    confidence: float,
    seed: int,
    stratified: bool,
) -> dict[str, Estimate]:
    """Evaluate ``stat`` on the data and, when asked, on bootstrap resamples of it."""
    if n_bootstrap < 0:
        raise EvaluationError(f"n_bootstrap must be >= 0; got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise EvaluationError(f"confidence must be in (0, 1), e.g. 0.95; got {confidence}")
    # 0/0 and the nanmean of only NaNs are expected here: they become NaN, then skipped
    with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        point = {k: float(v[0]) for k, v in stat(np.ones((1, len(y)))).items()}
        if n_bootstrap == 0:
            return {k: Estimate(v) for k, v in point.items()}
        samples: dict[str, list[np.ndarray]] = {k: [] for k in point}
        for w in _bootstrap_weights(y, n_bootstrap, seed, stratified):
            for k, v in stat(w).items():
                samples[k].append(v)
    alpha = (1 - confidence) / 2
    out = {}
    for k, value in point.items():
        values = np.concatenate(samples[k])
        values = values[np.isfinite(values)]
        if len(values) < n_bootstrap:
            log.info("%s: %d of %d bootstrap resamples undefined, skipped", k, n_bootstrap - len(values), n_bootstrap)
        low, high = np.quantile(values, [alpha, 1 - alpha]) if len(values) else (math.nan, math.nan)
        ci = ConfidenceInterval(float(low), float(high), confidence, n_bootstrap, int(len(values)), stratified)
        out[k] = Estimate(value, ci)
    return out


# --------------------------------------------------------------------------- ranking metrics


def _tie_groups(scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sort order, group starts and the distinct values (ascending) of ``scores``."""
    order = np.argsort(scores, kind="mergesort")
    s = scores[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts, s[starts]


def _grouped_weights(w: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per distinct score (ascending), the weight of positives and of negatives: ``(b, G)`` each."""
    order, starts, values = _tie_groups(scores)
    ws = w[:, order]
    pos = positive[order]
    return np.add.reduceat(ws * pos, starts, axis=1), np.add.reduceat(ws * ~pos, starts, axis=1), values


def _weighted_auroc(w: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Mann-Whitney AUROC (ties count one half) under sample weights ``w``: ``(b,)``."""
    pw, nw, _ = _grouped_weights(w, positive, scores)
    below = np.cumsum(nw, axis=1) - nw
    return np.sum(pw * (below + 0.5 * nw), axis=1) / (pw.sum(axis=1) * nw.sum(axis=1))


def _weighted_average_precision(w: np.ndarray, positive: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Step-wise average precision (scikit-learn's definition) under weights ``w``."""
    pw, nw, _ = _grouped_weights(w, positive, scores)
    tp = np.cumsum(pw[:, ::-1], axis=1)
    fp = np.cumsum(nw[:, ::-1], axis=1)
    with np.errstate(invalid="ignore"):  # 0/0 before the first drawn case: it adds no recall
        precision = np.nan_to_num(tp / (tp + fp))
    recall = tp / tp[:, -1:]
    return np.sum(np.diff(recall, axis=1, prepend=0.0) * precision, axis=1)


def auroc(
    y_true: Any,
    probs: Any,
    *,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> Estimate:
    """Area under the ROC curve: binary, or the macro one-vs-rest mean over K > 2 classes.

    Matches ``sklearn.metrics.roc_auc_score`` (``multi_class="ovr", average="macro"``).
    """
    y, p = check_probabilities(y_true, probs)
    k = p.shape[1]
    if k == 2:
        _need_classes(y, 2, "AUROC")
        positive = y == 1
        return _estimates(lambda w: {"auroc": _weighted_auroc(w, positive, p[:, 1])}, y,
                          n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified)["auroc"]
    _need_classes(y, k, "macro one-vs-rest AUROC")

    def stat(w: np.ndarray) -> dict[str, np.ndarray]:
        return {"auroc": np.mean([_weighted_auroc(w, y == c, p[:, c]) for c in range(k)], axis=0)}

    return _estimates(stat, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified)["auroc"]


def one_vs_rest_auroc(
    y_true: Any,
    probs: Any,
    *,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> list[Estimate]:
    """AUROC of each class against the rest, in class order (class 1 alone when binary).

    A class absent from ``y_true`` gets a NaN estimate instead of an error, so a
    report can still show the others.
    """
    y, p = check_probabilities(y_true, probs)
    classes = [1] if p.shape[1] == 2 else list(range(p.shape[1]))
    present = set(np.unique(y).tolist())
    defined = [c for c in classes if c in present and len(present) > 1]

    def stat(w: np.ndarray) -> dict[str, np.ndarray]:
        return {str(c): _weighted_auroc(w, y == c, p[:, c]) for c in defined}

    est = _estimates(stat, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified) if defined else {}
    return [est.get(str(c), Estimate(math.nan)) for c in classes]


def average_precision(
    y_true: Any,
    probs: Any,
    *,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> Estimate:
    """Binary average precision (area under the precision-recall steps), as scikit-learn's."""
    y, s = check_binary(y_true, probs)
    if not np.any(y == 1):
        raise EvaluationError(f"average precision needs at least one positive in y_true; all {len(y)} are 0")
    positive = y == 1
    return _estimates(lambda w: {"ap": _weighted_average_precision(w, positive, s)}, y,
                      n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified)["ap"]


def roc_curve(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(fpr, tpr, thresholds)`` at every distinct probability, highest threshold first.

    The first point is ``(0, 0)`` at threshold ``+inf`` (nobody called positive),
    as in ``sklearn.metrics.roc_curve(..., drop_intermediate=False)``.
    """
    y, s = check_binary(y_true, probs)
    _need_classes(y, 2, "a ROC curve")
    pw, nw, values = _grouped_weights(np.ones((1, len(y))), y == 1, s)
    tp = np.cumsum(pw[0, ::-1])
    fp = np.cumsum(nw[0, ::-1])
    return (np.r_[0.0, fp / fp[-1]], np.r_[0.0, tp / tp[-1]], np.r_[np.inf, values[::-1]])


def precision_recall_curve(y_true: Any, probs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(precision, recall, thresholds)`` at every distinct probability, highest threshold first."""
    y, s = check_binary(y_true, probs)
    if not np.any(y == 1):
        raise EvaluationError(f"a precision-recall curve needs at least one positive; all {len(y)} are 0")
    pw, nw, values = _grouped_weights(np.ones((1, len(y))), y == 1, s)
    tp = np.cumsum(pw[0, ::-1])
    fp = np.cumsum(nw[0, ::-1])
    return tp / (tp + fp), tp / tp[-1], values[::-1]


# --------------------------------------------------------------------------- decisions


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """``(K, K)`` counts, rows the true class and columns the predicted one (scikit-learn's layout)."""
    y = check_labels(y_true, n_classes)
    pred = check_labels(y_pred, n_classes, name="y_pred")
    if len(y) != len(pred):
        raise EvaluationError(f"y_true has {len(y)} samples but y_pred has {len(pred)}; they must match")
    k = n_classes if n_classes is not None else int(max(y.max(), pred.max())) + 1
    return np.bincount(y * k + pred, minlength=k * k).reshape(k, k)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def threshold_metrics(
    y_true: Any,
    probs: Any,
    threshold: float,
    *,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> ThresholdMetrics:
    """Sensitivity, specificity, PPV, NPV, accuracy and balanced accuracy at ``threshold``.

    A case is positive when its probability is ``>= threshold``. A ratio whose
    denominator is 0 (PPV with no predicted positive, say) is NaN, never 0.
    """
    y, s = check_binary(y_true, probs)
    if not math.isfinite(float(threshold)):
        raise EvaluationError(f"threshold must be a finite number; got {threshold!r}")
    pos = (y == 1).astype(float)
    pred = (s >= threshold).astype(float)
    cells = np.stack([pos * pred, (1 - pos) * pred, (1 - pos) * (1 - pred), pos * (1 - pred)], axis=1)

    def stat(w: np.ndarray) -> dict[str, np.ndarray]:
        tp, fp, tn, fn = (w @ cells).T
        sens, spec = _ratio(tp, tp + fn), _ratio(tn, tn + fp)
        return {
            "sensitivity": sens,
            "specificity": spec,
            "ppv": _ratio(tp, tp + fp),
            "npv": _ratio(tn, tn + fn),
            "accuracy": _ratio(tp + tn, tp + fp + tn + fn),
            # the mean of the recalls of the classes present, as scikit-learn's
            "balanced_accuracy": np.nanmean(np.stack([sens, spec]), axis=0),
        }

    est = _estimates(stat, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified)
    tp, fp, tn, fn = (int(round(v)) for v in cells.sum(axis=0))
    return ThresholdMetrics(float(threshold), tp, fp, tn, fn, **est)


def classification_metrics(
    y_true: Any,
    y_pred: Any,
    *,
    n_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
    stratified: bool = True,
) -> ClassificationMetrics:
    """Confusion matrix, accuracy, balanced accuracy, per-class recall and precision.

    Balanced accuracy is the mean recall over the classes present in ``y_true``
    (``sklearn.metrics.balanced_accuracy_score``). A class never predicted has a
    NaN precision; a class absent from ``y_true`` a NaN recall.
    """
    if n_classes is None and class_names is not None:
        n_classes = len(class_names)
    y = check_labels(y_true, n_classes)
    pred = check_labels(y_pred, n_classes, name="y_pred")
    if len(y) != len(pred):
        raise EvaluationError(f"y_true has {len(y)} samples but y_pred has {len(pred)}; they must match")
    k = n_classes if n_classes is not None else int(max(y.max(), pred.max())) + 1
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise EvaluationError(f"{len(names)} class names given for {k} classes: {names}")
    cells = np.zeros((len(y), k * k))
    cells[np.arange(len(y)), y * k + pred] = 1.0

    def stat(w: np.ndarray) -> dict[str, np.ndarray]:
        cm = (w @ cells).reshape(-1, k, k)
        diag = np.diagonal(cm, axis1=1, axis2=2)
        recall = _ratio(diag, cm.sum(axis=2))
        precision = _ratio(diag, cm.sum(axis=1))
        out = {"accuracy": diag.sum(axis=1) / cm.sum(axis=(1, 2)), "balanced_accuracy": np.nanmean(recall, axis=1)}
        out.update({f"recall/{i}": recall[:, i] for i in range(k)})
        out.update({f"precision/{i}": precision[:, i] for i in range(k)})
        return out

    est = _estimates(stat, y, n_bootstrap=n_bootstrap, confidence=confidence, seed=seed, stratified=stratified)
    cm = np.bincount(y * k + pred, minlength=k * k).reshape(k, k)
    return ClassificationMetrics(
        class_names=names,
        confusion_matrix=cm.tolist(),
        accuracy=est["accuracy"],
        balanced_accuracy=est["balanced_accuracy"],
        recall={names[i]: est[f"recall/{i}"] for i in range(k)},
        precision={names[i]: est[f"precision/{i}"] for i in range(k)},
    )
