"""Evaluation plots as PNG files: ROC, precision-recall, reliability diagram, confusion matrix.

Each function takes the arrays and a path, writes the PNG (making its folder),
and returns the path. Figures are drawn on matplotlib's Agg canvas directly,
without pyplot, so no global backend or figure state is touched and plotting
is safe from threads and servers without a display.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from dxlab.errors import EvaluationError
from dxlab.training.calibration import DEFAULT_BINS, reliability_diagram
from dxlab.training.metrics import (
    auroc,
    check_probabilities,
    confusion_matrix,
    precision_recall_curve,
    roc_curve,
    threshold_metrics,
)
from dxlab.training.operating_point import OperatingPoint

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float = 5.0, height: float = 5.0) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib comes with mlflow
        raise EvaluationError("plots need matplotlib; install it with: pip install matplotlib") from None
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    if out.suffix.lower() != ".png":
        raise EvaluationError(f"plots are written as PNG; give a path ending in .png, not {str(out)!r}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png")
    return out


def _names(class_names: Any, k: int) -> list[str]:
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise EvaluationError(f"{len(names)} class names given for {k} classes: {names}")
    return names


def _threshold(point: OperatingPoint | float | None, k: int) -> tuple[float | None, str]:
    if point is None:
        return None, ""
    if k != 2:
        raise EvaluationError("an operating point applies to a binary task; these probabilities have "
                              f"{k} classes")
    if isinstance(point, OperatingPoint):
        return point.threshold, f"{point.rule}, t={point.threshold:.3g}"
    return float(point), f"t={float(point):.3g}"


def plot_roc(
    y_true: Any,
    probs: Any,
    path: str | Path,
    *,
    operating_point: OperatingPoint | float | None = None,
    class_names: Any = None,
    title: str = "ROC curve",
) -> Path:
    """ROC curve (one-vs-rest curves for K > 2 classes), with the operating point marked when given.

    The marker shows the sensitivity and specificity reached *on these data* at
    the operating point's threshold (chosen on validation, shown on test).
    """
    y, p = check_probabilities(y_true, probs)
    k = p.shape[1]
    threshold, label = _threshold(operating_point, k)
    names = _names(class_names, k)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="chance")
    for c in ([1] if k == 2 else range(k)):
        yc = (y == c).astype(int)
        if yc.min() == yc.max():
            continue  # a class absent from y_true has no curve
        fpr, tpr, _ = roc_curve(yc, p[:, c])
        area = auroc(yc, p[:, c]).value
        ax.plot(fpr, tpr, lw=2, label=f"{names[c]} (AUROC {area:.3f})")
    if threshold is not None:
        at = threshold_metrics(y, p, threshold)
        ax.plot(1 - at.specificity.value, at.sensitivity.value, "o", ms=9, color="crimson",
                label=f"operating point ({label}): sens {at.sensitivity.value:.2f}, spec {at.specificity.value:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="1 - specificity (false positive rate)",
           ylabel="sensitivity (true positive rate)", title=title)
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_precision_recall(
    y_true: Any,
    probs: Any,
    path: str | Path,
    *,
    operating_point: OperatingPoint | float | None = None,
    class_names: Any = None,
    title: str = "Precision-recall curve",
) -> Path:
    """Precision against recall (one-vs-rest for K > 2), with the prevalence as the chance line."""
    y, p = check_probabilities(y_true, probs)
    k = p.shape[1]
    threshold, label = _threshold(operating_point, k)
    names = _names(class_names, k)
    fig = _figure()
    ax = fig.add_subplot()
    for c in ([1] if k == 2 else range(k)):
        yc = (y == c).astype(int)
        if not yc.any():
            continue
        precision, recall, _ = precision_recall_curve(yc, p[:, c])
        # start the step curve at recall 0 with the first precision, as is usual
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", lw=2, label=names[c])
        if k == 2:
            ax.axhline(yc.mean(), ls="--", lw=1, color="grey", label=f"prevalence {yc.mean():.2f}")
    if threshold is not None:
        at = threshold_metrics(y, p, threshold)
        if np.isfinite(at.ppv.value):
            ax.plot(at.sensitivity.value, at.ppv.value, "o", ms=9, color="crimson",
                    label=f"operating point ({label}): recall {at.sensitivity.value:.2f}, PPV {at.ppv.value:.2f}")
    ax.set(xlim=(0, 1), ylim=(0, 1.01), xlabel="recall (sensitivity)", ylabel="precision (PPV)", title=title)
    ax.legend(loc="lower left", fontsize="small")
    return _save(fig, path)


def plot_reliability(
    y_true: Any,
    probs: Any,
    path: str | Path,
    *,
    n_bins: int = DEFAULT_BINS,
    title: str = "Reliability diagram",
) -> Path:
    """Observed frequency against mean predicted probability per bin, with bin counts below."""
    diagram = reliability_diagram(y_true, probs, n_bins=n_bins)
    edges = np.asarray(diagram.bin_edges)
    centres, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    observed = np.array([np.nan if o is None else o for o in diagram.observed])
    confidence = np.array([np.nan if c is None else c for c in diagram.confidence])
    fig = _figure(5.0, 6.0)
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0, 1], [0, 1], ls="--", lw=1, color="grey", label="perfect calibration")
    top.bar(centres, np.nan_to_num(observed), width=width, edgecolor="black", alpha=0.7, label="observed")
    top.plot(confidence, observed, "o", color="crimson", ms=4, label="bin mean prediction")
    what = "fraction positive" if diagram.kind == "positive_class" else "accuracy of top label"
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel=what, title=f"{title} (ECE {diagram.ece:.3f})")
    top.legend(loc="upper left", fontsize="small")
    bottom.bar(centres, diagram.counts, width=width, edgecolor="black", color="grey")
    xlabel = "predicted probability of the positive class" if diagram.kind == "positive_class" else "confidence (top probability)"
    bottom.set(xlabel=xlabel, ylabel="cases")
    return _save(fig, path)


def plot_confusion_matrix(
    y_true: Any,
    y_pred: Any,
    path: str | Path,
    *,
    class_names: Any = None,
    title: str = "Confusion matrix",
) -> Path:
    """Counts, coloured by the row fraction (the recall of each true class)."""
    n_classes = None if class_names is None else len(class_names)
    cm = confusion_matrix(y_true, y_pred, n_classes)
    k = cm.shape[0]
    names = _names(class_names, k)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    size = max(4.0, 0.6 * k + 2.5)
    fig = _figure(size, size)
    ax = fig.add_subplot()
    image = ax.imshow(frac, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, f"{cm[i, j]}\n{frac[i, j]:.0%}", ha="center", va="center", fontsize="small",
                    color="white" if frac[i, j] > 0.5 else "black")
    ax.set(xticks=range(k), yticks=range(k), xlabel="predicted", ylabel="true", title=title)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    return _save(fig, path)
