"""The packaged model: weights plus everything needed to use them, as an MLflow pyfunc.

A packaged model is an MLflow pyfunc model folder whose artifacts are

- ``weights.pt``: the network's state dict (``torch.save(model.state_dict())``;
  never a pickled module), rebuilt from the architecture name and arguments
  through :func:`dxlab.models.registry.build_model`;
- ``package.json``: what the weights need (:class:`PackageInfo`)::

      {"format": "dxlab-packaged-model", "format_version": 1,
       "architecture": {"name": "densenet121", "args": {"in_channels": 1, "num_classes": 2, ...}},
       "preprocessing": {"image_size": [224, 224], "channels": 1, "mean": [0.449], "std": [0.226],
                         "resize": "stretch", "pad_value": 0.0},
       "labels": ["normal", "tb"],
       "thresholds": {"tb": 0.31}, "operating_rule": "sensitivity>=0.90",
       "temperature": 1.27,
       "data_version": "<manifest digest>", "run_id": "<MLflow run id>",
       "extra": {}}

  ``thresholds`` maps a label to the calibrated probability at or above which
  it is called (a binary task lists only its positive label); ``extra`` holds
  further JSON values (an out-of-distribution threshold, say);
- ``model_card.md``: the model card.

Probabilities are ``softmax(logits / temperature)`` (temperature scaling).
The architecture arguments are stored as given, ``pretrained`` included, but a
packaged model is always rebuilt with ``pretrained=False``: its own weights
replace ImageNet's, so loading never downloads anything.

The pyfunc is saved as code (MLflow's models-from-code: a two-line
``dxlab_packaged_model.py`` that asks dxlab for the model), so loading unpickles
nothing; it needs dxlab installed where it runs.

The pyfunc's signature: input one unnamed float32 tensor ``(-1, C, H, W)``,
already preprocessed with the packaged spec (see :mod:`dxlab.models.preprocessing`);
output a DataFrame of probabilities, one float column per label, in label order.
``predict`` accepts, as ``mlflow.pyfunc`` and ``mlflow models serve`` deliver them:

- a numpy array ``(N, C, H, W)`` (a JSON ``{"inputs": ...}`` or
  ``{"instances": ...}`` body becomes one);
- a DataFrame with one column whose cells are images, flat lists of
  ``C*H*W`` values or ``(C, H, W)`` arrays (``dataframe_split``/``dataframe_records``);
- called directly (without MLflow's schema check), also a DataFrame of ``C*H*W``
  scalar columns, an ``(N, C*H*W)`` or single ``(C, H, W)`` array, a torch tensor,
  a nested list, or a one-entry dict of any of these.

Bad input raises an ``MlflowException`` (``INVALID_PARAMETER_VALUE``), which
``mlflow models serve`` answers with a 400.

Load options: ``mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})``
(default: CPU). Serving code uses :func:`load_packaged` instead, which gives the
torch module and the metadata without pyfunc's overhead.
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from dxlab.errors import ModelError
from dxlab.models.preprocessing import PreprocessSpec, preprocess_batch
from dxlab.models.registry import build_model, model_spec

FORMAT = "dxlab-packaged-model"
FORMAT_VERSION = 1
#: artifact name -> file name inside the pyfunc's artifacts
ARTIFACT_FILES = {"package": "package.json", "weights": "weights.pt", "model_card": "model_card.md"}
_PACKAGE_KEYS = ("format", "format_version", "architecture", "preprocessing", "labels", "thresholds", "operating_rule",
                 "temperature", "data_version", "run_id", "extra")


@dataclass(frozen=True)
class PackageInfo:
    """The contents of ``package.json``: how to rebuild, feed and read the network."""

    architecture: str
    architecture_args: Mapping[str, Any]
    preprocessing: PreprocessSpec
    labels: tuple[str, ...]
    #: label -> calibrated probability at or above which the label is called
    thresholds: Mapping[str, float] = field(default_factory=dict)
    #: how the thresholds were chosen, e.g. "youden" or "sensitivity>=0.90"
    operating_rule: str = ""
    temperature: float = 1.0
    #: the data set version (manifest digest) the model was trained on
    data_version: str | None = None
    run_id: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        model_spec(self.architecture)  # an unknown architecture lists the valid ones
        if not isinstance(self.preprocessing, PreprocessSpec):
            raise ModelError(f"preprocessing must be a PreprocessSpec, got {type(self.preprocessing).__name__}")
        if not isinstance(self.architecture_args, Mapping):
            raise ModelError(f"architecture_args must be a mapping, got {type(self.architecture_args).__name__}")
        args = dict(self.architecture_args)
        labels = (self.labels,) if isinstance(self.labels, str) else tuple(self.labels)
        if len(labels) < 2 or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels):
            raise ModelError(f"labels={list(labels)}; expected two or more distinct non-empty names, in output order")
        if args.get("num_classes", len(labels)) != len(labels):
            raise ModelError(f"architecture_args num_classes={args['num_classes']} but {len(labels)} labels {list(labels)}")
        if args.get("in_channels", self.preprocessing.channels) != self.preprocessing.channels:
            raise ModelError(f"architecture_args in_channels={args['in_channels']} but the preprocessing gives "
                             f"{self.preprocessing.channels} channel(s)")
        thresholds = {}
        for label, value in dict(self.thresholds).items():
            if label not in labels:
                raise ModelError(f"threshold for unknown label {label!r}; labels: {', '.join(labels)}")
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
                raise ModelError(f"threshold for {label!r} is {value!r}; expected a probability in [0, 1]")
            thresholds[label] = float(value)
        temperature = self.temperature
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not math.isfinite(temperature) or temperature <= 0:
            raise ModelError(f"temperature={temperature!r}; expected a finite number > 0")
        for name in ("data_version", "run_id"):
            if getattr(self, name) is not None and not isinstance(getattr(self, name), str):
                raise ModelError(f"{name}={getattr(self, name)!r}; expected a string or none")
        for name, value in (("architecture_args", args), ("extra", dict(self.extra))):
            try:
                json.dumps(value)
            except (TypeError, ValueError) as exc:
                raise ModelError(f"{name} must hold JSON values only: {exc}") from None
        object.__setattr__(self, "architecture_args", args)
        object.__setattr__(self, "labels", labels)
        object.__setattr__(self, "thresholds", thresholds)
        object.__setattr__(self, "temperature", float(temperature))
        object.__setattr__(self, "extra", dict(self.extra))

    def to_dict(self) -> dict[str, Any]:
        """The JSON document stored as ``package.json``."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "architecture": {"name": self.architecture, "args": dict(self.architecture_args)},
            "preprocessing": self.preprocessing.to_dict(),
            "labels": list(self.labels),
            "thresholds": dict(self.thresholds),
            "operating_rule": self.operating_rule,
            "temperature": self.temperature,
            "data_version": self.data_version,
            "run_id": self.run_id,
            "extra": dict(self.extra),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageInfo:
        """Read :meth:`to_dict`'s output; another format or a newer version is refused."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ModelError(f"not a dxlab packaged model description (expected \"format\": \"{FORMAT}\")")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ModelError(f"packaged model format_version={version!r}; this dxlab reads version {FORMAT_VERSION} "
                             "(upgrade dxlab to read newer packages)")
        unknown = sorted(set(data) - set(_PACKAGE_KEYS))
        if unknown:
            raise ModelError(f"package.json has unknown key(s) {', '.join(unknown)}; valid keys: {', '.join(_PACKAGE_KEYS)}")
        try:
            arch = data["architecture"]
            return cls(architecture=arch["name"], architecture_args=arch.get("args", {}),
                       preprocessing=PreprocessSpec.from_dict(data["preprocessing"]), labels=tuple(data["labels"]),
                       thresholds=data.get("thresholds") or {}, operating_rule=data.get("operating_rule") or "",
                       temperature=data.get("temperature", 1.0), data_version=data.get("data_version"),
                       run_id=data.get("run_id"), extra=data.get("extra") or {})
        except (KeyError, TypeError, AttributeError) as exc:
            raise ModelError(f"package.json lacks or misstates a field: {exc}") from None

    def build(self) -> torch.nn.Module:
        """The network with fresh weights (never downloads: pretrained is forced off)."""
        return build_model(self.architecture, **{**self.architecture_args, "pretrained": False})


class PackagedModel:
    """A loaded packaged model: the network in eval mode and what it needs.

    ``predict_proba`` takes a batch already preprocessed with ``spec`` (see
    :meth:`preprocess`); ``predict_images`` takes decoded images of any size.
    """

    def __init__(self, info: PackageInfo, model: torch.nn.Module, model_card: str = "", device: str | torch.device = "cpu") -> None:
        self.info = info
        self.model_card = model_card
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    # the metadata, by the names serving uses
    spec = property(lambda self: self.info.preprocessing)
    labels = property(lambda self: self.info.labels)
    thresholds = property(lambda self: self.info.thresholds)
    temperature = property(lambda self: self.info.temperature)
    run_id = property(lambda self: self.info.run_id)
    data_version = property(lambda self: self.info.data_version)

    @classmethod
    def from_files(cls, package: str | Path, weights: str | Path, model_card: str | Path | None = None,
                   device: str | torch.device = "cpu") -> PackagedModel:
        """Load from the three artifact files."""
        try:
            info = PackageInfo.from_dict(json.loads(Path(package).read_text(encoding="utf-8")))
        except (OSError, ValueError) as exc:
            raise ModelError(f"{package}: cannot read the packaged model description: {exc}") from exc
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except (OSError, RuntimeError, pickle.UnpicklingError) as exc:
            raise ModelError(f"{weights}: cannot read the weights: {exc}") from exc
        model = info.build()
        _load_state(model, state, info)
        card = Path(model_card).read_text(encoding="utf-8") if model_card and Path(model_card).is_file() else ""
        return cls(info, model, card, device)

    def to(self, device: str | torch.device) -> PackagedModel:
        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def preprocess(self, images: Sequence[np.ndarray]) -> torch.Tensor:
        """Decoded images (float in [0, 1], any size) -> the batch the network takes."""
        return preprocess_batch(images, self.spec)

    def proba_from_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Calibrated probabilities: ``softmax(logits / temperature)`` in float32."""
        return torch.softmax(logits.float() / self.temperature, dim=-1)

    def predict_proba(self, batch: np.ndarray | torch.Tensor) -> np.ndarray:
        """Preprocessed batch ``(N, C, H, W)`` -> probabilities ``(N, len(labels))``, float32."""
        batch = _check_batch(batch, self.spec)
        if isinstance(batch, torch.Tensor):
            x = batch.float()
        else:  # torch wants a writable array; a DataFrame's values may be read-only
            x = torch.from_numpy(np.require(batch, np.float32, ["C", "W"]))
        if len(x) == 0:
            return np.empty((0, len(self.labels)), dtype=np.float32)
        with torch.inference_mode():
            logits = self.model(x.to(self.device))
        return self.proba_from_logits(logits).cpu().numpy()

    def predict_images(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Decoded images -> probabilities: :meth:`preprocess` then :meth:`predict_proba`."""
        return self.predict_proba(self.preprocess(images))

    def predict_frame(self, model_input: Any) -> pd.DataFrame:
        """The pyfunc's ``predict``: any accepted input form (see the module docs) ->
        a DataFrame of probabilities, one column per label."""
        return pd.DataFrame(self.predict_proba(_as_batch(model_input, self.spec)), columns=list(self.labels))

    def decide(self, proba: np.ndarray) -> list[str]:
        """The label called for each row of probabilities, at the operating thresholds.

        Among the labels whose threshold is met, the most probable; when none is
        met (or there are no thresholds), the most probable label without a
        threshold (all labels, when all have one). A binary task with a threshold
        on its positive label gets exactly "positive when p >= threshold".
        """
        proba = np.asarray(proba, dtype=np.float32)
        if proba.ndim != 2 or proba.shape[1] != len(self.labels):
            raise ModelError(f"probabilities of shape {proba.shape}; expected (N, {len(self.labels)})")
        idx = {label: i for i, label in enumerate(self.labels)}
        thresholded = [idx[label] for label in self.thresholds]
        rest = [i for i in range(len(self.labels)) if i not in thresholded] or list(range(len(self.labels)))
        calls = []
        for row in proba:
            met = [i for i in thresholded if row[i] >= self.thresholds[self.labels[i]]]
            pool = met or rest
            calls.append(self.labels[max(pool, key=lambda i: row[i])])
        return calls

    def describe(self) -> dict[str, Any]:
        """JSON-ready metadata (package.json's contents plus the input shape)."""
        return {**self.info.to_dict(), "input_shape": [-1, *self.spec.input_shape]}


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def _load_state(model: torch.nn.Module, state: Mapping[str, torch.Tensor], info: PackageInfo) -> None:
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as exc:
        raise ModelError(f"the weights do not fit {info.architecture}({info.architecture_args}): {exc}") from None


def _check_batch(batch: Any, spec: PreprocessSpec) -> np.ndarray | torch.Tensor:
    shape = tuple(batch.shape) if hasattr(batch, "shape") else None
    if shape is None or len(shape) != 4 or shape[1:] != spec.input_shape:
        raise ModelError(f"input of shape {shape}; expected a preprocessed batch (N, {', '.join(map(str, spec.input_shape))})")
    return batch


def _as_batch(data: Any, spec: PreprocessSpec) -> np.ndarray:
    """The pyfunc's accepted input forms -> float32 array (N, C, H, W)."""
    flat = int(np.prod(spec.input_shape))
    if isinstance(data, dict):
        if len(data) != 1:
            raise ModelError(f"expected one input tensor, got {len(data)}: {', '.join(map(str, data))}")
        data = next(iter(data.values()))
    if isinstance(data, pd.DataFrame):
        if data.shape[1] == 1:
            try:
                data = np.stack([np.asarray(v, dtype=np.float32).reshape(spec.input_shape) for v in data.iloc[:, 0]])
            except (ValueError, TypeError) as exc:
                raise ModelError(f"each cell must hold one image of {flat} values {spec.input_shape}: {exc}") from None
        elif data.shape[1] == flat:
            data = data.to_numpy(dtype=np.float32)
        else:
            raise ModelError(f"a DataFrame of {data.shape[1]} columns; expected 1 column of images "
                             f"or {flat} columns (C*H*W values per row)")
    if isinstance(data, torch.Tensor):
        data = data.detach().cpu().numpy()
    try:
        data = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError) as exc:
        raise ModelError(f"input is not numeric: {exc}") from None
    if data.ndim == 2 and data.shape[1] == flat:
        data = data.reshape(-1, *spec.input_shape)
    elif data.shape == spec.input_shape:
        data = data[None]
    return _check_batch(data, spec)


@cache
def _pyfunc_class() -> type:
    # made on first use: importing MLflow takes seconds and writes its telemetry
    # settings into the home folder, which importing dxlab must not do
    import mlflow.pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    class PackagedPyfunc(mlflow.pyfunc.PythonModel):
        """The pyfunc wrapper; it holds nothing until ``load_context`` reads the artifacts."""

        def load_context(self, context) -> None:
            device = (getattr(context, "model_config", None) or {}).get("device", "cpu")
            self.packaged = PackagedModel.from_files(context.artifacts["package"], context.artifacts["weights"],
                                                     context.artifacts.get("model_card"), device=device)

        def predict(self, context, model_input: np.ndarray, params: dict[str, Any] | None = None) -> pd.DataFrame:
            try:
                return self.packaged.predict_frame(model_input)
            except ModelError as exc:
                raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from exc

    return PackagedPyfunc


def pyfunc_model():
    """A new instance of the ``mlflow.pyfunc.PythonModel`` that serves packaged models.

    It is saved as code (MLflow's models-from-code, :data:`_ENTRY_CODE`), not
    pickled: loading a packaged model unpickles nothing but the weights
    (``torch.load(weights_only=True)``). ``load_context`` reads the artifacts;
    ``predict`` is :meth:`PackagedModel.predict_frame`, with bad input raised as
    an ``MlflowException`` that ``mlflow models serve`` answers with a 400.
    """
    return _pyfunc_class()()


#: the file MLflow stores as the model's code: all logic stays in dxlab, so it never goes stale
_ENTRY_CODE = '''"""Entry point of a dxlab packaged model (MLflow models-from-code); needs dxlab installed."""
import mlflow

from dxlab.models.packaged import pyfunc_model

mlflow.models.set_model(pyfunc_model())
'''


def signature(info: PackageInfo):
    """The pyfunc signature: float32 tensor (-1, C, H, W) in, one float column per label out."""
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, Schema, TensorSpec

    return ModelSignature(inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *info.preprocessing.input_shape))]),
                          outputs=Schema([ColSpec("float", label) for label in info.labels]))


