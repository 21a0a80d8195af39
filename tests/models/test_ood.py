"""Out-of-distribution abstention: a chest X-ray model answers new X-rays and refuses skin, noise and blanks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dxlab.datasets import read_image
from dxlab.datasets.synthetic import synthesize
from dxlab.errors import ModelError
from dxlab.models import PackageInfo, build_model, list_models
from dxlab.models.ood import InputStats, OODDetector, features, fit_ood, load_ood, ood_check
from dxlab.models.preprocessing import PreprocessSpec, preprocess_batch

SPEC = PreprocessSpec(48, 1, (0.45,), (0.22,))
WIDTH = 8


@pytest.fixture(scope="module")
def cxr(tmp_path_factory):
    """A small_cnn trained on synthetic chest X-rays (48 px), its OOD description, and held-out images."""
    root = tmp_path_factory.mktemp("ood")
    manifest, _ = synthesize("tb_cxr", root / "cxr", n=200, seed=0, size=48)
    raw = [read_image(p) for p in manifest.paths()]
    x, y = preprocess_batch(raw, SPEC), torch.tensor(manifest.label_indices())
    train = (manifest.table["split"] == "train").to_numpy()
    torch.manual_seed(0)
    model = build_model("small_cnn", in_channels=1, num_classes=2, width=WIDTH)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    x_train, y_train = x[torch.tensor(train)], y[torch.tensor(train)]
    for _ in range(10):
        model.train()
        for idx in torch.randperm(len(x_train)).split(32):
            loss = F.cross_entropy(model(x_train[idx]), y_train[idx])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    for m in model.modules():  # BatchNorm statistics of the whole training set, not lagging running means
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(x_train)
    model.eval()
    ood = fit_ood(model, [r for r, t in zip(raw, train) if t], x_train)
    held_raw = [r for r, t in zip(raw, train) if not t]
    return {"model": model, "ood": ood, "train_x": x_train, "held_raw": held_raw, "held_x": x[torch.tensor(~train)]}


@pytest.fixture(scope="module")
def skin(tmp_path_factory):
    manifest, _ = synthesize("dermatology", tmp_path_factory.mktemp("derm") / "derm", n=40, seed=1, size=64)
    raw = [read_image(p) for p in manifest.paths()]
    assert raw[0].ndim == 3
    return raw, preprocess_batch(raw, SPEC)  # what a grey chest X-ray model makes of them


def _flagged(reasons: list) -> float:
    return float(np.mean([r is not None for r in reasons]))


@pytest.mark.parametrize("name", list_models())
def test_features_are_the_input_of_the_last_linear_layer(name):
    torch.manual_seed(0)
    model = build_model(name, in_channels=1, num_classes=2).train()
    buffers = [b.clone() for b in model.buffers()]
    hooks = sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules())
    feats, logits = features(model, torch.randn(3, 1, 32, 32), with_logits=True)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    assert feats.shape == (3, head.in_features) and feats.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(head(feats), logits)
    assert model.training  # switched back after an eval-mode pass ...
    assert all(torch.equal(a, b) for a, b in zip(buffers, model.buffers()))  # ... that moved no BatchNorm statistics
    assert sum(len(m._forward_pre_hooks) + len(m._forward_hooks) for m in model.modules()) == hooks


def test_new_chest_xrays_are_assessable(cxr):
    reasons = ood_check(cxr["model"], cxr["ood"], cxr["held_raw"], cxr["held_x"])
    assert len(reasons) == len(cxr["held_x"]) == 60
    assert 1 - _flagged(reasons) >= 0.9
    detector, _ = load_ood(cxr["ood"])
    assert detector.is_ood(features(cxr["model"], cxr["train_x"])).mean() <= 0.02


def test_skin_images_are_not_assessable_by_either_guard(cxr, skin):
    raw, batch = skin
    reasons = ood_check(cxr["model"], cxr["ood"], raw, batch)
    assert _flagged(reasons) >= 0.9
    assert reasons[0] == "not assessable: colour image; the model was trained on grey images"
    # each guard alone: the network's features, and the statistics of the grey tensor without the colour
    detector, stats = load_ood(cxr["ood"])
    assert detector.is_ood(features(cxr["model"], batch)).mean() >= 0.9
    assert _flagged(stats.check(None, batch)) >= 0.9


def test_noise_and_blank_images_are_not_assessable(cxr):
    rng = np.random.default_rng(0)
    noise = [rng.uniform(0, 1, (48, 48)).astype(np.float32), rng.uniform(0, 1, (300, 200)).astype(np.float32)]
    blank = [np.zeros((48, 48), np.float32), np.ones((64, 64), np.float32)]
    for images in (noise, blank):
        batch = preprocess_batch(images, SPEC)
        reasons = ood_check(cxr["model"], cxr["ood"], images, batch)
        assert all(r is not None and r.startswith("not assessable: ") for r in reasons), reasons
        detector, _ = load_ood(cxr["ood"])
        assert detector.is_ood(features(cxr["model"], batch)).all()  # the features alone catch them too
    assert ood_check(cxr["model"], cxr["ood"], blank, preprocess_batch(blank, SPEC))[0] == \
        "not assessable: blank image (a single grey level)"
    # without the raw images (a preprocessed tensor was sent), the feature score speaks
    batch = preprocess_batch(noise, SPEC)
    detector, _ = load_ood(cxr["ood"])
    text = ood_check(cxr["model"], {**cxr["ood"], "input_stats": {"ranges": {}, "training": {}}}, None, batch)[0]
    assert text.startswith("not assessable: input unlike the training data (score ")
    assert f"> threshold {detector.threshold:.1f})" in text


def test_the_description_round_trips_through_json_and_the_package(cxr, skin):
    text = json.dumps(cxr["ood"])
    again = json.loads(text)
    assert again == cxr["ood"]
    detector, stats = load_ood(cxr["ood"])
    detector2, stats2 = load_ood(again)
    feats = torch.cat([features(cxr["model"], cxr["held_x"]), features(cxr["model"], skin[1])])
    assert np.array_equal(detector.score(feats), detector2.score(feats))
    assert detector2.threshold == detector.threshold and detector2.n_fit == len(cxr["train_x"])
    assert stats2.check(cxr["held_raw"], cxr["held_x"]) == stats.check(cxr["held_raw"], cxr["held_x"])
    info = PackageInfo("small_cnn", {"in_channels": 1, "num_classes": 2, "width": WIDTH}, SPEC, ("normal", "tb"),
                       extra={"ood": cxr["ood"]})
    assert PackageInfo.from_dict(json.loads(json.dumps(info.to_dict()))).extra["ood"] == cxr["ood"]


def test_a_densenet_sized_detector_is_compact():
    feats = np.random.default_rng(0).gamma(2.0, 1.0, (400, 1024)).astype(np.float32)
    detector = OODDetector.fit(feats)
    assert detector.components.shape == (64, 1024)
    data = detector.to_dict()
    assert len(json.dumps(data)) < 300_000
    assert np.array_equal(OODDetector.from_dict(data).score(feats[:20]), detector.score(feats[:20]))


def test_the_threshold_flags_about_the_quantile_of_new_in_distribution_data():
    rng = np.random.default_rng(0)
    scales = np.linspace(3.0, 0.1, 48)  # anisotropic, as network features are
    detector = OODDetector.fit(rng.normal(0, 1, (1500, 48)) * scales, quantile=0.99, seed=1)
    assert detector.quantile == 0.99 and detector.n_fit == 1500
    rate = detector.is_ood(rng.normal(0, 1, (4000, 48)) * scales).mean()
    assert 0.001 <= rate <= 0.03
    assert detector.is_ood(rng.normal(0, 1, (50, 48)) * scales + 2.0).all()  # a shifted distribution


def test_misuse_fails_clearly(cxr):
    detector, stats = load_ood(cxr["ood"])
    with pytest.raises(ModelError, match=r"expected features of shape \(N, 32\)"):
        detector.score(np.zeros((2, 5)))
    with pytest.raises(ModelError, match="at least 10"):
        OODDetector.fit(np.zeros((5, 8)))
    with pytest.raises(ModelError, match="quantile"):
        OODDetector.fit(np.random.default_rng(0).normal(size=(50, 8)), quantile=1.0)
    with pytest.raises(ModelError, match="format"):
        load_ood({"format": "something-else"})
    with pytest.raises(ModelError, match="format_version"):
        load_ood({**cxr["ood"], "format_version": 99})
    with pytest.raises(ModelError, match="one raw image per row"):
        stats.check(cxr["held_raw"][:2], cxr["held_x"][:3])
    with pytest.raises(ModelError, match="nn.Linear"):
        features(torch.nn.Conv2d(1, 2, 3), torch.zeros(1, 1, 8, 8))
    assert InputStats.from_dict(stats.to_dict()) == stats
