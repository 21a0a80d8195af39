"""Grad-CAM heatmaps (MONAI's ``GradCAM``) for every registry network, as arrays and PNG overlays.

- :func:`target_layer`: the layer Grad-CAM reads, found by running the network
  once: the last module to finish with a spatial ``(N, C, H, W)`` output before
  global pooling. For the registry that is ``class_layers.relu`` for MONAI's
  DenseNet-121 (the ReLU after ``features.norm5``, which the forward applies
  outside ``features``; MONAI's own example uses it), ``layer4`` for the
  ResNets, ``features`` for EfficientNet-B0 and the last conv block's ReLU of
  ``small_cnn``.
- :func:`gradcam`: heatmaps ``(N, H, W)``, float32 in [0, 1] (each map divided
  by its maximum; a map with no positive evidence is all zeros), upsampled to
  the input size. The score explained is the class logit (before softmax), per
  image: its predicted class, or the class asked for.
- :func:`overlay_png` and :func:`heatmap_grid`: what an API response carries,
  a PNG of the heatmap over the image and a small grid of numbers.

How the network is left alone: MONAI registers hooks it never removes, turns
off ``inplace`` on the target layer and calls ``backward()``, which would fill
``.grad`` on the weights. So Grad-CAM runs on a *twin*: a copy of the module
tree whose parameters are non-trainable views of the same storage (no weights
are copied) and whose buffers are the same tensors. The caller's network keeps
its hooks, its train/eval mode, its parameters' ``requires_grad`` and ``.grad``.
The graph starts at the target layer's input (a forward pre-hook on the twin
detaches it), so the backward pass runs through the head only. The twin is
built once per network (a deep copy of the module objects: milliseconds, half
a second for EfficientNet-B0), kept while the network lives, and rebuilt when
the network's tensors move (``.to(device)``, a replaced head); in-place weight
updates show through, since storage is shared.

Grad mode: the serving engine predicts under ``torch.inference_mode()``;
:func:`gradcam` leaves inference mode and enables grad for its own work, with
autocast off (heatmaps in float32), so it may be called from anywhere.

Threads: one network's Grad-CAMs run one at a time (a lock per twin; the twin
carries MONAI's hooks while it runs), so a caller should serialise Grad-CAM
requests per model rather than start several at once; predictions may run
concurrently on the same network, since Grad-CAM never touches its hooks or modes.
"""

from __future__ import annotations

import copy
import io
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from dxlab.errors import ModelError

#: side of the dummy input that finds the target layer (big enough that every
#: registry network keeps a spatial map, 3 x 3, before its global pooling)
_PROBE_SIZE = 96
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


@dataclass
class _Twin:
    net: nn.Module
    key: tuple
    layer: str
    lock: threading.Lock = field(default_factory=threading.Lock)


_TWINS: weakref.WeakKeyDictionary[nn.Module, _Twin] = weakref.WeakKeyDictionary()
_TWINS_LOCK = threading.Lock()


def _tensor_key(model: nn.Module) -> tuple:
    """What the twin depends on: where every parameter and buffer lives."""
    return tuple((t.data_ptr(), t.device, t.dtype, tuple(t.shape))
                 for t in (*model.parameters(), *model.buffers()))


def _twin(model: nn.Module) -> _Twin:
    if not isinstance(model, nn.Module):
        raise ModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    key = _tensor_key(model)
    with _TWINS_LOCK:
        twin = _TWINS.get(model)
        if twin is not None and twin.key == key:
            return twin
    # deepcopy consults the memo first: parameters become frozen views of the
    # same storage, buffers stay the very same tensors
    memo: dict[int, object] = {id(p): nn.Parameter(p.detach(), requires_grad=False) for p in model.parameters()}
    memo.update({id(b): b for b in model.buffers()})
    net = copy.deepcopy(model, memo).eval()
    twin = _Twin(net, key, _find_target_layer(net))
    with _TWINS_LOCK:
        _TWINS[model] = twin
    return twin


def _find_target_layer(net: nn.Module) -> str:
    """The last module to finish with a spatial 4-D output, global pools excluded (see the module docs)."""
    first_conv = next((m for m in net.modules() if isinstance(m, nn.Conv2d)), None)
    if first_conv is None:
        raise ModelError(f"{type(net).__name__} has no Conv2d layer; Grad-CAM needs a convolutional network")
    param = next(net.parameters())
    finished: list[str] = []

    def hook(name: str):
        def record(_module, _inputs, output):
            if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[2] * output.shape[3] > 1:
                finished.append(name)
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in net.named_modules()
               if name and not isinstance(m, _GLOBAL_POOLS)]
    try:
        with torch.inference_mode():
            net(torch.zeros(1, first_conv.in_channels, _PROBE_SIZE, _PROBE_SIZE, device=param.device, dtype=param.dtype))
    finally:
        for h in handles:
            h.remove()
    if not finished:
        raise ModelError(f"{type(net).__name__}: no layer keeps a spatial map for a {_PROBE_SIZE}-pixel input; "
                         "cannot choose a Grad-CAM layer")
    return finished[-1]


