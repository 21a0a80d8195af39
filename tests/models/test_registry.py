"""The model and estimator registries: every entry builds and runs; misuse fails clearly.

No test touches the network: ImageNet weights are either refused (download
patched to fail) or served from a fake torch hub cache in a temporary TORCH_HOME.
"""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
import torch.hub

from dxlab.errors import ModelError
from dxlab.models import registry
from dxlab.models.registry import (
    REQUIRED,
    Registry,
    build_estimator,
    build_model,
    estimator_spec,
    list_estimators,
    list_models,
    model_spec,
    register_model,
)

PRETRAINED = ["densenet121", "efficientnet_b0", "resnet18", "resnet50"]


def test_the_registries_list_what_the_issue_asks_for():
    assert list_models() == ["densenet121", "efficientnet_b0", "resnet18", "resnet50", "small_cnn"]
    assert list_estimators() == ["gradient_boosting", "logistic_regression", "random_forest"]


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_model_runs_forward(name, in_channels):
    torch.manual_seed(0)
    model = build_model(name, in_channels=in_channels, num_classes=3).eval()
    size = 28 if name == "small_cnn" else 64
    with torch.no_grad():
        out = model(torch.rand(1, in_channels, size, size))
    assert out.shape == (1, 3)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("name", list_models())
def test_every_model_spec_names_the_common_arguments(name):
    spec = model_spec(name)
    assert spec.arguments["in_channels"] == REQUIRED
    assert spec.arguments["num_classes"] == REQUIRED
    assert spec.arguments["pretrained"] is False
    assert spec.description
    assert spec.to_dict()["name"] == name
    assert (spec.weights is not None) == (name in PRETRAINED)


def test_builder_specific_arguments_are_listed_and_used():
    assert list(model_spec("small_cnn").arguments) == ["in_channels", "num_classes", "pretrained", "width", "dropout"]
    model = build_model("small_cnn", in_channels=1, num_classes=2, width=8)
    assert model[-1].in_features == 32  # 4 * width
    assert build_model("efficientnet_b0", in_channels=3, num_classes=2, dropout=0.5).classifier[0].p == 0.5


def test_the_small_resnet_stem_keeps_28_px_images_large_enough():
    import torch

    small = build_model("resnet18", in_channels=1, num_classes=2, stem="small").eval()
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1) and small.conv1.in_channels == 1
    seen = {}
    small.layer4.register_forward_hook(lambda m, i, o: seen.update(layer4=tuple(o.shape[2:])))
    with torch.no_grad():
        assert small(torch.zeros(2, 1, 28, 28)).shape == (2, 2)
    assert seen["layer4"] == (4, 4)  # the ImageNet stem leaves 1x1 of a 28-px image there
    with pytest.raises(ModelError, match="stem='tiny'; expected one of imagenet, small"):
        build_model("resnet50", in_channels=3, num_classes=2, stem="tiny")
    with pytest.raises(ModelError, match="need stem='imagenet'"):
        build_model("resnet18", in_channels=3, num_classes=2, stem="small", pretrained=True)


def test_unknown_model_lists_the_valid_names():
    with pytest.raises(ModelError) as err:
        build_model("resnet1000", in_channels=3, num_classes=2)
    message = str(err.value)
    assert "'resnet1000'" in message
    for name in list_models():
        assert name in message
    with pytest.raises(ModelError, match="densenet121"):
        model_spec("vit")


def test_unknown_or_missing_arguments_are_refused_with_the_valid_ones():
    with pytest.raises(ModelError, match=r"no argument 'depth'.*in_channels, num_classes, pretrained"):
        build_model("resnet18", in_channels=3, num_classes=2, depth=3)
    with pytest.raises(ModelError, match="needs argument 'num_classes'"):
        build_model("resnet18", in_channels=3)


@pytest.mark.parametrize("args, fragment", [
    ({"in_channels": 2, "num_classes": 2}, "in_channels=2; expected 1 or 3"),
    ({"in_channels": 3, "num_classes": 1}, "num_classes=1"),
    ({"in_channels": 3, "num_classes": "2"}, "num_classes='2'"),
    ({"in_channels": 3, "num_classes": 2, "pretrained": "yes"}, "pretrained='yes'"),
    ({"in_channels": 3, "num_classes": 2, "dropout": 1.5}, "dropout=1.5"),
])
def test_bad_argument_values_are_refused(args, fragment):
    with pytest.raises(ModelError, match=fragment):
        build_model("efficientnet_b0", **args)


def test_duplicates_are_refused():
    with pytest.raises(ModelError, match="'resnet18' is already registered"):
        register_model("resnet18", description="another")(lambda *, in_channels, num_classes, pretrained=False: None)
    assert model_spec("resnet18").description == "torchvision ResNet-18"

    reg: Registry[int] = Registry("widget")
    reg.register("a", description="one")(lambda *, x=1: x)
    with pytest.raises(ModelError, match="widget 'a' is already registered"):
        reg.register("a", description="two")(lambda *, x=2: x)
    assert reg.build("a", x=5) == 5
    assert "a" in reg and len(reg) == 1 and list(reg) == ["a"]
    with pytest.raises(ModelError, match="unknown widget 'b'; known widgets: a"):
        reg.build("b")


def test_builders_must_take_keyword_arguments():
    with pytest.raises(ModelError, match="keyword-only"):
        Registry("widget").register("a", description="")(lambda x: x)


def test_small_cnn_has_no_pretrained_weights():
    with pytest.raises(ModelError, match="no pretrained weights"):
        build_model("small_cnn", in_channels=1, num_classes=2, pretrained=True)