def _pip_requirements() -> list[str]:
    import mlflow

    import dxlab

    torch_version = torch.__version__.split("+")[0]
    return [f"dxlab=={dxlab.__version__}", f"torch=={torch_version}", f"mlflow=={mlflow.__version__}"]


def _default_card(info: PackageInfo) -> str:
    rule = f" ({info.operating_rule})" if info.operating_rule else ""
    return (f"# Model card: {info.architecture}\n\n"
            "No model card was supplied when this model was packaged.\n\n"
            f"- Labels: {', '.join(info.labels)}\n"
            f"- Operating thresholds: {json.dumps(dict(info.thresholds)) if info.thresholds else 'none'}{rule}\n"
            f"- Calibration temperature: {info.temperature:g}\n"
            f"- Data version: {info.data_version or 'unknown'}\n"
            f"- Training run: {info.run_id or 'unknown'}\n")


@contextmanager
def _pyfunc_arguments(model: torch.nn.Module, info: PackageInfo, model_card: str | None) -> Iterator[dict[str, Any]]:
    """Write the artifacts to a temporary folder, check they rebuild, and give save/log_model's arguments."""
    model = _unwrap(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    rebuilt = info.build()
    _load_state(rebuilt, state, info)
    with torch.inference_mode():
        out = rebuilt.eval()(torch.zeros((1, *info.preprocessing.input_shape)))
    if tuple(out.shape) != (1, len(info.labels)):
        raise ModelError(f"{info.architecture} gives outputs of shape {tuple(out.shape)} for one image; "
                         f"expected (1, {len(info.labels)}) for labels {list(info.labels)}")
    with tempfile.TemporaryDirectory(prefix="dxlab-package-") as tmp:
        files = {name: Path(tmp) / filename for name, filename in ARTIFACT_FILES.items()}
        files["package"].write_text(json.dumps(info.to_dict(), indent=2) + "\n", encoding="utf-8")
        torch.save(state, files["weights"])
        files["model_card"].write_text(model_card or _default_card(info), encoding="utf-8")
        entry = Path(tmp) / "dxlab_packaged_model.py"
        entry.write_text(_ENTRY_CODE, encoding="utf-8")
        yield {
            "python_model": str(entry),
            "artifacts": {name: str(path) for name, path in files.items()},
            "signature": signature(info),
            "pip_requirements": _pip_requirements(),
        }


@contextmanager
def _no_example_warning() -> Iterator[None]:
    # the tensor signature documents the input; an example would add a
    # multi-megabyte JSON file per model and a forward pass at save time
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*input example was not provided", category=UserWarning)
        yield


def save_packaged_model(path: str | Path, model: torch.nn.Module, info: PackageInfo, *, model_card: str | None = None) -> Path:
    """Save ``model`` (its state dict) with ``info`` as an MLflow pyfunc folder at ``path``.

    ``path`` must not exist yet. ``model_card`` is markdown text (a stub is written when none).
    """
    import mlflow.pyfunc

    path = Path(path)
    if path.exists():
        raise ModelError(f"{path} exists; choose a new folder for the packaged model")
    with _pyfunc_arguments(model, info, model_card) as arguments, _no_example_warning():
        mlflow.pyfunc.save_model(path=str(path), **arguments)
    return path


def log_packaged_model(model: torch.nn.Module, info: PackageInfo, *, model_card: str | None = None, name: str = "model",
                       registered_model_name: str | None = None):
    """Log the packaged model to the active MLflow run; returns MLflow's ``ModelInfo`` (``.model_uri``, ``.registered_model_version``).

    ``info.run_id`` defaults to the run it is logged in.
    """
    import mlflow.pyfunc

    run = mlflow.active_run()
    if info.run_id is None and run is not None:
        info = replace(info, run_id=run.info.run_id)
    with _pyfunc_arguments(model, info, model_card) as arguments, _no_example_warning():
        return mlflow.pyfunc.log_model(name=name, registered_model_name=registered_model_name, **arguments)


def load_packaged(path_or_uri: str | Path, device: str | torch.device = "cpu") -> PackagedModel:
    """Load a packaged model from a local folder or an MLflow URI (``runs:/...``,
    ``models:/NAME@ALIAS``; resolved against the current tracking URI)."""
    local = Path(str(path_or_uri)).expanduser()
    if not (local / "MLmodel").is_file():
        if "://" not in str(path_or_uri) and ":/" not in str(path_or_uri):
            raise ModelError(f"{path_or_uri}: no packaged model here (expected a folder with an MLmodel file, "
                             "or an MLflow URI such as models:/NAME@ALIAS)")
        import mlflow.artifacts
        from mlflow.exceptions import MlflowException

        try:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=str(path_or_uri)))
        except MlflowException as exc:
            raise ModelError(f"{path_or_uri}: cannot fetch the model: {exc.message}") from exc
    from mlflow.models import Model

    flavor = Model.load(str(local / "MLmodel")).flavors.get("python_function", {})
    artifacts = flavor.get("artifacts") or {}
    if "package" not in artifacts or "weights" not in artifacts:
        raise ModelError(f"{path_or_uri}: an MLflow model, but not a dxlab packaged model (no package.json/weights artifacts)")
    paths = {name: local / entry["path"] for name, entry in artifacts.items()}
    return PackagedModel.from_files(paths["package"], paths["weights"], paths.get("model_card"), device=device)
