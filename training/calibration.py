"""Measuring calibration: expected calibration error and reliability-diagram data.

Which probability is judged depends on the task, and the result records it:

- binary (1-D probabilities, or ``(n, 2)``): the positive-class probability
  against the observed fraction of positives, as in scikit-learn's
  ``calibration_curve``;
- multi-class (``(n, K)``, K > 2): the top-label confidence (the largest
  probability) against the accuracy of the top label (Guo et al., 2017).

Bins are equal-width on [0, 1]; bin ``i`` holds ``(edges[i], edges[i+1]]``, and
the first bin holds 0 as well. Fitting a temperature to fix a miscalibrated
model lives in :mod:`dxlab.models.calibration`, beside the packaged model that
applies it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dxlab.errors import EvaluationError
from dxlab.training.metrics import check_probabilities

DEFAULT_BINS = 15


@dataclass(frozen=True)
class ReliabilityDiagram:
    """Per-bin counts, mean predicted probability and observed frequency, with the ECE and MCE.

    ``confidence`` and ``observed`` are ``None`` for an empty bin.
    """

    kind: Literal["positive_class", "top_label"]
    bin_edges: list[float]
    counts: list[int]
    confidence: list[float | None]
    observed: list[float | None]
    ece: float
    mce: float
    n_samples: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "bin_edges": list(self.bin_edges),
            "counts": list(self.counts),
            "confidence": list(self.confidence),
            "observed": list(self.observed),
            "ece": self.ece,
            "mce": self.mce,
            "n_samples": self.n_samples,
        }


def reliability_diagram(y_true: Any, probs: Any, *, n_bins: int = DEFAULT_BINS) -> ReliabilityDiagram:
    """Bin the predictions by probability and compare each bin's mean prediction with what happened."""
    if isinstance(n_bins, bool) or not isinstance(n_bins, (int, np.integer)) or n_bins < 1:
        raise EvaluationError(f"n_bins must be a positive integer; got {n_bins!r}")
    y, p = check_probabilities(y_true, probs)
    if p.shape[1] == 2:
        kind: Literal["positive_class", "top_label"] = "positive_class"
        conf, hit = p[:, 1], (y == 1).astype(float)
    else:
        kind = "top_label"
        conf, hit = p.max(axis=1), (p.argmax(axis=1) == y).astype(float)
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    which = np.clip(np.searchsorted(edges, conf, side="left") - 1, 0, n_bins - 1)
    counts = np.bincount(which, minlength=n_bins)
    conf_sum = np.bincount(which, weights=conf, minlength=n_bins)
    hit_sum = np.bincount(which, weights=hit, minlength=n_bins)
    filled = counts > 0
    mean_conf = np.divide(conf_sum, counts, out=np.zeros(n_bins), where=filled)
    observed = np.divide(hit_sum, counts, out=np.zeros(n_bins), where=filled)
    gaps = np.abs(observed - mean_conf)
    return ReliabilityDiagram(
        kind=kind,
        bin_edges=edges.tolist(),
        counts=counts.astype(int).tolist(),
        confidence=[float(c) if f else None for c, f in zip(mean_conf, filled)],
        observed=[float(o) if f else None for o, f in zip(observed, filled)],
        ece=float(np.sum(counts * gaps) / len(y)),
        mce=float(gaps[filled].max()),
        n_samples=int(len(y)),
    )


def expected_calibration_error(y_true: Any, probs: Any, *, n_bins: int = DEFAULT_BINS) -> float:
    """ECE: the count-weighted mean gap between predicted probability and observed frequency."""
    return reliability_diagram(y_true, probs, n_bins=n_bins).ece
