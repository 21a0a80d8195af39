"""Choosing a binary decision threshold on validation data, by a named rule.

Rules, written as strings in run configs:

- ``youden``: the threshold of maximum Youden's J (sensitivity + specificity - 1).
- ``sensitivity>=X``: the highest threshold whose sensitivity is at least X, so
  specificity is as high as the target allows (``sensitivity>=0.9`` is the WHO
  target for TB triage).
- ``specificity>=X``: the lowest threshold whose specificity is at least X, so
  sensitivity is as high as the target allows.
- ``sensitivity>=X,specificity>=Y`` (or the other way round): the first
  constraint chooses the threshold as above; the second is a requirement that
  is checked, not optimised (the WHO TPP for TB: sensitivity >= 0.90 with
  specificity >= 0.70).

Candidate thresholds are the distinct validation probabilities; a case is
positive when its probability is ``>= threshold``. Calling every case positive
is a candidate, calling none is not (a model that never flags is no operating
point). So ``sensitivity>=X`` alone can always be met, though perhaps only by
flagging everyone; ``specificity>=X`` or a second constraint may not be. When a
target is not met the result says so (``target_met`` False, with a note) and
holds the closest threshold; it never fails silently.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from dxlab.errors import EvaluationError
from dxlab.training.metrics import check_binary, roc_curve

VALID_RULE_FORMS = (
    "youden",
    "sensitivity>=X",
    "specificity>=X",
    "sensitivity>=X,specificity>=Y",
    "specificity>=X,sensitivity>=Y",
)
#: slack for targets such as 0.9 met by a ratio like 9/10 computed in floating point
_EPS = 1e-12
_BOUND = re.compile(r"^(sensitivity|specificity)\s*>=\s*([0-9]*\.?[0-9]+)$")

Measure = Literal["sensitivity", "specificity"]


@dataclass(frozen=True)
class Constraint:
    """``measure >= target``."""

    measure: Measure
    target: float

    def __str__(self) -> str:
        return f"{self.measure}>={self.target:g}"


@dataclass(frozen=True)
class OperatingRule:
    """A parsed rule: Youden, or a primary constraint that picks the threshold plus an optional check."""

    kind: Literal["youden", "constraint"]
    primary: Constraint | None = None
    secondary: Constraint | None = None

    def __post_init__(self) -> None:
        if (self.kind == "youden") != (self.primary is None) or (self.primary is None and self.secondary is not None):
            raise EvaluationError(f"inconsistent operating rule {self!r}: youden has no bounds, a constraint rule needs one")

    def __str__(self) -> str:
        if self.kind == "youden":
            return "youden"
        return ",".join(str(c) for c in (self.primary, self.secondary) if c is not None)


def parse_rule(text: str | OperatingRule) -> OperatingRule:
    """Parse ``"youden"``, ``"sensitivity>=0.9"``, ``"specificity>=0.8"`` or a pair of bounds."""
    if isinstance(text, OperatingRule):
        return text
    forms = ", ".join(repr(f) for f in VALID_RULE_FORMS)
    if not isinstance(text, str):
        raise EvaluationError(f"operating-point rule must be a string; got {type(text).__name__} {text!r}. Valid forms: {forms}")
    cleaned = text.strip().lower()
    if cleaned == "youden":
        return OperatingRule("youden")
    parts = [p.strip() for p in cleaned.split(",")]
    constraints = []
    for part in parts:
        match = _BOUND.match(part)
        if match is None or len(parts) > 2:
            raise EvaluationError(
                f"unknown operating-point rule {text!r}; valid forms: {forms}, with X and Y in (0, 1], e.g. 'sensitivity>=0.9'"
            )
        target = float(match.group(2))
        if not 0 < target <= 1:
            hint = f" (a fraction: write {target / 100:g}, not {target:g})" if 1 < target <= 100 else ""
            raise EvaluationError(f"target {target:g} in operating-point rule {text!r} must be in (0, 1]{hint}")
        constraints.append(Constraint(match.group(1), target))  # type: ignore[arg-type]
    if len(constraints) == 2 and constraints[0].measure == constraints[1].measure:
        raise EvaluationError(
            f"operating-point rule {text!r} bounds {constraints[0].measure} twice; "
            f"bound sensitivity and specificity once each. Valid forms: {forms}"
        )
    return OperatingRule("constraint", constraints[0], constraints[1] if len(constraints) == 2 else None)


@dataclass(frozen=True)
class OperatingPoint:
    """The chosen threshold and what it achieves on the data it was chosen on."""

    rule: str
    threshold: float
    sensitivity: float
    specificity: float
    youden_j: float
    target_met: bool
    note: str
    n_positive: int
    n_negative: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "threshold": float(self.threshold),
            "sensitivity": float(self.sensitivity),
            "specificity": float(self.specificity),
            "youden_j": float(self.youden_j),
            "target_met": bool(self.target_met),
            "note": self.note,
            "n_positive": int(self.n_positive),
            "n_negative": int(self.n_negative),
        }


def choose_operating_point(y_true: Any, probs: Any, rule: str | OperatingRule = "youden") -> OperatingPoint:
    """Choose the threshold on (validation) labels and probabilities by ``rule``."""
    parsed = parse_rule(rule)
    y, _ = check_binary(y_true, probs)
    fpr, tpr, thresholds = roc_curve(y_true, probs)
    # drop the +inf point: flagging nobody is not an operating point
    sens, spec, thr = tpr[1:], 1.0 - fpr[1:], thresholds[1:]  # thresholds descending
    n_pos, n_neg = int(np.sum(y == 1)), int(np.sum(y == 0))
    notes: list[str] = []
    met = True

    if parsed.primary is None:  # youden
        j = sens + spec - 1
        i = int(np.flatnonzero(j == j.max())[0])  # ties: the highest threshold
    else:
        c = parsed.primary
        if c.measure == "sensitivity":
            # sensitivity only grows as the threshold falls, and the lowest threshold
            # (everyone positive) reaches 1: the first that meets it has the best specificity
            i = int(np.flatnonzero(sens >= c.target - _EPS)[0])
            if i == len(thr) - 1 and n_neg:
                notes.append(f"{c} is met only by calling every case positive (specificity 0)")
        else:
            ok = np.flatnonzero(spec >= c.target - _EPS)
            if len(ok):
                i = int(ok[-1])
            else:
                i = 0
                met = False
                notes.append(
                    f"{c} cannot be met on this data: the highest threshold ({thr[i]:.6g}) reaches "
                    f"specificity {spec[i]:.4f}, as negatives share the top probability; that threshold is used"
                )
        s = parsed.secondary
        if s is not None:
            value = sens[i] if s.measure == "sensitivity" else spec[i]
            if value < s.target - _EPS:
                met = False
                notes.append(f"{s} is not met: {s.measure} is {value:.4f} at threshold {thr[i]:.6g}, chosen for {c}")
    return OperatingPoint(
        rule=str(parsed),
        threshold=float(thr[i]),
        sensitivity=float(sens[i]),
        specificity=float(spec[i]),
        youden_j=float(sens[i] + spec[i] - 1),
        target_met=met,
        note="; ".join(notes),
        n_positive=n_pos,
        n_negative=n_neg,
    )


def decide(probs: Any, point: OperatingPoint | float) -> np.ndarray:
    """Binary decisions (0/1) at an operating point: positive when probability ``>= threshold``."""
    threshold = point.threshold if isinstance(point, OperatingPoint) else float(point)
    if not math.isfinite(threshold):
        raise EvaluationError(f"threshold must be a finite number; got {threshold!r}")
    return (np.asarray(probs, dtype=np.float64) >= threshold).astype(np.int64)