def target_layer(model: nn.Module) -> str:
    """The name (as in ``model.named_modules()``) of the layer Grad-CAM reads in ``model``.

    Found by one forward pass of a blank image through a copy of the network
    (the network itself is not run); the answer is cached with the copy.
    """
    return _twin(model).layer


class _ClassScore(nn.Module):
    """The network, answering with one logit per image: its predicted class or the one asked for.

    MONAI's ``ModelWithHooks`` explains ``logits[:, class_idx]``; with one
    column per image the batch's scores stay separate (MONAI's own choice of
    the predicted classes would sum every image's class over the whole batch).
    """

    def __init__(self, net: nn.Module, class_index: int | Sequence[int] | None) -> None:
        super().__init__()
        self.net = net
        self.class_index = class_index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.net(x)
        if not isinstance(logits, torch.Tensor) or logits.ndim != 2:
            raise ModelError(f"Grad-CAM needs a network returning logits (N, classes); got "
                             f"{tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        n, classes = logits.shape
        if self.class_index is None:
            index = logits.argmax(1)
        else:
            wanted = [self.class_index] * n if isinstance(self.class_index, int) else list(self.class_index)
            bad = [c for c in wanted if not 0 <= c < classes]
            if bad:
                raise ModelError(f"class_index {bad[0]} is out of range; the network has {classes} classes (0 to {classes - 1})")
            index = torch.tensor(wanted, device=logits.device)
        return logits.gather(1, index[:, None])


def _check_class_index(class_index: int | Sequence[int] | None, n: int) -> int | list[int] | None:
    def is_int(v: object) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, bool)

    if class_index is None:
        return None
    if isinstance(class_index, (torch.Tensor, np.ndarray)) and class_index.ndim == 0:
        class_index = class_index.item()
    if is_int(class_index):
        return int(class_index)
    if isinstance(class_index, (Sequence, np.ndarray, torch.Tensor)) and not isinstance(class_index, str):
        values = [v.item() if isinstance(v, (torch.Tensor, np.generic)) else v for v in class_index]
        if len(values) == n and all(is_int(v) for v in values):
            return [int(v) for v in values]
    raise ModelError(f"class_index={class_index!r}; expected none (the predicted class), an integer, "
                     f"or {n} integers (one per image)")


def _scale_by_max(maps: torch.Tensor) -> torch.Tensor:
    """Each map divided by its maximum, in [0, 1]; all zeros where the map is (no positive evidence)."""
    peak = maps.flatten(1).amax(1).view(-1, *[1] * (maps.ndim - 1))
    return torch.where(peak > 0, maps / peak.clamp_min(torch.finfo(maps.dtype).tiny), torch.zeros_like(maps)).clamp_(0, 1)


def _graph_starts_here(_module: nn.Module, inputs: tuple) -> tuple:
    """Make the target layer's input the leaf of the autograd graph: the backward pass
    stops there instead of running through the whole network to the image."""
    return tuple(t.detach().requires_grad_(True) if isinstance(t, torch.Tensor) and t.is_floating_point() else t
                 for t in inputs)


