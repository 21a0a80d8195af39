"""Metrics within each value of a metadata column (sex, age band, site or source).

A model that is good on average can fail a subgroup; a model card reports each.
A group is evaluated when it has at least ``min_size`` cases and more than one
class in ``y_true``; otherwise it is listed under ``skipped`` with the reason,
never dropped silently. Missing values form their own group, ``(missing)``.

A numeric column is cut into bands, ``[low, high)``, by ``bands[column]``; a
column named ``age`` gets :data:`DEFAULT_AGE_BANDS` unless told otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dxlab.errors import EvaluationError
from dxlab.training.metrics import (
    ClassificationMetrics,
    Estimate,
    ThresholdMetrics,
    auroc,
    check_probabilities,
    classification_metrics,
    threshold_metrics,
)

DEFAULT_AGE_BANDS: tuple[float, ...] = (0, 18, 40, 60, 200)
MISSING = "(missing)"
OUT_OF_RANGE = "(out of range)"
#: a numeric column with more distinct values than this needs bands
_MAX_LEVELS = 20


@dataclass(frozen=True)
class GroupMetrics:
    """The metrics of one subgroup. ``at_threshold`` is binary only; ``classification`` multi-class only."""

    value: str
    n: int
    n_by_class: dict[str, int]
    auroc: Estimate | None
    at_threshold: ThresholdMetrics | None = None
    classification: ClassificationMetrics | None = None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "value": self.value,
            "n": self.n,
            "n_by_class": dict(self.n_by_class),
            "auroc": None if self.auroc is None else self.auroc.to_dict(),
            "at_threshold": None if self.at_threshold is None else self.at_threshold.to_dict(),
            "classification": None if self.classification is None else self.classification.to_dict(),
            "note": self.note,
        }


@dataclass(frozen=True)
class SkippedGroup:
    value: str
    n: int
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "n": self.n, "reason": self.reason}


@dataclass(frozen=True)
class SubgroupReport:
    """The groups of one metadata column: evaluated ones and skipped ones."""

    column: str
    bands: list[float] | None
    groups: list[GroupMetrics] = field(default_factory=list)
    skipped: list[SkippedGroup] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "column": self.column,
            "bands": None if self.bands is None else list(self.bands),
            "groups": [g.to_dict() for g in self.groups],
            "skipped": [s.to_dict() for s in self.skipped],
        }


def _edge(x: float) -> str:
    return f"{x:g}"


def band_labels(values: Any, edges: Sequence[float]) -> np.ndarray:
    """Label each number by its band ``[low,high)``, e.g. ``"[18,40)"``; NaN gives ``(missing)``."""
    e = np.asarray(edges, dtype=np.float64)
    if e.ndim != 1 or len(e) < 2 or not np.all(np.isfinite(e)) or not np.all(np.diff(e) > 0):
        raise EvaluationError(f"band edges must be at least two increasing finite numbers, e.g. {list(DEFAULT_AGE_BANDS)}; got {list(edges)}")
    try:
        x = pd.to_numeric(pd.Series(values), errors="raise").to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise EvaluationError(f"banding needs numbers; {exc}") from None
    names = np.array([f"[{_edge(lo)},{_edge(hi)})" for lo, hi in zip(e[:-1], e[1:])] + [OUT_OF_RANGE, MISSING])
    which = np.searchsorted(e, x, side="right") - 1
    which = np.where((x < e[0]) | (x >= e[-1]), len(e) - 1, which)
    which = np.where(np.isnan(x), len(e), which)
    return names[which]


def _column(metadata: Any, name: str, n: int) -> pd.Series:
    table = metadata if isinstance(metadata, pd.DataFrame) else pd.DataFrame(dict(metadata))
    if name not in table.columns:
        raise EvaluationError(f"subgroup column {name!r} is not in the metadata; available columns: {sorted(map(str, table.columns))}")
    if len(table) != n:
        raise EvaluationError(f"metadata has {len(table)} rows but there are {n} predictions; they must match")
    return table[name].reset_index(drop=True)


def _group_values(column: pd.Series, name: str, edges: Sequence[float] | None) -> np.ndarray:
    if edges is not None:
        return band_labels(column, edges)
    numeric = pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column)
    if numeric and column.nunique(dropna=True) > _MAX_LEVELS:
        raise EvaluationError(
            f"subgroup column {name!r} is numeric with {column.nunique()} distinct values; "
            f"give bands for it, e.g. bands={{{name!r}: {list(DEFAULT_AGE_BANDS)}}}"
        )
    missing = column.isna() | (column.astype(str).str.strip() == "")
    return np.where(missing, MISSING, column.astype(str).to_numpy())


def subgroup_metrics(
    y_true: Any,
    probs: Any,
    metadata: pd.DataFrame | Mapping[str, Sequence[Any]],
    columns: Sequence[str],
    *,
    threshold: float | None = None,
    class_names: Sequence[str] | None = None,
    bands: Mapping[str, Sequence[float]] | None = None,
    min_size: int = 10,
    n_bootstrap: int = 0,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, SubgroupReport]:
    """Per column, per value: AUROC, plus binary metrics at ``threshold`` or multi-class metrics at argmax.

    ``metadata`` is the manifest's rows for these predictions, in the same order.
    """
    y, p = check_probabilities(y_true, probs)
    k = p.shape[1]
    names = [str(c) for c in (class_names if class_names is not None else range(k))]
    if len(names) != k:
        raise EvaluationError(f"{len(names)} class names given for {k} classes: {names}")
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 2:
        raise EvaluationError(f"min_size must be an integer >= 2; got {min_size!r}")
    bands = dict(bands) if bands is not None else {}
    unknown = sorted(set(bands) - set(columns))
    if unknown:
        raise EvaluationError(f"bands given for {unknown}, which are not among the subgroup columns {list(columns)}")
    boot = {"n_bootstrap": n_bootstrap, "confidence": confidence, "seed": seed}

    reports = {}
    for name in columns:
        edges = bands.get(name, DEFAULT_AGE_BANDS if name == "age" else None)
        column = _column(metadata, name, len(y))
        if edges is not None and name not in bands and not pd.api.types.is_numeric_dtype(column):
            edges = None  # an "age" column already holding bands (strings) is used as it is
        values = _group_values(column, name, edges)
        report = SubgroupReport(name, None if edges is None else [float(e) for e in edges])
        for value in sorted(set(values.tolist())):
            mask = values == value
            yg, pg = y[mask], p[mask]
            counts = {names[c]: int(np.sum(yg == c)) for c in range(k)}
            present = [c for c in range(k) if counts[names[c]]]
            if mask.sum() < min_size:
                report.skipped.append(SkippedGroup(value, int(mask.sum()), f"{int(mask.sum())} cases, fewer than min_size={min_size}"))
                continue
            if len(present) < 2:
                report.skipped.append(SkippedGroup(value, int(mask.sum()), f"only one class in y_true ({names[present[0]]}); AUROC and rates need both"))
                continue
            report.groups.append(_group(value, yg, pg, counts, present, names, threshold, boot))
        reports[name] = report
    return reports


def _group(value: str, y: np.ndarray, p: np.ndarray, counts: dict[str, int], present: list[int],
           names: list[str], threshold: float | None, boot: dict[str, Any]) -> GroupMetrics:
    k = p.shape[1]
    if k == 2:
        at = None if threshold is None else threshold_metrics(y, p, threshold, **boot)
        return GroupMetrics(value, len(y), counts, auroc(y, p, **boot), at_threshold=at)
    note = ""
    if len(present) == k:
        group_auroc = auroc(y, p, **boot)
    else:
        group_auroc = None
        absent = [names[c] for c in range(k) if c not in present]
        note = f"macro AUROC not computed: class(es) {absent} absent from this group"
    cls = classification_metrics(y, p.argmax(axis=1), class_names=names, **boot)
    return GroupMetrics(value, len(y), counts, group_auroc, classification=cls, note=note)
