"""Preprocessing: the one function that turns a decoded image into a network input.

Training, evaluation and serving all call :func:`preprocess` with the
:class:`PreprocessSpec` stored in the packaged model, so what the network sees
in the clinic is what it saw in training (no train/serve skew).

Input: dxlab's image convention (:mod:`dxlab.datasets.images`): a float array
in [0, 1], ``(H, W)`` grey or ``(H, W, 3)`` RGB (``(H, W, 1)`` is taken as grey).
Steps, in order:

1. channels: RGB to grey with the ITU-R BT.601 luma weights
   (:func:`~dxlab.datasets.images.to_channels`) before resizing; grey to RGB
   by repeating the channel after resizing (the same result, a third of the work);
2. resize with torch's bilinear interpolation with antialiasing
   (deterministic on the CPU), by ``resize`` mode:

   - ``stretch``: to ``image_size`` exactly, ignoring the aspect ratio;
   - ``pad``: keep the aspect ratio, fit the longer side, pad the rest
     (centred) with ``pad_value``;
   - ``crop``: keep the aspect ratio, fit the shorter side, crop the centre;

3. normalise: ``(x - mean) / std`` per channel (one value applies to all).

Output: a float32 ``torch.Tensor`` ``(C, H, W)``; :func:`preprocess_batch`
stacks images of any sizes into ``(N, C, H, W)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from dxlab.datasets.images import to_channels
from dxlab.errors import ModelError

RESIZE_MODES = ("stretch", "pad", "crop")
#: ImageNet statistics, for networks pretrained on it (grey: the mean over RGB)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: how far outside [0, 1] an input value may stray (rounding) before it is refused
_RANGE_SLACK = 1e-3


@dataclass(frozen=True)
class PreprocessSpec:
    """How to turn a decoded image into a network input; JSON round-trips via to_dict/from_dict."""

    #: (height, width) of the network input; an int means a square
    image_size: tuple[int, int]
    #: channels the network takes: 1 or 3
    channels: int = 1
    #: per-channel mean and std subtracted/divided after resizing (one value: all channels)
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    resize: str = "stretch"
    #: intensity (in [0, 1], before normalisation) of the border added by ``resize="pad"``
    pad_value: float = 0.0

    def __post_init__(self) -> None:
        size = self.image_size
        if _is_int(size):
            size = (size, size)
        if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(_is_int(s) and s >= 1 for s in size)):
            raise ModelError(f"preprocessing image_size={self.image_size!r}; expected a positive integer or [height, width]")
        size = (int(size[0]), int(size[1]))
        object.__setattr__(self, "image_size", size)
        if not _is_int(self.channels) or self.channels not in (1, 3):
            raise ModelError(f"preprocessing channels={self.channels!r}; expected 1 or 3")
        object.__setattr__(self, "channels", int(self.channels))
        for name in ("mean", "std"):
            values = _floats(getattr(self, name), name)
            if len(values) not in (1, self.channels):
                raise ModelError(f"preprocessing {name}={list(values)} has {len(values)} values; "
                                 f"expected 1 or {self.channels} (one per channel)")
            object.__setattr__(self, name, values)
        if min(self.std) <= 0:
            raise ModelError(f"preprocessing std={list(self.std)}; every value must be > 0")
        if self.resize not in RESIZE_MODES:
            raise ModelError(f"preprocessing resize={self.resize!r}; expected one of {', '.join(RESIZE_MODES)}")
        pad = _floats((self.pad_value,), "pad_value")[0]
        if not 0.0 <= pad <= 1.0:
            raise ModelError(f"preprocessing pad_value={self.pad_value!r}; expected a value in [0, 1]")
        object.__setattr__(self, "pad_value", pad)

    @classmethod
    def imagenet(cls, image_size: int | tuple[int, int], channels: int = 3, resize: str = "stretch") -> PreprocessSpec:
        """The spec for a network pretrained on ImageNet (grey: the RGB statistics averaged)."""
        if channels == 1:
            return cls(image_size, 1, (sum(IMAGENET_MEAN) / 3,), (sum(IMAGENET_STD) / 3,), resize)
        return cls(image_size, channels, IMAGENET_MEAN, IMAGENET_STD, resize)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, *self.image_size)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON types: lists for the tuples."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreprocessSpec:
        """Rebuild from :meth:`to_dict`'s output; unknown keys are refused with the valid ones."""
        if not isinstance(data, Mapping):
            raise ModelError(f"preprocessing spec must be a mapping, got {type(data).__name__}")
        valid = [f.name for f in fields(cls)]
        unknown = sorted(set(data) - set(valid))
        if unknown:
            raise ModelError(f"preprocessing spec has unknown key(s) {', '.join(map(repr, unknown))}; valid keys: {', '.join(valid)}")
        if "image_size" not in data:
            raise ModelError("preprocessing spec lacks 'image_size'")
        return cls(**data)


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _floats(values: Any, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in (values if isinstance(values, (list, tuple)) else (values,)))
    except (TypeError, ValueError):
        raise ModelError(f"preprocessing {name}={values!r}; expected numbers") from None
    if not out or not all(math.isfinite(v) for v in out):
        raise ModelError(f"preprocessing {name}={values!r}; expected finite numbers")
    return out


