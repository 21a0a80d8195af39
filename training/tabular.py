"""Tabular runs (``cancer_tabular``): a scikit-learn pipeline on the manifest's feature columns.

The features are the manifest's numeric metadata columns. The fitted pipeline
is logged with ``mlflow.sklearn`` and registered like an image model; the
operating point, evaluation, card and gate are the same as for images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dxlab.datasets import Manifest
from dxlab.errors import ConfigError
from dxlab.models.registry import build_estimator
from dxlab.training import tracking
from dxlab.training.config import RunConfig


def feature_columns(manifest: Manifest) -> list[str]:
    table = manifest.table
    cols = [c for c in manifest.metadata_columns if pd.api.types.is_numeric_dtype(table[c])]
    if not cols:
        raise ConfigError(f"{manifest.dataset} has no numeric feature columns for a tabular model")
    return cols


def train_tabular(cfg: RunConfig, manifest: Manifest):
    from dxlab.training.run import _log_inputs, conclude

    cols = feature_columns(manifest)
    labels = np.asarray(manifest.label_indices())
    split = manifest.table["split"].to_numpy()

    def part(name):
        mask = split == name
        return manifest.table.loc[mask, cols].astype(float), labels[mask]

    (x_tr, y_tr), (x_val, y_val), (x_te, y_te) = part("train"), part("val"), part("test")
    estimator = build_estimator(cfg.model.name, **cfg.model.args).fit(x_tr, y_tr)
    mlflow = tracking.configure_mlflow()
    mlflow.set_experiment(cfg.task)
    with mlflow.start_run(run_name=cfg.name) as run:
        _log_inputs(mlflow, cfg, manifest)

        def log_model(point, card: str):
            import mlflow.sklearn
            from mlflow.models import infer_signature

            mlflow.log_dict({"features": cols, "labels": list(manifest.classes),
                             "thresholds": {manifest.classes[1]: point.threshold} if point else {},
                             "operating_rule": cfg.eval.operating_point, "data_version": manifest.digest},
                            "model_meta.json")
            return mlflow.sklearn.log_model(
                estimator, name="model", registered_model_name=cfg.registry.model_name,
                signature=infer_signature(x_tr.iloc[:5], estimator.predict_proba(x_tr.iloc[:5])),
                pip_requirements=["scikit-learn"])

        return conclude(mlflow, cfg, manifest, run.info.run_id, y_val, estimator.predict_proba(x_val), y_te,
                        estimator.predict_proba(x_te), 1.0, log_model)
