"""Out-of-distribution abstention: answer "not assessable" to inputs unlike the training data.

Two guards, both fitted on the training images and stored with the packaged
model (``PackageInfo.extra["ood"]``, the dict :func:`fit_ood` returns):

1. :class:`InputStats`, independent of the network: a few per-image statistics
   (intensity mean, contrast, roughness, black and white clipping, colour),
   each with the range the training images span plus a margin. It catches the
   gross mismatches with a reason a person can act on ("colour image; the
   model was trained on grey images"), even where the network's features
   would happen to look ordinary.
2. :class:`OODDetector`, on the network's penultimate features (the input of
   its last ``nn.Linear``, :func:`features`): a Mahalanobis distance.

The detector. Features have D = 128 (``small_cnn``) to 2048 (ResNet-50)
dimensions and usually fewer training images than that, so a full D x D
covariance would be both poorly estimated and too big to store. It is the
probabilistic-PCA form of the Mahalanobis distance: with ``mean`` and the top
``k`` principal directions ``components`` (k <= 64) of the training features,

    score(x) = z' P z + |r|^2 / residual_var,    z = C (x - mean),  r = (x - mean) - C' z

where ``P`` is the precision of ``z`` estimated with scikit-learn's
Ledoit-Wolf shrinkage (which keeps the small principal directions from
dominating), and ``residual_var`` the mean variance per dimension left outside
the k directions (PPCA's noise variance). An input far from the training
features along the principal directions, or off their subspace, scores high.
``k = min(64, D // 2, n // 5)``, at least 1. Stored: the mean (float32),
the components (float16, as fitted: the detector scores with the rounded
values, so a stored detector scores exactly as the fitted one), P (float32),
all base64: about 200 KB of JSON for D = 1024 (k = 64), 370 KB for D = 2048.

The threshold. Scores of the images a detector was fitted on are optimistic,
so the threshold comes from out-of-fold scores: the training features are
split into 5 folds (shuffled with ``seed``), each fold scored by a detector
fitted on the other four, and the final detector fitted on all. The threshold
is the larger of the empirical ``quantile`` (default 0.995) of those
out-of-fold scores and the same quantile of an exponential tail fitted to the
scores above their 80th percentile (peaks over threshold: a generalised Pareto
tail of shape 0, as chi-square-like distances have): with a few hundred images
the empirical 0.995 quantile is one order statistic, and the tail, fitted on
the top fifth of the scores, keeps one lucky draw from setting a threshold
that flags ordinary new images.
Expect about ``1 - quantile`` of in-distribution images to be flagged by
the detector, somewhat more where the training images were memorised by the
network (its features of unseen images are more spread).

:func:`ood_check` combines both: ``None`` for an assessable image, else the
reason, beginning "not assessable: ".
"""

from __future__ import annotations

import base64
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from dxlab.datasets.images import to_channels
from dxlab.errors import ModelError

FORMAT = "dxlab-ood"
FORMAT_VERSION = 1
#: most principal directions the detector keeps
MAX_COMPONENTS = 64
#: folds of the out-of-fold scores that set the threshold
FOLDS = 5
#: fewest training images the detector is fitted on
MIN_FIT = 10
#: the quantile above which out-of-fold scores are modelled as an exponential tail
_TAIL_START = 0.8
#: images per forward pass when :func:`fit_ood` computes features
FIT_BATCH = 64


# ------------------------------------------------------------------ features


def _last_linear(model: nn.Module) -> nn.Linear:
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ModelError(f"{type(model).__name__} has no nn.Linear layer; its penultimate features cannot be found")
    return linears[-1]


