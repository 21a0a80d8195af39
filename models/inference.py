"""A network prepared for inference only: BatchNorm folded into its convolutions, channels-last memory.

:func:`inference_network` returns a copy of a trained network for serving's
forward passes; the network itself is left as it is (Grad-CAM and training
need the unfused modules). In eval mode a BatchNorm after a convolution is an
affine map per channel, so it can be folded into the convolution's weights and
bias (``torch.fx``'s conv-BN fusion, applied where the convolution's output
feeds only the BatchNorm); the result differs from the original only by
float rounding (checked on a probe batch before it is used). Channels-last
memory lets oneDNN (CPU) and cuDNN pick their faster convolution kernels.

Both steps are an optimisation: a network that ``torch.fx`` cannot trace, or
whose fused copy does not match on the probe, is used unfused (and logged).
The submodules keep their names, so hooks on them (the out-of-distribution
features hook on the last ``nn.Linear``) work on the copy as on the original.
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
    probe = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0)).to(device)
    if fuse:
        net = _fused(net, probe)
    if channels_last and len(input_shape) == 3:
        net = net.to(memory_format=torch.channels_last)
    return net


def _fused(net: nn.Module, probe: torch.Tensor) -> nn.Module:
    from torch.fx.experimental.optimization import fuse

    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in net.modules()):
        return net
    try:
        fused = fuse(net, inplace=False)
    except Exception as exc:  # noqa: BLE001 - any tracing failure: serve the network as it is
        log.info("%s: BatchNorm not folded (torch.fx cannot trace it: %s)", type(net).__name__, exc)
        return net
    with torch.inference_mode():
        expected, got = net(probe).float(), fused(probe).float()
    if expected.shape != got.shape or not torch.allclose(expected, got, atol=FUSION_TOLERANCE, rtol=1e-3):
        log.warning("%s: the BatchNorm-folded copy does not match the network (max difference %s); not used",
                    type(net).__name__, (expected - got).abs().max().item() if expected.shape == got.shape else "shape")
        return net
    return fused.eval()
