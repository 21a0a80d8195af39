"""``dxlab evaluate``: a logged or registered model on a manifest, with the training metrics."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dxlab.datasets import Manifest
from dxlab.datasets.dicom import read_any
from dxlab.errors import ConfigError
from dxlab.training import tracking
from dxlab.training.report import evaluate_predictions


def evaluate_model(model_uri: str, manifest_path: str | Path, *, split: str = "test", n_bootstrap: int = 1000,
                   subgroups: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Evaluate an image model packaged by dxlab at its own operating point."""
    from dxlab.models.packaged import load_packaged

    tracking.configure_mlflow()
    manifest = Manifest.load(manifest_path)
    if split != "all":
        manifest = manifest.subset(split)
    if len(manifest) == 0:
        raise ConfigError(f"{manifest_path}: no rows in split {split!r}")
    packaged = load_packaged(model_uri)
    labels = list(packaged.info.labels)
    unknown = sorted(set(manifest.classes) - set(labels))
    if unknown:
        raise ConfigError(f"{manifest_path}: classes {unknown} are not among the model's labels {labels}")
    index = {c: i for i, c in enumerate(labels)}
    y = np.array([index[v] for v in manifest.table["label"]])
    probs = np.concatenate([packaged.predict_images([read_any(p) for p in manifest.paths()[i:i + 32]])
                            for i in range(0, len(manifest), 32)])
    threshold = packaged.info.thresholds.get(labels[1]) if len(labels) == 2 else None
    missing = sorted(set(subgroups) - set(manifest.table.columns))
    if missing:
        raise ConfigError(f"{manifest_path}: no column(s) {missing} for subgroups; columns: {list(manifest.table.columns)}")
    evaluation = evaluate_predictions(y, probs, labels, operating_point=threshold, metadata=manifest.table,
                                      subgroup_columns=list(subgroups), n_bootstrap=n_bootstrap)
    evaluation["model_uri"] = model_uri
    evaluation["data_version"] = manifest.digest
    return evaluation