def features(model: nn.Module, batch: torch.Tensor, *, with_logits: bool = False
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """The penultimate features ``(N, D)`` of a preprocessed batch: the input of the network's last ``nn.Linear``.

    float32, on the device of ``model`` (the batch is moved there). The network
    runs in eval mode under ``torch.inference_mode()`` (a model in train mode
    is switched back after); the hook that captures the features is removed
    afterwards and ignores forward passes of other threads. ``with_logits``:
    also return the logits of the same pass, ``(features, logits)``, so a
    caller that needs both runs the network once.
    """
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise ModelError(f"expected a preprocessed batch tensor (N, C, H, W), got {shape}")
    head = _last_linear(model)
    param = next(model.parameters(), batch)
    me = threading.get_ident()
    captured: list[torch.Tensor] = []

    def capture(_module: nn.Module, inputs: tuple) -> None:
        if threading.get_ident() == me:
            captured.append(inputs[0])

    training = model.training
    handle = head.register_forward_pre_hook(capture)
    try:
        model.eval()
        with torch.inference_mode():
            logits = model(batch.to(param.device, param.dtype))
    finally:
        handle.remove()
        model.train(training)
    if len(captured) != 1:
        raise ModelError(f"the last nn.Linear of {type(model).__name__} ran {len(captured)} times in one forward "
                         "pass; expected once")
    feats = captured[0].flatten(1).float()
    return (feats, logits) if with_logits else feats


def _as_features(feats: np.ndarray | torch.Tensor, dim: int | None = None) -> np.ndarray:
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().float().cpu().numpy()
    feats = np.asarray(feats)
    if feats.ndim != 2 or (dim is not None and feats.shape[1] != dim):
        expected = "(N, D)" if dim is None else f"(N, {dim})"
        raise ModelError(f"expected features of shape {expected}, got {feats.shape}")
    if not np.issubdtype(feats.dtype, np.number):
        raise ModelError(f"features must be numbers, got dtype {feats.dtype}")
    return feats.astype(np.float64, copy=False)


# ------------------------------------------------------------------ serialisation


def _encode(array: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode("ascii")


def _decode(text: Any, dtype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    try:
        raw = base64.b64decode(text, validate=True)
        array = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
        return array.reshape(shape).astype(np.float32)
    except (TypeError, ValueError) as exc:
        raise ModelError(f"OOD detector field {name!r} is not base64 {dtype} of shape {shape}: {exc}") from None


def _field(data: Mapping[str, Any], name: str, kind: type | tuple[type, ...], what: str) -> Any:
    value = data.get(name)
    if value is None or isinstance(value, bool) or not isinstance(value, kind):
        raise ModelError(f"OOD description field {name!r} is {value!r}; expected {what}")
    return value


# ------------------------------------------------------------------ the feature detector


def _fit_parts(feats: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, components rounded to float16, Ledoit-Wolf precision of the projections, residual variance)."""
    from sklearn.covariance import LedoitWolf

    mean = feats.mean(0).astype(np.float32)
    centred = feats - mean.astype(np.float64)
    if len(feats) > 2 * feats.shape[1]:  # many images: eigenvectors of the D x D covariance
        values, vectors = np.linalg.eigh(centred.T @ centred)
        top = vectors[:, np.argsort(values)[::-1][:k]].T
    else:  # few: the SVD of the n x D centred features
        top = np.linalg.svd(centred, full_matrices=False)[2][:k]
    components = top.astype(np.float16).astype(np.float32)
    c = components.astype(np.float64)
    z = centred @ c.T
    residual = centred - z @ c
    dim = feats.shape[1]
    total = float((centred ** 2).sum()) / len(feats) / dim
    residual_var = float((residual ** 2).sum()) / len(feats) / max(dim - k, 1)
    residual_var = max(residual_var, 1e-6 * total, 1e-12)
    precision = LedoitWolf(assume_centered=True).fit(z).precision_.astype(np.float32)
    return mean, components, precision, residual_var


def _score(feats: np.ndarray, mean: np.ndarray, components: np.ndarray, precision: np.ndarray,
           residual_var: float) -> np.ndarray:
    centred = feats - mean.astype(np.float64)
    c = components.astype(np.float64)
    z = centred @ c.T
    residual = centred - z @ c
    scores = np.einsum("ni,ij,nj->n", z, precision.astype(np.float64), z) + (residual ** 2).sum(1) / residual_var
    return np.where(np.isfinite(scores), scores, np.inf)


def _threshold(scores: np.ndarray, quantile: float) -> float:
    """The larger of the empirical quantile and an exponential-tail quantile of out-of-fold scores."""
    empirical = float(np.quantile(scores, quantile))
    start = np.quantile(scores, _TAIL_START)
    excess = scores[scores > start] - start
    if quantile <= _TAIL_START or len(excess) < 2:
        return empirical
    # peaks over threshold: excesses over the 80th percentile taken as exponential
    # (a generalised Pareto tail of shape 0), the tail of chi-square-like distances
    tail = float(start + excess.mean() * math.log((1.0 - _TAIL_START) / (1.0 - quantile)))
    return max(empirical, tail)


@dataclass(frozen=True, eq=False)
class OODDetector:
    """A Mahalanobis detector on penultimate features, in probabilistic-PCA form (see the module docs)."""

    #: (D,) float32: the training features' mean
    mean: np.ndarray
    #: (k, D) float32 holding float16 values: the top principal directions, one per row
    components: np.ndarray
    #: (k, k) float32: Ledoit-Wolf precision of the projections on ``components``
    precision: np.ndarray
    #: variance per dimension outside the principal directions
    residual_var: float
    #: scores above it are out of distribution
    threshold: float
    #: the quantile of out-of-fold training scores the threshold was set at
    quantile: float = 0.995
    #: training images the detector was fitted on
    n_fit: int = 0

    def __post_init__(self) -> None:
        mean = np.asarray(self.mean, dtype=np.float32)
        components = np.asarray(self.components, dtype=np.float32)
        precision = np.asarray(self.precision, dtype=np.float32)
        if mean.ndim != 1 or components.ndim != 2 or components.shape[1] != mean.shape[0] \
                or precision.shape != (components.shape[0],) * 2:
            raise ModelError(f"OOD detector shapes disagree: mean {mean.shape}, components {components.shape}, "
                             f"precision {precision.shape}; expected (D,), (k, D), (k, k)")
        for name, value in (("residual_var", self.residual_var), ("threshold", self.threshold)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
                raise ModelError(f"OOD detector {name}={value!r}; expected a finite number > 0")
        if not 0.5 <= self.quantile < 1.0:
            raise ModelError(f"OOD quantile={self.quantile!r}; expected a number in [0.5, 1)")
        for name, array in (("mean", mean), ("components", components), ("precision", precision)):
            array.setflags(write=False)
            object.__setattr__(self, name, array)
        object.__setattr__(self, "residual_var", float(self.residual_var))
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "quantile", float(self.quantile))
        object.__setattr__(self, "n_fit", int(self.n_fit))

    @property
    def dim(self) -> int:
        """D, the feature dimension."""
        return self.mean.shape[0]

    @classmethod
    def fit(cls, feats: np.ndarray | torch.Tensor, *, quantile: float = 0.995, seed: int = 0) -> OODDetector:
        """Fit on the training images' features ``(n, D)``; the threshold from 5-fold out-of-fold scores."""
        feats = _as_features(feats)
        n, dim = feats.shape
        if n < MIN_FIT:
            raise ModelError(f"{n} feature rows; the OOD detector needs at least {MIN_FIT} training images")
        if not np.isfinite(feats).all():
            raise ModelError("training features hold NaN or infinite values; cannot fit the OOD detector")
        if isinstance(quantile, bool) or not isinstance(quantile, (int, float)) or not 0.5 <= quantile < 1.0:
            raise ModelError(f"quantile={quantile!r}; expected a number in [0.5, 1)")
        k = max(1, min(MAX_COMPONENTS, dim // 2, n // 5))
        folds = np.array_split(np.random.default_rng(seed).permutation(n), FOLDS)
        out_of_fold = np.empty(n)
        for held in folds:
            rest = np.setdiff1d(np.arange(n), held)
            out_of_fold[held] = _score(feats[held], *_fit_parts(feats[rest], k))
        mean, components, precision, residual_var = _fit_parts(feats, k)
        return cls(mean, components, precision, residual_var, _threshold(out_of_fold, quantile), quantile, n)

    def score(self, feats: np.ndarray | torch.Tensor) -> np.ndarray:
        """Squared Mahalanobis distances (PPCA form), float64 ``(N,)``; non-finite features score infinity."""
        return _score(_as_features(feats, self.dim), self.mean, self.components, self.precision, self.residual_var)

    def is_ood(self, feats: np.ndarray | torch.Tensor) -> np.ndarray:
        """True where the score exceeds the threshold."""
        return self.score(feats) > self.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON values; the arrays as base64 little-endian (components float16, the rest float32)."""
        return {"method": "ppca-mahalanobis", "dim": self.dim, "k": int(self.components.shape[0]),
                "mean": _encode(self.mean, "f4"), "components": _encode(self.components, "f2"),
                "precision": _encode(self.precision, "f4"), "residual_var": self.residual_var,
                "threshold": self.threshold, "quantile": self.quantile, "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OODDetector:
        """Rebuild from :meth:`to_dict`'s output."""
        if not isinstance(data, Mapping) or data.get("method") != "ppca-mahalanobis":
            raise ModelError("not an OOD detector description (expected \"method\": \"ppca-mahalanobis\")")
        dim = _field(data, "dim", int, "a positive integer")
        k = _field(data, "k", int, "a positive integer")
        if dim < 1 or not 1 <= k <= dim:
            raise ModelError(f"OOD detector dim={dim}, k={k}; expected 1 <= k <= dim")
        return cls(mean=_decode(data["mean"], "f4", (dim,), "mean"),
                   components=_decode(data["components"], "f2", (k, dim), "components"),
                   precision=_decode(data["precision"], "f4", (k, k), "precision"),
                   residual_var=_field(data, "residual_var", (int, float), "a number"),
                   threshold=_field(data, "threshold", (int, float), "a number"),
                   quantile=_field(data, "quantile", (int, float), "a number"),
                   n_fit=_field(data, "n_fit", int, "an integer"))


# ------------------------------------------------------------------ input statistics

#: statistic -> (computed on, smallest margin beyond the training range, checked bounds)
#: "batch" statistics use the preprocessed tensor (its units: the margin is a
#: fraction of the training images' typical contrast); "raw" ones the decoded image in [0, 1]
_STATS: dict[str, tuple[str, float, str]] = {
    "colour": ("raw", 0.05, "both"),        # mean channel spread, max - min over R, G, B
    "roughness": ("batch", 0.05, "both"),   # mean neighbour difference / std: noise, fine texture
    "mean": ("batch", 0.25, "both"),        # brightness
    "std": ("batch", 0.1, "both"),          # contrast
    "black": ("raw", 0.05, "high"),         # fraction of pixels clipped at black
    "white": ("raw", 0.05, "high"),         # fraction clipped at white
}
#: margin beyond the training range, as a fraction of its width
_MARGIN = 0.5
#: raw images are subsampled to about this many pixels for their statistics
_RAW_PIXELS = 1_000_000
_CLIP = 2.0 / 255.0


def _batch_stats(batch: torch.Tensor) -> dict[str, np.ndarray]:
    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise ModelError(f"expected a preprocessed batch tensor (N, C, H, W), got {shape}")
    x = batch.detach().float().cpu()
    flat = x.flatten(1)
    std = flat.std(1, unbiased=False)
    steps = torch.cat([(x[..., 1:, :] - x[..., :-1, :]).abs().flatten(1),
                       (x[..., :, 1:] - x[..., :, :-1]).abs().flatten(1)], 1).mean(1)
    return {"mean": flat.mean(1).numpy().astype(np.float64), "std": std.numpy().astype(np.float64),
            "roughness": (steps / std.clamp_min(1e-6)).numpy().astype(np.float64)}


def _raw_stats(images: Sequence[np.ndarray]) -> dict[str, np.ndarray]:
    out: dict[str, list[float]] = {"black": [], "white": [], "colour": []}
    for image in images:
        image = np.asarray(image)
        if image.ndim == 3 and image.shape[-1] == 1:
            image = image[..., 0]
        if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or 0 in image.shape:
            raise ModelError(f"expected a decoded (H, W) grey or (H, W, 3) RGB image, got shape {image.shape}")
        step = max(1, math.ceil(math.sqrt(image.shape[0] * image.shape[1] / _RAW_PIXELS)))
        image = image[::step, ::step].astype(np.float32, copy=False)
        if image.ndim == 3:
            grey = to_channels(image, 1)
            # channel-wise maximum minus minimum; elementwise over the three planes, ten times faster than
            # image.max(2) - image.min(2) (a reduction over a last axis of length 3), with the same values
            r, g, b = image[..., 0], image[..., 1], image[..., 2]
            colour = float((np.maximum(np.maximum(r, g), b) - np.minimum(np.minimum(r, g), b)).mean())
        else:
            grey, colour = image, 0.0
        out["black"].append(float((grey <= _CLIP).mean()))
        out["white"].append(float((grey >= 1.0 - _CLIP).mean()))
        out["colour"].append(colour)
    return {k: np.array(v) for k, v in out.items()}


@dataclass(frozen=True)
class InputStats:
    """Per-statistic ranges of the training images; an image outside one is flagged with a reason.

    Statistics: ``mean`` and ``std`` (contrast) of the preprocessed tensor,
    ``roughness`` (mean absolute difference of neighbouring pixels over the
    std: noise and fine texture score high, smooth radiographs low), and of
    the decoded image ``black`` and ``white`` (fractions of pixels clipped)
    and ``colour`` (mean over pixels of the spread between the R, G and B
    values, 0 for a grey image). Each range is the training values'
    [1 - q, q] quantiles (q = 0.995) widened on both sides by half its width,
    and at least by a floor (0.05 for the raw fractions and colour, 0.05 for
    roughness, 0.25 and 0.1 of the training images' median contrast for mean
    and std), so that a tight training set does not flag its own kind.

    ``raw_images`` may be none, at fitting or at checking (a request that sent
    a preprocessed tensor): the raw statistics are then not used.
    """

    #: statistic -> (low, high) accepted values
    ranges: Mapping[str, tuple[float, float]]
    #: statistic -> (low, high) quantiles of the training images, for the messages
    training: Mapping[str, tuple[float, float]]
    n_fit: int = 0

    def __post_init__(self) -> None:
        for name in (*self.ranges, *self.training):
            if name not in _STATS:
                raise ModelError(f"unknown input statistic {name!r}; known: {', '.join(_STATS)}")
        ranges = {k: (float(lo), float(hi)) for k, (lo, hi) in dict(self.ranges).items()}
        training = {k: (float(lo), float(hi)) for k, (lo, hi) in dict(self.training).items()}
        object.__setattr__(self, "ranges", ranges)
        object.__setattr__(self, "training", training)
        object.__setattr__(self, "n_fit", int(self.n_fit))

    @classmethod
    def fit(cls, raw_images: Sequence[np.ndarray] | None, batch: torch.Tensor, *, quantile: float = 0.995) -> InputStats:
        """Fit on the training images: decoded (``raw_images``, or none) and preprocessed (``batch``)."""
        values = _batch_stats(batch)
        n = len(values["mean"])
        if n < 2:
            raise ModelError(f"{n} training image(s); input statistics need at least 2")
        if raw_images is not None:
            if len(raw_images) != n:
                raise ModelError(f"{len(raw_images)} raw images but a batch of {n}; expected one raw image per row")
            values.update(_raw_stats(raw_images))
        scale = float(np.median(values["std"])) or 1.0
        ranges, training = {}, {}
        for name, (_, floor, _) in _STATS.items():
            if name not in values:
                continue
            lo, hi = (float(v) for v in np.quantile(values[name], [1.0 - quantile, quantile]))
            floor = floor * scale if name in ("mean", "std") else floor
            margin = max(_MARGIN * (hi - lo), floor)
            ranges[name] = (lo - margin, hi + margin)
            training[name] = (lo, hi)
        return cls(ranges, training, n)

    def check(self, raw_images: Sequence[np.ndarray] | None, batch: torch.Tensor) -> list[str | None]:
        """Per image: None when every statistic lies in its range, else the first reason it does not."""
        values = _batch_stats(batch)
        n = len(values["mean"])
        if raw_images is not None:
            if len(raw_images) != n:
                raise ModelError(f"{len(raw_images)} raw images but a batch of {n}; expected one raw image per row")
            values.update(_raw_stats(raw_images))
        blank = values["std"] < 1e-3 * max(self.training.get("std", (1.0, 1.0))[0], 1e-6)
        return ["blank image (a single grey level)" if blank[i] else self._first_reason(values, i) for i in range(n)]

    def _first_reason(self, values: Mapping[str, np.ndarray], i: int) -> str | None:
        for name, (_, _, bounds) in _STATS.items():
            if name not in values or name not in self.ranges:
                continue
            lo, hi = self.ranges[name]
            value = float(values[name][i])
            if value > hi:
                return self._reason(name, value, high=True)
            if value < lo and bounds == "both":
                return self._reason(name, value, high=False)
        return None

    def _reason(self, name: str, value: float, *, high: bool) -> str:
        lo, hi = self.training[name]
        seen = f"training images {lo:.3g} to {hi:.3g}"
        if name == "colour":
            if high and hi < 0.05:
                return "colour image; the model was trained on grey images"
            if not high and lo > 0.05:
                return "grey image; the model was trained on colour images"
            return f"{'more' if high else 'less'} colourful than the training images (colour {value:.3g}; {seen})"
        if name == "std":
            return f"{'far more' if high else 'far less'} contrast than the training images (std {value:.3g}; {seen})"
        if name == "mean":
            return f"much {'brighter' if high else 'darker'} than the training images (mean {value:.3g}; {seen})"
        if name in ("black", "white"):
            return (f"{value:.0%} of the pixels are clipped at {name}; at most {hi:.0%} were "
                    f"in the training images")
        return (f"{'noisier or finer-grained' if high else 'smoother'} than the training images "
                f"(roughness {value:.3g}; {seen})")

    def to_dict(self) -> dict[str, Any]:
        return {"ranges": {k: list(v) for k, v in self.ranges.items()},
                "training": {k: list(v) for k, v in self.training.items()}, "n_fit": self.n_fit}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputStats:
        try:
            return cls({k: tuple(v) for k, v in data["ranges"].items()},
                       {k: tuple(v) for k, v in data["training"].items()}, data.get("n_fit", 0))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelError(f"input statistics description lacks or misstates a field: {exc!r}") from None


# ------------------------------------------------------------------ both, for the packaged model


def fit_ood(model: nn.Module, raw_images: Sequence[np.ndarray] | None, batch_tensor: torch.Tensor, *,
            quantile: float = 0.995, seed: int = 0) -> dict[str, Any]:
    """Fit both guards on the training images; the JSON dict for ``PackageInfo.extra["ood"]``.

    ``raw_images``: the decoded training images (or none: no raw statistics);
    ``batch_tensor``: the same images preprocessed with the model's spec,
    ``(N, C, H, W)``, run through the network in chunks of 64.
    """
    if not isinstance(batch_tensor, torch.Tensor) or batch_tensor.ndim != 4:
        shape = tuple(batch_tensor.shape) if hasattr(batch_tensor, "shape") else type(batch_tensor).__name__
        raise ModelError(f"expected the preprocessed training images as a tensor (N, C, H, W), got {shape}")
    feats = torch.cat([features(model, chunk).cpu() for chunk in batch_tensor.split(FIT_BATCH)]) \
        if len(batch_tensor) else torch.empty(0, 0)
    detector = OODDetector.fit(feats.numpy(), quantile=quantile, seed=seed)
    stats = InputStats.fit(raw_images, batch_tensor, quantile=quantile)
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "detector": detector.to_dict(),
            "input_stats": stats.to_dict()}


def load_ood(ood_dict: Mapping[str, Any]) -> tuple[OODDetector, InputStats]:
    """Read :func:`fit_ood`'s dict; another format or a newer version is refused."""
    if not isinstance(ood_dict, Mapping) or ood_dict.get("format") != FORMAT:
        raise ModelError(f"not a dxlab OOD description (expected \"format\": \"{FORMAT}\")")
    if ood_dict.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"OOD description format_version={ood_dict.get('format_version')!r}; this dxlab reads "
                         f"version {FORMAT_VERSION}")
    return OODDetector.from_dict(ood_dict.get("detector")), InputStats.from_dict(ood_dict.get("input_stats") or {})


def ood_check(model: nn.Module, ood_dict: Mapping[str, Any], raw_images: Sequence[np.ndarray] | None,
              batch: torch.Tensor, *, feats: torch.Tensor | np.ndarray | None = None) -> list[str | None]:
    """Per image: None when assessable, else why not ("not assessable: ...").

    The input statistics are checked first (their reasons are the more
    telling), then the feature detector. ``raw_images`` may be none (a
    preprocessed tensor was sent); ``feats``: the batch's :func:`features`
    when the caller already has them (from ``features(..., with_logits=True)``).
    """
    detector, stats = load_ood(ood_dict)
    reasons = stats.check(raw_images, batch)
    if feats is None:
        feats = features(model, batch)
    scores = detector.score(feats)
    if len(scores) != len(reasons):
        raise ModelError(f"{len(scores)} feature rows for a batch of {len(reasons)} images")
    out: list[str | None] = []
    for reason, score in zip(reasons, scores):
        if reason is None and score > detector.threshold:
            reason = f"input unlike the training data (score {score:.1f} > threshold {detector.threshold:.1f})"
        out.append(None if reason is None else f"not assessable: {reason}")
    return out
