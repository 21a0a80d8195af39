"""The inference copy of a network: BatchNorm folded, channels-last, same answers, original untouched."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

from dxlab.models import build_model, list_models
from dxlab.models.inference import inference_network
from dxlab.models.ood import features


def _trained_like(net: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine values, as training would."""
    g = torch.Generator().manual_seed(1)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return net.eval()


@pytest.mark.parametrize("name", list_models())
def test_folded_copy_gives_the_same_logits_and_features(name):
    torch.manual_seed(0)
    net = _trained_like(build_model(name, in_channels=1, num_classes=3))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fast = inference_network(net, (1, 32, 32))
    x = torch.randn(2, 1, 32, 32)
    with torch.inference_mode():
        expected = net(x)
        got = fast(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    # the out-of-distribution hook finds the same penultimate features on the copy
    torch.testing.assert_close(features(fast, x), features(net, x), atol=1e-3, rtol=1e-3)
    # the original keeps its modules and weights (Grad-CAM and training use it)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_batchnorm_is_folded_away():
    net = _trained_like(build_model("resnet18", in_channels=1, num_classes=2))
    fast = inference_network(net, (1, 64, 64))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    assert any(isinstance(m, nn.BatchNorm2d) for m in net.modules())
    assert not fast.training


class _Misleading(nn.Module):
    """A BatchNorm registered right after a convolution but applied to the sum with a skip connection."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn, self.fc = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x) + x).mean(dim=(2, 3)))


def test_a_wrong_guess_is_caught_and_the_network_served_unfused(caplog):
    net = _trained_like(_Misleading())
    with caplog.at_level(logging.INFO, logger="dxlab.models.inference"):
        fast = inference_network(net, (4, 16, 16))
    assert "not folded" in caplog.text
    assert any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
    x = torch.randn(3, 4, 16, 16)
    with torch.inference_mode():
        torch.testing.assert_close(fast(x), net(x))


def test_the_copy_runs_while_another_model_is_being_prepared():
    """Preparing a copy patches nothing global: forward passes in other threads keep working."""
    import threading

    net = _trained_like(build_model("resnet18", in_channels=1, num_classes=2))
    fast = inference_network(net, (1, 32, 32))
    errors, stop = [], threading.Event()

    def serve():
        x = torch.randn(2, 1, 32, 32).contiguous(memory_format=torch.channels_last)
        while not stop.is_set():
            try:
                with torch.inference_mode():
                    fast(x)
            except Exception as exc:  # noqa: BLE001 - collected for the assertion
                errors.append(exc)

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        for _ in range(3):
            inference_network(net, (1, 32, 32))
    finally:
        stop.set()
        thread.join(10)
    assert not errors, errors[:1]