@pytest.fixture
def empty_torch_home(tmp_path, monkeypatch):
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    assert torch.hub.get_dir() == str(home / "hub"), "torch.hub.set_dir() was called elsewhere"
    return home


@pytest.mark.parametrize("name", PRETRAINED)
def test_pretrained_offline_fails_clearly_and_never_falls_back(name, empty_torch_home, monkeypatch):
    attempts = []

    def offline(url, *args, **kwargs):
        attempts.append(url)
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ModelError) as err:
        build_model(name, in_channels=1, num_classes=2, pretrained=True)
    message = str(err.value)
    assert len(attempts) == 1
    filename = attempts[0].rsplit("/", 1)[-1]
    assert f"model {name!r}" in message
    assert "network is unreachable" in message
    assert "TORCH_HOME" in message and str(empty_torch_home / "hub" / "checkpoints") in message
    assert filename in message and attempts[0] in message
    assert "pretrained=false" in message


def _torchvision_state(name: str) -> dict[str, torch.Tensor]:
    """A stand-in for the ImageNet file: torchvision's own network with random weights."""
    import torchvision.models as tvm

    torch.manual_seed(1)
    state = getattr(tvm, name)(weights=None).state_dict()
    if name == "densenet121":
        # the published file uses the old key names ('denselayer1.norm.1.weight') and no BN counters
        import re

        state = {re.sub(r"(denselayer\d+\.(?:norm|relu|conv))([12])\.", r"\1.\2.", k): v
                 for k, v in state.items() if not k.endswith("num_batches_tracked")}
    return state


@pytest.mark.parametrize("name, first_conv, head", [
    ("resnet18", "conv1.weight", "fc.weight"),
    ("resnet50", "conv1.weight", "fc.weight"),
    ("efficientnet_b0", "features.0.0.weight", "classifier.1.weight"),
    ("densenet121", "features.conv0.weight", "class_layers.out.weight"),
])
def test_pretrained_weights_load_from_the_torch_hub_cache(name, first_conv, head, empty_torch_home, monkeypatch):
    # one input channel: the adapted path (three channels load unchanged; see the next test)
    in_channels = 1
    def no_download(url, *args, **kwargs):
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    weights = registry._weights(model_spec(name).weights.split(".")[0])
    fake = _torchvision_state(name)
    cache = empty_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(fake, cache / weights.url.rsplit("/", 1)[-1])

    model = build_model(name, in_channels=in_channels, num_classes=2, pretrained=True)
    state = model.state_dict()
    source_conv = "features.conv0.weight" if name == "densenet121" else first_conv
    torch.testing.assert_close(state[first_conv], fake[source_conv].sum(dim=1, keepdim=True))
    assert state[head].shape[0] == 2  # a new head for the task
    # a deep layer came through unchanged
    deep = {"resnet18": ("layer4.1.conv2.weight",) * 2, "resnet50": ("layer4.2.conv3.weight",) * 2,
            "efficientnet_b0": ("features.8.0.weight",) * 2,
            "densenet121": ("features.denseblock4.denselayer16.layers.conv2.weight",
                            "features.denseblock4.denselayer16.conv.2.weight")}[name]
    torch.testing.assert_close(state[deep[0]], fake[deep[1]])
    with torch.no_grad():
        assert torch.isfinite(model.eval()(torch.rand(1, in_channels, 64, 64))).all()


def test_a_grey_image_gives_the_same_features_through_the_summed_conv(empty_torch_home):
    cache = empty_torch_home / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    url = registry._weights("ResNet18_Weights").url
    torch.save(_torchvision_state("resnet18"), cache / url.rsplit("/", 1)[-1])
    grey = build_model("resnet18", in_channels=1, num_classes=2, pretrained=True).eval()
    rgb = build_model("resnet18", in_channels=3, num_classes=2, pretrained=True).eval()
    torch.testing.assert_close(rgb.conv1.weight, _torchvision_state("resnet18")["conv1.weight"])
    rgb.fc.load_state_dict(grey.fc.state_dict())
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(grey(x), rgb(x.expand(-1, 3, -1, -1)), atol=1e-4, rtol=1e-4)


# ------------------------------------------------------------------------ estimators


@pytest.fixture(scope="module")
def wisconsin():
    from sklearn.datasets import load_breast_cancer  # bundled with scikit-learn: no download
    from sklearn.model_selection import train_test_split

    x, y = load_breast_cancer(return_X_y=True)
    return train_test_split(x, y, test_size=0.3, random_state=0, stratify=y)


@pytest.mark.parametrize("name", list_estimators())
def test_every_estimator_fits_and_predicts_probabilities(name, wisconsin):
    x_train, x_test, y_train, y_test = wisconsin
    args = {"n_estimators": 50} if name != "logistic_regression" else {}
    estimator = build_estimator(name, **args).fit(x_train, y_train)
    proba = estimator.predict_proba(x_test)
    assert proba.shape == (len(x_test), 2)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)
    assert (estimator.predict(x_test) == y_test).mean() >= 0.9


def test_logistic_regression_scales_its_features():
    steps = dict(build_estimator("logistic_regression", C=0.5).steps)
    assert type(steps["scale"]).__name__ == "StandardScaler"
    assert steps["model"].C == 0.5


def test_estimators_refuse_unknown_names_and_arguments():
    with pytest.raises(ModelError, match="unknown estimator 'svm'; known estimators: gradient_boosting, logistic_regression, random_forest"):
        build_estimator("svm")
    with pytest.raises(ModelError, match="valid arguments: n_estimators"):
        build_estimator("random_forest", trees=10)
    assert "learning_rate" in estimator_spec("gradient_boosting").arguments
