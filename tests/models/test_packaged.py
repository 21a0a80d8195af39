"""The packaged model: saved as an MLflow pyfunc, loaded by MLflow and by dxlab alike,
predicting exactly ``softmax(logits / T)`` of the network it was saved from."""

from __future__ import annotations

import json

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from dxlab.datasets.synthetic import draw_cxr
from dxlab.errors import ModelError
from dxlab.models import build_model
from dxlab.models.packaged import (
    PackageInfo,
    _as_batch,
    load_packaged,
    log_packaged_model,
    pyfunc_model,
    save_packaged_model,
)
from dxlab.models.preprocessing import PreprocessSpec, preprocess_batch

LABELS = ("normal", "tb", "other")
ARGS = {"in_channels": 1, "num_classes": 3, "pretrained": False, "width": 8}
SPEC = PreprocessSpec(28, 1, (0.5,), (0.25,))
T = 1.7


def _info(**changes) -> PackageInfo:
    values = dict(architecture="small_cnn", architecture_args=ARGS, preprocessing=SPEC, labels=LABELS,
                  thresholds={"tb": 0.3}, operating_rule="sensitivity>=0.90", temperature=T,
                  data_version="d" * 64, run_id="run-123", extra={"ood_threshold": 12.5})
    return PackageInfo(**{**values, **changes})


@pytest.fixture(scope="module")
def network():
    torch.manual_seed(0)
    model = build_model("small_cnn", **ARGS)
    with torch.no_grad():  # spread the logits so that the temperature matters
        model[-1].weight.mul_(20)
    # BatchNorm statistics that are not the defaults
    model.train()(torch.rand(16, 1, 28, 28))
    return model.eval()


@pytest.fixture(scope="module")
def saved(network, tmp_path_factory):
    path = tmp_path_factory.mktemp("packaged") / "model"
    save_packaged_model(path, network, _info(), model_card="# TB model\n\nFor tests only.\n")
    return path


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(0)
    images = [np.clip(draw_cxr(rng, 40, tb=bool(i % 2)), 0, 1).astype(np.float32) for i in range(5)]
    return preprocess_batch(images, SPEC).numpy()


def _expected(network, batch) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(network(torch.from_numpy(batch)) / T, dim=1).numpy()


def test_pyfunc_predicts_calibrated_probabilities(saved, network, batch):
    pyfunc = mlflow.pyfunc.load_model(str(saved))
    out = pyfunc.predict(batch)
    assert isinstance(out, pd.DataFrame) and list(out.columns) == list(LABELS)
    expected = _expected(network, batch)
    np.testing.assert_allclose(out.to_numpy(), expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(expected, _expected_without_temperature(network, batch), atol=1e-3)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=1e-5)


def _expected_without_temperature(network, batch):
    with torch.no_grad():
        return torch.softmax(network(torch.from_numpy(batch)), dim=1).numpy()


def test_pyfunc_takes_the_device_from_model_config(saved, network, batch):
    pyfunc = mlflow.pyfunc.load_model(str(saved), model_config={"device": "cpu"})
    np.testing.assert_allclose(pyfunc.predict(batch).to_numpy(), _expected(network, batch), rtol=1e-5, atol=1e-6)


def test_pyfunc_declares_its_signature(saved):
    meta = mlflow.pyfunc.load_model(str(saved)).metadata
    tensor = meta.get_input_schema().inputs[0]
    assert tensor.type == np.dtype(np.float32) and tensor.shape == (-1, 1, 28, 28)
    assert meta.get_output_schema().input_names() == list(LABELS)


def test_the_folder_holds_a_state_dict_json_and_a_card_and_no_pickles(saved):
    artifacts = saved / "artifacts"
    assert sorted(p.name for p in artifacts.iterdir()) == ["model_card.md", "package.json", "weights.pt"]
    assert not list(saved.rglob("*.pkl"))
    state = torch.load(artifacts / "weights.pt", weights_only=True)
    assert isinstance(state, dict) and all(isinstance(v, torch.Tensor) for v in state.values())
    package = json.loads((artifacts / "package.json").read_text())
    assert package == {
        "format": "dxlab-packaged-model",
        "format_version": 1,
        "architecture": {"name": "small_cnn", "args": ARGS},
        "preprocessing": {"image_size": [28, 28], "channels": 1, "mean": [0.5], "std": [0.25],
                          "resize": "stretch", "pad_value": 0.0},
        "labels": list(LABELS),
        "thresholds": {"tb": 0.3},
        "operating_rule": "sensitivity>=0.90",
        "temperature": T,
        "data_version": "d" * 64,
        "run_id": "run-123",
        "extra": {"ood_threshold": 12.5},
    }
    assert (artifacts / "model_card.md").read_text().startswith("# TB model")