def gradcam(model: nn.Module, batch: torch.Tensor, class_index: int | Sequence[int] | None = None) -> np.ndarray:
    """Grad-CAM heatmaps of a preprocessed batch ``(N, C, H, W)``: float32 ``(N, H, W)`` in [0, 1].

    ``class_index``: the class explained, one for all images or one per image;
    none explains each image's predicted class. Runs on the device of
    ``model``'s parameters (the batch is moved there). See the module docs for
    what is (not) changed on ``model`` and for threads.
    """
    from monai.visualize import GradCAM

    if not isinstance(batch, torch.Tensor) or batch.ndim != 4:
        shape = tuple(batch.shape) if hasattr(batch, "shape") else type(batch).__name__
        raise ModelError(f"Grad-CAM expects a preprocessed batch tensor (N, C, H, W), got {shape}")
    if not batch.is_floating_point():
        raise ModelError(f"Grad-CAM expects a float batch, got dtype {batch.dtype}")
    n, _, h, w = batch.shape
    index = _check_class_index(class_index, n)
    if n == 0:
        return np.empty((0, h, w), dtype=np.float32)
    twin = _twin(model)
    param = next(twin.net.parameters())
    layer = "net." + twin.layer
    with twin.lock, torch.inference_mode(False), torch.enable_grad(), \
            torch.autocast(device_type=param.device.type, enabled=False):
        x = batch.detach().to(param.device, param.dtype).clone()
        head = _ClassScore(twin.net, index)
        target = head.get_submodule(layer)
        saved = (dict(target._forward_hooks), dict(target._backward_hooks), target._is_full_backward_hook,
                 target.__dict__.get("inplace"))
        cut = target.register_forward_pre_hook(_graph_starts_here)
        try:
            cam = GradCAM(nn_module=head, target_layers=layer, postprocessing=_scale_by_max)
            maps = cam(x, class_idx=0)
        finally:  # MONAI keeps no handles: put the twin's target back as it was
            cut.remove()
            for hooks, before in ((target._forward_hooks, saved[0]), (target._backward_hooks, saved[1])):
                for hook_id in [k for k in hooks if k not in before]:
                    del hooks[hook_id]
            target._is_full_backward_hook = saved[2]
            if saved[3] is not None:
                target.__dict__["inplace"] = saved[3]
    return maps[:, 0].detach().float().cpu().numpy()


# ------------------------------------------------------------------ presentation


def _jet(values: np.ndarray) -> np.ndarray:
    """The jet colormap (blue -> cyan -> yellow -> red) of values in [0, 1]: RGB floats in [0, 1]."""
    v = np.clip(values, 0.0, 1.0)[..., None]
    centres = np.array([0.75, 0.5, 0.25], dtype=np.float32)  # where red, green and blue peak
    return np.clip(1.5 - np.abs(4.0 * v - 4.0 * centres), 0.0, 1.0).astype(np.float32)


def _check_heatmap(heatmap: np.ndarray) -> np.ndarray:
    if isinstance(heatmap, torch.Tensor):
        heatmap = heatmap.detach().cpu().numpy()
    heatmap = np.asarray(heatmap)
    if heatmap.ndim == 3 and heatmap.shape[0] == 1:
        heatmap = heatmap[0]
    if heatmap.ndim != 2 or 0 in heatmap.shape:
        raise ModelError(f"expected one heatmap (H, W), got shape {heatmap.shape}")
    if not np.issubdtype(heatmap.dtype, np.number) or not np.isfinite(heatmap).all():
        raise ModelError("heatmap values must be finite numbers")
    return heatmap.astype(np.float32, copy=False)


def _resize(heatmap: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if heatmap.shape == size:
        return heatmap
    t = torch.from_numpy(np.ascontiguousarray(heatmap))[None, None]
    return F.interpolate(t, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


def overlay_png(image: np.ndarray, heatmap: np.ndarray, alpha: float = 0.4) -> bytes:
    """A PNG (RGB, the image's size) of ``heatmap`` in jet colours blended over ``image``.

    ``image``: grey ``(H, W)`` or RGB ``(H, W, 3)`` in [0, 1], any size (the
    decoded original, not the network input); ``heatmap``: ``(h, w)`` in
    [0, 1], resized bilinearly to the image. Each pixel is
    ``(1 - alpha) * image + alpha * colour``.
    """
    from PIL import Image

    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0.0 <= alpha <= 1.0:
        raise ModelError(f"alpha={alpha!r}; expected a number in [0, 1]")
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if not (image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)) or 0 in image.shape:
        raise ModelError(f"expected an (H, W) grey or (H, W, 3) RGB image, got shape {image.shape}")
    if not np.issubdtype(image.dtype, np.floating) or not np.isfinite(image).all():
        raise ModelError(f"expected finite float pixel values in [0, 1], got dtype {image.dtype}")
    rgb = np.repeat(image[..., None], 3, axis=2) if image.ndim == 2 else image
    heat = _resize(_check_heatmap(heatmap), image.shape[:2])
    blended = (1.0 - alpha) * np.clip(rgb, 0.0, 1.0) + alpha * _jet(heat)
    buffer = io.BytesIO()
    Image.fromarray((np.clip(blended, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap_grid(heatmap: np.ndarray, size: int = 16) -> list[list[float]]:
    """``heatmap`` averaged down (adaptive average pooling) to ``size`` x ``size``, values rounded to 3 decimals."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ModelError(f"size={size!r}; expected a positive integer")
    heat = torch.from_numpy(np.ascontiguousarray(_check_heatmap(heatmap)))[None, None]
    grid = F.adaptive_avg_pool2d(heat, int(size))[0, 0].numpy()
    return [[round(float(v), 3) for v in row] for row in grid]