def _check_image(image: Any) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    if not isinstance(image, np.ndarray):
        raise ModelError(f"expected an image as a numpy array, got {type(image).__name__}")
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)):
        raise ModelError(f"expected an (H, W) grey or (H, W, 3) RGB image, got shape {image.shape}")
    if 0 in image.shape:
        raise ModelError(f"empty image of shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating):
        raise ModelError(f"expected float pixel values in [0, 1], got dtype {image.dtype} "
                         "(decode files with dxlab.datasets.read_image)")
    image = image.astype(np.float32, copy=False)
    lo, hi = float(image.min()), float(image.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < -_RANGE_SLACK or hi > 1 + _RANGE_SLACK:
        raise ModelError(f"image values lie in [{lo:g}, {hi:g}]; expected [0, 1] (NaN and infinity refused)")
    return image


def _resize(x: torch.Tensor, spec: PreprocessSpec) -> torch.Tensor:
    """(c, h, w) -> (c, H, W) by ``spec.resize``."""
    (h, w), (H, W) = x.shape[1:], spec.image_size
    if spec.resize == "stretch":
        return _interpolate(x, H, W)
    if spec.resize == "pad":
        scale = min(H / h, W / w)
        nh, nw = min(H, max(1, round(h * scale))), min(W, max(1, round(w * scale)))
        x = _interpolate(x, nh, nw)
        top, left = (H - nh) // 2, (W - nw) // 2
        return F.pad(x, (left, W - nw - left, top, H - nh - top), value=spec.pad_value)
    scale = max(H / h, W / w)
    nh, nw = max(H, round(h * scale)), max(W, round(w * scale))
    x = _interpolate(x, nh, nw)
    top, left = (nh - H) // 2, (nw - W) // 2
    return x[:, top:top + H, left:left + W]


def _interpolate(x: torch.Tensor, h: int, w: int) -> torch.Tensor:
    if tuple(x.shape[1:]) == (h, w):
        return x
    return F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0]


def preprocess(image: np.ndarray, spec: PreprocessSpec) -> torch.Tensor:
    """One decoded image (float in [0, 1], (H, W) or (H, W, 3)) -> float32 tensor (C, H, W)."""
    image = _check_image(image)
    if image.ndim == 3 and spec.channels == 1:
        image = to_channels(image, 1)
    x = torch.from_numpy(np.ascontiguousarray(image))
    x = x[None] if x.ndim == 2 else x.permute(2, 0, 1)
    x = _resize(x, spec)
    if x.shape[0] != spec.channels:
        x = x.expand(spec.channels, -1, -1)
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    return ((x - mean) / std).contiguous()


def preprocess_batch(images: Iterable[np.ndarray], spec: PreprocessSpec) -> torch.Tensor:
    """Several decoded images, of any sizes -> float32 tensor (N, C, H, W).

    ``images`` is a sequence of images, or an array stacking same-size images
    along its first axis ((N, H, W) or (N, H, W, 3)); pass one image to :func:`preprocess`.
    """
    if isinstance(images, np.ndarray) and images.ndim not in (3, 4):
        raise ModelError(f"expected a stack of images (N, H, W) or (N, H, W, 3), got shape {images.shape}")
    tensors = [preprocess(image, spec) for image in images]
    if not tensors:
        return torch.empty((0, *spec.input_shape), dtype=torch.float32)
    return torch.stack(tensors)
