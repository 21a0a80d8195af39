"""A network prepared for inference only: BatchNorm folded into its convolutions, channels-last memory.

:func:`inference_network` returns a copy of a trained network for serving's
forward passes; the network itself is left as it is (Grad-CAM and training
need the unfused modules). In eval mode a BatchNorm after a convolution is an
affine map per channel, so it can be folded into the convolution's weights and
bias. A BatchNorm is taken to follow a convolution when it is registered right
after it in the same parent module with as many channels (torchvision's and
MONAI's blocks, ``nn.Sequential`` stems); the folded BatchNorm becomes an
``nn.Identity``, so every submodule keeps its name and hooks on them (the
out-of-distribution features hook on the last ``nn.Linear``) work on the copy
as on the original. The copy is checked against the original on a probe batch
before it is used: where the guess was wrong (a network that applies that
BatchNorm to something else) it differs, and the unfused copy is used instead
(logged). No tracing is involved: ``torch.fx`` tracing patches
``nn.Module.__call__`` for the whole process, which would break forward passes
running in other threads while a new model version loads.

Channels-last memory lets oneDNN (CPU) and cuDNN pick their faster convolution
kernels. The copy gives the same answers as the original up to float rounding.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import nn

log = logging.getLogger(__name__)

#: largest absolute difference in logits the fused copy may show on the probe batch
FUSION_TOLERANCE = 1e-3


def inference_network(model: nn.Module, input_shape: tuple[int, ...], *, device: torch.device | str = "cpu",
                      fuse: bool = True, channels_last: bool = True) -> nn.Module:
    """An eval-mode copy of ``model`` for forward passes on ``device``, inputs ``(N, *input_shape)``."""
    device = torch.device(device)
    net = copy.deepcopy(model).to(device).eval()
    if fuse and not _fold_batchnorm(net, torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))):
        # a wrong fold: start again from the network as it is
        net = copy.deepcopy(model).to(device).eval()
    if channels_last and len(input_shape) == 3:
        net = net.to(memory_format=torch.channels_last)
    return net


def _fold_batchnorm(net: nn.Module, probe: torch.Tensor) -> bool:
    """Fold, in place, each BatchNorm registered right after a convolution; False when the result
    does not match the network on ``probe`` (``net`` is then left half-folded: discard it)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    pairs = [(parent, conv_name, bn_name) for parent in net.modules()
             for conv_name, bn_name in zip(parent._modules, list(parent._modules)[1:])
             if _foldable(parent._modules[conv_name], parent._modules[bn_name])]
    if not pairs:
        return True
    probe = probe.to(next(net.parameters()).device)
    with torch.inference_mode():
        expected = net(probe).float()
    for parent, conv_name, bn_name in pairs:
        parent._modules[conv_name] = fuse_conv_bn_eval(parent._modules[conv_name], parent._modules[bn_name])
        parent._modules[bn_name] = nn.Identity()
    with torch.inference_mode():
        got = net(probe).float()
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=FUSION_TOLERANCE, rtol=1e-3):
        log.info("%s: BatchNorm not folded (the folded copy does not match the network on a probe batch: a "
                 "BatchNorm registered after a convolution is applied to something else)", type(net).__name__)
        return False
    return True


def _foldable(conv: nn.Module | None, bn: nn.Module | None) -> bool:
    return (type(conv) is nn.Conv2d and type(bn) is nn.BatchNorm2d and bn.track_running_stats
            and conv.out_channels == bn.num_features)
