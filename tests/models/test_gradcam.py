"""Grad-CAM: every registry network, the network left as it was, and heatmaps that point at the evidence."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dxlab.datasets import read_image
from dxlab.datasets.synthetic import synthesize
from dxlab.errors import ModelError
from dxlab.models import build_model, list_models
from dxlab.models.gradcam import gradcam, heatmap_grid, overlay_png, target_layer
from dxlab.models.preprocessing import PreprocessSpec, preprocess_batch

EXPECTED_LAYER = {"densenet121": "class_layers.relu", "efficientnet_b0": "features", "resnet18": "layer4",
                  "resnet50": "layer4", "small_cnn": "16"}


def _hooks(model: torch.nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) + len(m._backward_pre_hooks)
               for m in model.modules())


def _state(model: torch.nn.Module) -> tuple:
    return ([m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
            [p.grad for p in model.parameters()], [b.clone() for b in model.buffers()],
            [m.inplace for m in model.modules() if hasattr(m, "inplace")])


def _same_state(a: tuple, b: tuple) -> bool:
    return (a[0] == b[0] and a[1] == b[1] and all(g is None for g in b[2]) and a[4] == b[4]
            and all(torch.equal(x, y) for x, y in zip(a[3], b[3])))


@pytest.fixture(scope="module")
def networks() -> dict[str, torch.nn.Module]:
    torch.manual_seed(0)
    return {name: build_model(name, in_channels=3, num_classes=3) for name in list_models()}


def test_every_registry_network_has_its_expected_target_layer(networks):
    assert sorted(EXPECTED_LAYER) == list_models()
    for name, layer in EXPECTED_LAYER.items():
        assert target_layer(networks[name]) == layer
        assert layer in dict(networks[name].named_modules())
    assert target_layer(build_model("small_cnn", in_channels=1, num_classes=2, width=4)) == "16"


@pytest.mark.parametrize("name", list_models())
def test_gradcam_shapes_range_and_the_network_left_alone(networks, name):
    model = networks[name]
    model.train()  # a network in train mode stays so, and its BatchNorm statistics do not move
    hooks, before = _hooks(model), _state(model)
    batch = torch.randn(2, 3, 40, 48)
    with torch.inference_mode():  # as the serving engine calls it
        maps = gradcam(model, batch)
    assert maps.shape == (2, 40, 48) and maps.dtype == np.float32
    assert np.isfinite(maps).all() and maps.min() >= 0.0 and maps.max() <= 1.0
    assert np.isclose(maps.reshape(2, -1).max(1), 1.0).all()  # each map scaled by its own peak
    assert _hooks(model) == hooks
    assert _same_state(before, _state(model))
    assert model.training


def test_each_image_gets_its_own_class_and_classes_can_be_asked_for():
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=3, width=8).eval()
    batch = torch.randn(3, 1, 32, 32)
    predicted = model(batch).argmax(1).tolist()
    together = gradcam(model, batch)
    alone = np.concatenate([gradcam(model, batch[i:i + 1], predicted[i]) for i in range(3)])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(gradcam(model, batch, predicted), together, atol=1e-5)
    assert not np.allclose(gradcam(model, batch, 0), gradcam(model, batch, 1))
    with pytest.raises(ModelError, match="out of range"):
        gradcam(model, batch, 3)
    with pytest.raises(ModelError, match="one per image"):
        gradcam(model, batch, [0, 1])
    with pytest.raises(ModelError, match=r"\(N, C, H, W\)"):
        gradcam(model, batch[0])
    assert gradcam(model, batch[:0]).shape == (0, 32, 32)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gradcam_on_cuda_matches_the_cpu():
    torch.manual_seed(0)
    model = build_model("resnet18", in_channels=1, num_classes=2).eval()
    batch = torch.randn(2, 1, 64, 64)
    on_cpu = gradcam(model, batch)
    model.cuda()
    on_gpu = gradcam(model, batch.cuda())  # the twin follows the network to the GPU
    assert _hooks(model) == 0
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)


def _train(x: torch.Tensor, y: torch.Tensor, epochs: int = 10) -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=2, width=8)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        model.train()
        for idx in torch.randperm(len(x)).split(32):
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    _settle_batchnorm(model, x)
    return model.eval()


def _settle_batchnorm(model: torch.nn.Module, x: torch.Tensor) -> None:
    """BatchNorm statistics of the whole training set: a few dozen steps leave the running means lagging."""
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    with torch.no_grad():
        model.train()(x)


def test_heatmaps_of_tb_point_at_the_upper_lobes(tmp_path):
    # synthetic TB is drawn as opacities in the upper zones (rows 25 % to 42 % of the height)
    manifest, _ = synthesize("tb_cxr", tmp_path / "cxr", n=200, seed=0, size=48)
    x = preprocess_batch([read_image(p) for p in manifest.paths()], PreprocessSpec(48, 1, (0.45,), (0.22,)))
    y = torch.tensor(manifest.label_indices())
    train = torch.tensor((manifest.table["split"] == "train").to_numpy())
    model = _train(x[train], y[train])
    held_x, held_y = x[~train], y[~train]
    with torch.no_grad():
        accuracy = (model(held_x).argmax(1) == held_y).float().mean().item()
    assert accuracy >= 0.9  # the heatmaps explain a network that works
    tb = manifest.classes.index("tb")
    maps = gradcam(model, held_x[held_y == tb], tb)
    upper, lower = maps[:, :24].sum((1, 2)), maps[:, 24:].sum((1, 2))
    # an untrained network spreads it evenly (about 0.53 of the mass above the middle); trained, 0.72 to 0.78
    assert (upper / (upper + lower)).mean() > 0.65
    assert (upper > lower).mean() >= 0.9


# ------------------------------------------------------------------ presentation


@pytest.mark.parametrize("shape", [(30, 50), (30, 50, 3)])
def test_overlay_is_a_png_of_the_image_size(shape):
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, shape).astype(np.float32)
    heat = rng.uniform(0, 1, (7, 9)).astype(np.float32)
    png = overlay_png(image, heat)
    assert png.startswith(b"\x89PNG")
    decoded = Image.open(io.BytesIO(png))
    assert decoded.format == "PNG" and decoded.mode == "RGB" and decoded.size == (50, 30)
    rgb = np.repeat(image[..., None], 3, 2) if image.ndim == 2 else image
    plain = np.asarray(Image.open(io.BytesIO(overlay_png(image, heat, alpha=0.0)))) / 255.0
    np.testing.assert_allclose(plain, rgb, atol=1 / 255)


def test_overlay_colours_run_from_blue_to_red():
    heat = np.array([[0.0, 1.0]], dtype=np.float32)
    colours = np.asarray(Image.open(io.BytesIO(overlay_png(np.zeros((1, 2), np.float32), heat, alpha=1.0))))
    cold, hot = colours[0, 0], colours[0, 1]
    assert cold[2] > 100 and cold[0] == 0  # jet: dark blue at 0
    assert hot[0] > 100 and hot[2] == 0  # dark red at 1
    with pytest.raises(ModelError, match="alpha"):
        overlay_png(np.zeros((4, 4), np.float32), np.zeros((4, 4)), alpha=1.5)
    with pytest.raises(ModelError, match="image"):
        overlay_png(np.zeros((4, 4, 2), np.float32), np.zeros((4, 4)))
    with pytest.raises(ModelError, match="heatmap"):
        overlay_png(np.zeros((4, 4), np.float32), np.zeros((2, 4, 4)))


def test_heatmap_grid_averages_and_rounds():
    heat = np.zeros((32, 32), np.float32)
    heat[:16, :16] = 1.0
    heat[16:, 16:] = 1 / 3
    assert heatmap_grid(heat, 2) == [[1.0, 0.0], [0.0, 0.333]]
    grid = heatmap_grid(np.random.default_rng(0).uniform(0, 1, (224, 200)))
    assert len(grid) == 16 and all(len(row) == 16 for row in grid)
    assert all(isinstance(v, float) and v == round(v, 3) for row in grid for v in row)
    with pytest.raises(ModelError, match="size"):
        heatmap_grid(heat, 0)