def test_load_packaged_gives_the_network_and_its_metadata(saved, network, batch):
    packaged = load_packaged(saved)
    assert not packaged.model.training
    assert packaged.spec == SPEC
    assert packaged.labels == LABELS
    assert packaged.thresholds == {"tb": 0.3}
    assert packaged.temperature == T
    assert packaged.run_id == "run-123" and packaged.data_version == "d" * 64
    assert packaged.info.extra == {"ood_threshold": 12.5}
    assert packaged.model_card.startswith("# TB model")
    proba = packaged.predict_proba(batch)
    assert proba.dtype == np.float32 and proba.shape == (5, 3)
    np.testing.assert_allclose(proba, _expected(network, batch), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(packaged.predict_proba(torch.from_numpy(batch)), proba)
    assert packaged.predict_proba(batch[:0]).shape == (0, 3)
    described = packaged.describe()
    assert described["input_shape"] == [-1, 1, 28, 28] and described["labels"] == list(LABELS)


def test_predict_images_preprocesses_with_the_packaged_spec(saved, batch):
    packaged = load_packaged(saved)
    rng = np.random.default_rng(0)
    images = [np.clip(draw_cxr(rng, 40, tb=bool(i % 2)), 0, 1).astype(np.float32) for i in range(5)]
    np.testing.assert_allclose(packaged.predict_images(images), packaged.predict_proba(batch))


def test_a_wrong_batch_shape_is_refused(saved, batch):
    packaged = load_packaged(saved)
    with pytest.raises(ModelError, match=r"expected a preprocessed batch \(N, 1, 28, 28\)"):
        packaged.predict_proba(batch[:, :, :20])


def test_the_pyfunc_accepts_what_mlflow_serve_sends(saved, network, batch):
    from mlflow.pyfunc.scoring_server import invocations

    pyfunc = mlflow.pyfunc.load_model(str(saved))
    schema = pyfunc.metadata.get_input_schema()
    expected = _expected(network, batch)
    bodies = [
        {"inputs": batch.tolist()},
        {"instances": batch.tolist()},
        {"dataframe_split": {"columns": ["image"], "data": [[row.ravel().tolist()] for row in batch]}},
        {"dataframe_records": [{"image": row.ravel().tolist()} for row in batch]},
    ]
    for body in bodies:
        response = invocations(json.dumps(body), "application/json", pyfunc, schema)
        assert response.status == 200, response.response
        predictions = pd.DataFrame(json.loads(response.response)["predictions"])
        np.testing.assert_allclose(predictions[list(LABELS)].to_numpy(), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException) as err:
        invocations(json.dumps({"inputs": batch[:, :, :20].tolist()}), "application/json", pyfunc, schema)
    assert err.value.get_http_status_code() == 400


def test_predict_called_directly_accepts_the_documented_forms(saved, network, batch):
    pyfunc = pyfunc_model()
    pyfunc.packaged = load_packaged(saved)
    expected = _expected(network, batch)
    flat = batch.reshape(len(batch), -1)
    forms = [
        batch,
        torch.from_numpy(batch),
        batch.tolist(),
        flat,
        pd.DataFrame(flat),
        pd.DataFrame({"image": list(batch)}),
        {"images": batch},
    ]
    for form in forms:
        np.testing.assert_allclose(pyfunc.predict(None, form).to_numpy(), expected, rtol=1e-5, atol=1e-6)
    single = pyfunc.predict(None, batch[0])
    np.testing.assert_allclose(single.to_numpy(), expected[:1], rtol=1e-5, atol=1e-6)
    with pytest.raises(MlflowException, match="DataFrame of 3 columns") as err:
        pyfunc.predict(None, pd.DataFrame(np.zeros((2, 3))))
    assert err.value.get_http_status_code() == 400
    with pytest.raises(ModelError, match="one input tensor"):
        _as_batch({"a": batch, "b": batch}, SPEC)


def test_decide_applies_the_operating_threshold(saved):
    packaged = load_packaged(saved)
    proba = np.array([[0.60, 0.25, 0.15], [0.55, 0.35, 0.10], [0.20, 0.10, 0.70], [0.1, 0.8, 0.1]], np.float32)
    assert packaged.decide(proba) == ["normal", "tb", "other", "tb"]
    with pytest.raises(ModelError, match="expected"):
        packaged.decide(proba[:, :2])


@pytest.mark.parametrize("changes, fragment", [
    ({"architecture": "vit"}, "unknown model 'vit'; known models: densenet121"),
    ({"labels": ("normal", "tb")}, "num_classes=3 but 2 labels"),
    ({"labels": ("a", "a", "b")}, "distinct"),
    ({"thresholds": {"cancer": 0.5}}, "threshold for unknown label 'cancer'"),
    ({"thresholds": {"tb": 1.5}}, "expected a probability"),
    ({"temperature": 0.0}, "temperature=0.0"),
    ({"preprocessing": PreprocessSpec(28, 3)}, "in_channels=1 but the preprocessing gives 3"),
    ({"extra": {"when": object()}}, "extra must hold JSON values"),
])
def test_bad_package_info_is_refused(changes, fragment):
    with pytest.raises(ModelError, match=fragment):
        _info(**changes)


def test_package_info_round_trips_and_refuses_other_versions():
    info = _info()
    assert PackageInfo.from_dict(json.loads(json.dumps(info.to_dict()))) == info
    with pytest.raises(ModelError, match="format_version=2; this dxlab reads version 1"):
        PackageInfo.from_dict({**info.to_dict(), "format_version": 2})
    with pytest.raises(ModelError, match="not a dxlab packaged model"):
        PackageInfo.from_dict({"labels": ["a", "b"]})
    with pytest.raises(ModelError, match="lacks or misstates"):
        PackageInfo.from_dict({**info.to_dict(), "architecture": "small_cnn"})
    with pytest.raises(ModelError, match="unknown key.*weights_url"):
        PackageInfo.from_dict({**info.to_dict(), "weights_url": "http://x"})


def test_weights_that_do_not_fit_the_arguments_are_refused_at_save(tmp_path):
    wider = build_model("small_cnn", **{**ARGS, "width": 16})
    with pytest.raises(ModelError, match="the weights do not fit small_cnn"):
        save_packaged_model(tmp_path / "m", wider, _info())
    assert not (tmp_path / "m").exists()


def test_save_refuses_an_existing_folder_and_unwraps_wrappers(tmp_path, network, batch):
    with pytest.raises(ModelError, match="exists"):
        save_packaged_model(tmp_path, network, _info())

    class Wrapper(torch.nn.Module):  # as DistributedDataParallel holds the network
        def __init__(self, module):
            super().__init__()
            self.module = module

    path = save_packaged_model(tmp_path / "m", Wrapper(network), _info(), model_card=None)
    packaged = load_packaged(path)
    np.testing.assert_allclose(packaged.predict_proba(batch), _expected(network, batch), rtol=1e-5, atol=1e-6)
    assert "No model card was supplied" in packaged.model_card and "sensitivity>=0.90" in packaged.model_card


def test_load_packaged_refuses_what_is_not_a_packaged_model(tmp_path):
    with pytest.raises(ModelError, match="no packaged model here"):
        load_packaged(tmp_path / "nothing")


def test_log_and_register_then_load_by_uri(tmp_path, network, batch):
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    try:
        # artifacts under tmp_path (a SQLite store puts them in ./mlruns otherwise)
        mlflow.set_experiment(experiment_id=mlflow.create_experiment(
            "packaged-test", artifact_location=(tmp_path / "artifacts").as_uri()))
        with mlflow.start_run() as run:
            info = log_packaged_model(network, _info(run_id=None), registered_model_name="tb-test")
        assert info.registered_model_version == 1
        mlflow.MlflowClient().set_registered_model_alias("tb-test", "champion", "1")
        for uri in (info.model_uri, "models:/tb-test@champion"):
            packaged = load_packaged(uri)
            assert packaged.run_id == run.info.run_id
            np.testing.assert_allclose(packaged.predict_proba(batch), _expected(network, batch), rtol=1e-5, atol=1e-6)
        with pytest.raises(ModelError, match="cannot fetch the model"):
            load_packaged("models:/tb-test@nobody")
    finally:
        mlflow.set_tracking_uri(None)
    assert (tmp_path / "artifacts").is_dir()
