"""Tabular runs (``cancer_tabular``): a scikit-learn pipeline on the manifest's feature columns.

The features are the manifest's numeric metadata columns. Tabular sets are
small (Wisconsin: 569 rows), so a threshold chosen on a validation split of a
few dozen rows is noisy: the operating point is chosen on 5-fold out-of-fold
probabilities over train + validation, and the final pipeline is fitted on
train + validation. The test split is touched once, for the evaluation. The
fitted pipeline is logged with ``mlflow.sklearn`` and registered like an image
model; evaluation, card and gate are the same as for images.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, cross_val_predict

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
    x_fit, y_fit = pd.concat([x_tr, x_val]), np.concatenate([y_tr, y_val])
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=cfg.train.seed)
    oof = cross_val_predict(build_estimator(cfg.model.name, **cfg.model.args), x_fit, y_fit, cv=folds,
                            method="predict_proba")
    estimator = build_estimator(cfg.model.name, **cfg.model.args).fit(x_fit, y_fit)
    mlflow = tracking.configure_mlflow()
    tracking.use_experiment(cfg.task)
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
                signature=infer_signature(x_fit.iloc[:5], estimator.predict_proba(x_fit.iloc[:5])),
                pip_requirements=["scikit-learn"])

        return conclude(mlflow, cfg, manifest, run.info.run_id, y_fit, oof, y_te, estimator.predict_proba(x_te), 1.0,
                        log_model)
