"""Temperature scaling: one scalar T that softens (T > 1) or sharpens (T < 1) a model's logits.

The temperature is fitted on validation logits by minimising the negative
log-likelihood (Guo et al., 2017), and the packaged model divides its logits
by it before the sigmoid or softmax, so serving and evaluation see the same
calibrated probabilities. Scaling by one positive scalar never changes which
class ranks first nor the order of the scores, so AUROC is unchanged; only the
probabilities move.

Logits come in two shapes:

- 1-D (or ``(n, 1)``): one logit per case of a binary task, read through a sigmoid;
- ``(n, K)``, K >= 2: one logit per class, read through a softmax (a binary
  model with two outputs is this case with K = 2).

Measuring calibration (ECE, reliability diagrams) is evaluation's job:
:mod:`dxlab.training.calibration`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from dxlab.errors import EvaluationError

log = logging.getLogger(__name__)

#: Temperatures outside these bounds mean a degenerate fit (separable data, or constant logits).
DEFAULT_BOUNDS = (0.05, 20.0)

ArrayOrTensor = TypeVar("ArrayOrTensor", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class TemperatureFit:
    """The fitted temperature and the NLL (mean, in nats) before and after applying it."""

    temperature: float
    nll_before: float
    nll_after: float
    n_samples: int
    at_bound: bool

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(logits: Any, labels: Any) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.as_tensor(np.asarray(logits.detach().cpu() if isinstance(logits, torch.Tensor) else logits,
                                   dtype=np.float64))
    if z.ndim == 2 and z.shape[1] == 1:
        z = z[:, 0]
    if z.ndim not in (1, 2):
        raise EvaluationError(f"logits must be 1-D (binary) or (n, K); got shape {tuple(z.shape)}")
    if z.shape[0] == 0:
        raise EvaluationError("logits are empty; fitting a temperature needs validation samples")
    if not torch.isfinite(z).all():
        raise EvaluationError(f"logits hold {int((~torch.isfinite(z)).sum())} non-finite value(s) (NaN or inf)")
    y = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    if y.ndim != 1 or len(y) != z.shape[0]:
        raise EvaluationError(f"labels must be 1-D with one entry per logit row; got shape {y.shape} for {z.shape[0]} rows")
    n_classes = 2 if z.ndim == 1 else z.shape[1]
    if y.dtype == bool:
        y = y.astype(np.int64)
    if not np.issubdtype(y.dtype, np.number) or not np.all(y == np.round(y)) or y.min() < 0 or y.max() >= n_classes:
        raise EvaluationError(
            f"labels must be class indices in 0..{n_classes - 1} for logits of shape {tuple(z.shape)}; "
            f"got values {sorted(set(np.unique(y).tolist()))[:10]}"
        )
    return z, torch.as_tensor(y.astype(np.int64))


def _nll(z: torch.Tensor, y: torch.Tensor, temperature: torch.Tensor | float) -> torch.Tensor:
    if z.ndim == 1:
        return F.binary_cross_entropy_with_logits(z / temperature, y.to(z.dtype))
    return F.cross_entropy(z / temperature, y)


def _separable(z: torch.Tensor, y: torch.Tensor) -> bool:
    """True when every case's true class wins by a positive margin (the NLL then has no minimum)."""
    if z.ndim == 1:
        return bool(torch.all(torch.where(y == 1, z, -z) > 0))
    true = z.gather(1, y[:, None])[:, 0]
    others = z.scatter(1, y[:, None], -math.inf).max(dim=1).values
    return bool(torch.all(true > others))


def negative_log_likelihood(logits: Any, labels: Any, temperature: float = 1.0) -> float:
    """Mean NLL (nats) of ``labels`` under ``logits / temperature``."""
    _check_temperature(temperature)
    z, y = _check(logits, labels)
    return float(_nll(z, y, float(temperature)))


def fit_temperature(
    logits: Any,
    labels: Any,
    *,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
    max_iter: int = 100,
) -> TemperatureFit:
    """Fit T > 0 minimising the NLL of ``labels`` under ``logits / T`` (LBFGS on log T, float64).

    The NLL is convex in 1/T, so the minimum is unique. When it lies outside
    ``bounds`` (separable data drives T to 0) the bound is returned and
    ``at_bound`` is set.
    """
    lo, hi = bounds
    if not 0 < lo < 1 < hi:
        raise EvaluationError(f"temperature bounds must satisfy 0 < low < 1 < high; got {bounds}")
    z, y = _check(logits, labels)
    if _separable(z, y):
        # every case is already on the right side with a margin: the NLL falls all the way to T -> 0
        before, after = float(_nll(z, y, 1.0)), float(_nll(z, y, lo))
        log.warning("validation logits separate the classes perfectly; temperature set to the bound %g", lo)
        return TemperatureFit(lo, before, after, int(z.shape[0]), True)
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe", tolerance_grad=1e-9, tolerance_change=1e-12
    )

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = _nll(z, y, log_t.exp())
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    fitted = float(log_t.detach().exp())
    if not math.isfinite(fitted):
        fitted = hi if float(log_t.detach()) > 0 else lo
    temperature = min(max(fitted, lo), hi)
    at_bound = not lo < fitted < hi
    with torch.no_grad():
        before = float(_nll(z, y, 1.0))
        after = float(_nll(z, y, temperature))
    if after > before:
        # LBFGS cannot do worse than its start on a convex problem; guard anyway
        log.warning("temperature fit did not lower the NLL (%.4g -> %.4g); keeping T = 1", before, after)
        temperature, after, at_bound = 1.0, before, False
    if at_bound:
        log.warning("fitted temperature %.4g hit the bound %s (separable or constant logits?)", fitted, bounds)
    return TemperatureFit(temperature, before, after, int(z.shape[0]), at_bound)


def _check_temperature(temperature: float) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not (
        math.isfinite(temperature) and temperature > 0
    ):
        raise EvaluationError(f"temperature must be a finite number > 0; got {temperature!r}")


def apply_temperature(logits: ArrayOrTensor, temperature: float) -> ArrayOrTensor:
    """Calibrated probabilities: ``sigmoid(logits / T)`` for 1-D logits, ``softmax(logits / T)`` for ``(n, K)``.

    A tensor gives a tensor (same device and dtype), anything else a float64 NumPy array.
    """
    _check_temperature(float(temperature) if isinstance(temperature, (np.floating, np.integer)) else temperature)
    if isinstance(logits, torch.Tensor):
        scaled = logits / temperature
        return torch.sigmoid(scaled) if scaled.ndim == 1 else torch.softmax(scaled, dim=-1)
    scaled = np.asarray(logits, dtype=np.float64) / temperature
    if scaled.ndim == 1:
        # the stable form of 1 / (1 + exp(-x)) for either sign
        e = np.exp(-np.abs(scaled))
        return np.where(scaled >= 0, 1 / (1 + e), e / (1 + e))
    shifted = np.exp(scaled - scaled.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)
