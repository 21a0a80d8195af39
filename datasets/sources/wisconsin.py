"""Breast Cancer Wisconsin (Diagnostic), as scikit-learn ships it.

569 fine-needle aspirates of breast masses, each described by 30 features
of its cell nuclei (mean, standard error and worst of ten measurements) and
diagnosed malignant or benign. The set comes with scikit-learn
(``sklearn.datasets.load_breast_cancer``), so there is nothing to download
and the loader ignores the folder it is given.

Rows have no file (``path`` is empty); the features are metadata columns with
snake_case names (``mean_radius``, ``radius_error``, ``worst_concave_points``).
scikit-learn does not keep the WDBC sample ids, so each row is its own patient,
``wdbc-<row index>``. ``sha256`` is the SHA-256 of the row's canonical feature
text: the 30 values as Python float reprs, comma-separated, in scikit-learn's
column order.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.errors import DatasetError

#: scikit-learn's target 0 is malignant, 1 benign.
CLASSES = ("malignant", "benign")


def snake_case(name: str) -> str:
    """'mean concave points' -> 'mean_concave_points'."""
    return re.sub(r"[^0-9a-z]+", "_", name.strip().lower()).strip("_")


def feature_sha256(values) -> str:
    """SHA-256 of the canonical text of one row's feature values."""
    return hashlib.sha256(",".join(repr(float(v)) for v in values).encode("utf-8")).hexdigest()


def load_wisconsin(root: Path | None = None) -> Manifest:
    try:
        from sklearn.datasets import load_breast_cancer
    except ImportError as exc:  # scikit-learn is a dependency; this guards a broken install
        raise DatasetError("the Wisconsin set ships with scikit-learn, which is not installed: pip install scikit-learn") from exc
    bunch = load_breast_cancer()
    names = [snake_case(str(n)) for n in bunch.feature_names]
    if list(bunch.target_names) != list(CLASSES):
        raise DatasetError(f"scikit-learn's target names are {list(bunch.target_names)}; expected {list(CLASSES)}")
    rows = []
    for index, (values, target) in enumerate(zip(bunch.data, bunch.target)):
        rows.append({
            "path": "",
            "label": CLASSES[int(target)],
            "patient_id": f"wdbc-{index}",
            "sha256": feature_sha256(values),
            **{name: float(v) for name, v in zip(names, values)},
        })
    return build_manifest(rows, dataset="wisconsin", task="cancer_tabular", classes=CLASSES,
                          root=root if root is not None else Path("."), hash_files=False)


register_dataset(DatasetSpec(
    name="wisconsin",
    title="Breast Cancer Wisconsin (Diagnostic)",
    task="cancer_tabular",
    modality="tabular: 30 nuclear features from digitised fine-needle aspirates",
    classes=CLASSES,
    licence="CC BY 4.0 (UCI Machine Learning Repository)",
    citation=(
        "Street WN, Wolberg WH, Mangasarian OL. Nuclear feature extraction for breast tumor diagnosis. Proc SPIE 1905, "
        "Biomedical Image Processing and Biomedical Visualization. 1993:861-870. Data: Wolberg W, Mangasarian O, "
        "Street N, Street W. Breast Cancer Wisconsin (Diagnostic). UCI Machine Learning Repository. 1995. "
        "doi:10.24432/C5DW2B"
    ),
    homepage="https://archive.ics.uci.edu/dataset/17/breast+cancer+wisconsin+diagnostic",
    loader=load_wisconsin,
    access="bundled",
    group_kind="patient",
    description="569 cases (212 malignant, 357 benign), 30 features each; shipped by scikit-learn "
                "(sklearn.datasets.load_breast_cancer). No files: the features are metadata columns.",
    layout="none: bundled with scikit-learn; the folder is ignored",
))
