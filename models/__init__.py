"""Models: the registries of network builders and scikit-learn estimators, the one
preprocessing function, and the packaged model (weights, preprocessing, labels,
thresholds, calibration, data version, run id and card) as an MLflow pyfunc.

- :mod:`dxlab.models.registry`: ``build_model("densenet121", in_channels=1, num_classes=2,
  pretrained=True)``, ``list_models()``, ``model_spec(name)``; ``build_estimator``,
  ``list_estimators()``, ``estimator_spec(name)`` for tabular data.
- :mod:`dxlab.models.preprocessing`: :class:`PreprocessSpec` and ``preprocess`` /
  ``preprocess_batch``, used by training, evaluation and serving alike.
- :mod:`dxlab.models.packaged`: :class:`PackageInfo`, ``save_packaged_model``,
  ``log_packaged_model``, ``load_packaged`` (a :class:`PackagedModel`). MLflow
  is imported only when a model is saved, logged or loaded.
"""

from dxlab.models.packaged import (
    PackagedModel,
    PackageInfo,
    load_packaged,
    log_packaged_model,
    save_packaged_model,
)
from dxlab.models.preprocessing import PreprocessSpec, preprocess, preprocess_batch
from dxlab.models.registry import (
    BuilderSpec,
    Registry,
    build_estimator,
    build_model,
    estimator_spec,
    list_estimators,
    list_models,
    model_spec,
    register_estimator,
    register_model,
)

__all__ = [
    "BuilderSpec",
    "PackageInfo",
    "PackagedModel",
    "PreprocessSpec",
    "Registry",
    "build_estimator",
    "build_model",
    "estimator_spec",
    "list_estimators",
    "list_models",
    "load_packaged",
    "log_packaged_model",
    "model_spec",
    "preprocess",
    "preprocess_batch",
    "register_estimator",
    "register_model",
    "save_packaged_model",
]
