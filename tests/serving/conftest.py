"""A temporary MLflow registry with tiny registered models, and encoded test images."""

from __future__ import annotations

import io
import os
import threading

import numpy as np
import pytest
import torch

from dxlab.datasets.synthetic import draw_cxr
from dxlab.models import PackageInfo, PreprocessSpec, build_model, log_packaged_model

LABELS = ("normal", "tb")
SIZE = 28
SPEC = PreprocessSpec(SIZE, 1, (0.5,), (0.25,))
ARGS = {"in_channels": 1, "num_classes": 2, "pretrained": False, "width": 4}
THRESHOLD = 0.45


def tiny_network(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = build_model("small_cnn", **ARGS)
    with torch.no_grad():  # spread the logits so that images get different probabilities
        model[-1].weight.mul_(10)
    model.train()(torch.rand(8, 1, SIZE, SIZE))  # BatchNorm statistics that are not the defaults
    return model.eval()


def package_info(**changes) -> PackageInfo:
    values = dict(architecture="small_cnn", architecture_args=ARGS, preprocessing=SPEC, labels=LABELS,
                  thresholds={"tb": THRESHOLD}, operating_rule="sensitivity>=0.90", temperature=1.3,
                  data_version="d" * 64)
    return PackageInfo(**{**values, **changes})


class Registry:
    """A SQLite MLflow store in a temporary folder; ``register`` logs a new version and moves an alias."""

    def __init__(self, folder) -> None:
        import mlflow
        from mlflow import MlflowClient

        self.uri = f"sqlite:///{folder / 'mlflow.db'}"
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        self.experiment = mlflow.create_experiment("serving-tests", artifact_location=(folder / "artifacts").as_uri())
        self.client = MlflowClient(tracking_uri=self.uri, registry_uri=self.uri)

    def register(self, name: str, seed: int, alias: str | None = "champion", ood_images: list | None = None) -> str:
        """Log and register a tiny network; with ``ood_images``, OOD guards fitted on them go in the package."""
        import mlflow

        network = tiny_network(seed)
        extra = {}
        if ood_images is not None:
            from dxlab.models.ood import fit_ood
            from dxlab.models.preprocessing import preprocess_batch

            extra["ood"] = fit_ood(network, ood_images, preprocess_batch(ood_images, SPEC))
        mlflow.set_tracking_uri(self.uri)
        mlflow.set_registry_uri(self.uri)
        with mlflow.start_run(experiment_id=self.experiment):
            info = log_packaged_model(network, package_info(extra=extra), registered_model_name=name)
        version = str(info.registered_model_version)
        if alias:
            self.client.set_registered_model_alias(name, alias, version)
        return version


@pytest.fixture(scope="package")
def registry(tmp_path_factory):
    """One store for the serving tests (creating an MLflow schema takes seconds), with
    ``dxlab-tiny`` version 1 as champion; MLflow's global URIs are reset after them."""
    folder = tmp_path_factory.mktemp("serving-mlflow")
    saved = {k: os.environ.get(k) for k in ("DXLAB_MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    reg = Registry(folder)
    os.environ["DXLAB_MLFLOW_TRACKING_URI"] = reg.uri
    reg.register("dxlab-tiny", seed=0)
    yield reg
    import mlflow

    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)
    for key, value in saved.items():  # MLflow exports the registry URI to the environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def cxr_images(n: int, size: int = 40, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [np.clip(draw_cxr(rng, size, tb=bool(i % 2)), 0, 1).astype(np.float32) for i in range(n)]


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def dicom_bytes(image: np.ndarray, *, pixels: bool = True, transfer_syntax: str = "1.2.840.10008.1.2.1") -> bytes:
    from dxlab.datasets.dicom import make_dicom

    ds = make_dicom((np.clip(image, 0, 1) * 4095).round().astype(np.uint16), bits_stored=12,
                    transfer_syntax=transfer_syntax,
                    PatientID="PAT-0001", StudyInstanceUID="1.2.826.0.1.3680043.8.498.1")
    if not pixels:
        del ds.PixelData
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def blocking_forward(monkeypatch, engine, model_name: str):
    """Make the model's batched forward pass wait for the returned event (a slow model, deterministically)."""
    gate, entered = threading.Event(), threading.Event()
    model = engine.model(model_name).net
    original = model.forward

    def slow(x):
        entered.set()
        gate.wait(10)
        return original(x)

    monkeypatch.setattr(model, "forward", slow)
    return gate, entered
