"""Tuberculosis (TB) Chest X-ray Database (Rahman et al. 2020, on Kaggle).

The Kaggle archive unpacks to::

    TB_Chest_Radiography_Database/Normal/Normal-1.png ...
    TB_Chest_Radiography_Database/Tuberculosis/Tuberculosis-1.png ...
    TB_Chest_Radiography_Database/Normal.metadata.xlsx, Tuberculosis.metadata.xlsx

Images are found by those names anywhere below the folder; the name's prefix
is the label. The metadata sheets (``FILE NAME, FORMAT, SIZE, URL``: the URL
of the public collection each image came from) are optional. Reading them
needs ``openpyxl``; without it they are skipped with a log message, and the
manifest simply has no ``source_url`` values.

No patient ids are published, so each image is its own group: two images of
one patient, if the collections hold any, can land in different splits.
"""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path

import pandas as pd

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("normal", "tb")
NAME = re.compile(r"(?P<prefix>Normal|Tuberculosis)-(?P<num>\d+)\.(?:png|jpe?g)", re.IGNORECASE)
LABELS = {"normal": "normal", "tuberculosis": "tb"}
SHEETS = ("Normal.metadata.xlsx", "Tuberculosis.metadata.xlsx")

CITATION = (
    "Rahman T, Khandakar A, Kadir MA, Islam KR, Islam KF, Mahbub ZB, Ayari MA, Chowdhury MEH, et al. "
    "Reliable tuberculosis detection using chest X-ray with deep learning, segmentation and visualization. "
    "IEEE Access. 2020;8:191586-191601. arXiv:2007.14895"
)
HOMEPAGE = "https://www.kaggle.com/datasets/tawsifurrahman/tuberculosis-tb-chest-xray-dataset"


def _stem(name: str) -> str:
    """A sheet's FILE NAME (with or without an extension, any case) as a lower-case stem."""
    name = name.strip().lower()
    return name.rsplit(".", 1)[0] if name.endswith((".png", ".jpg", ".jpeg")) else name


def metadata_from_sheet(sheet: pd.DataFrame, source: Path) -> dict[str, str]:
    """Each image's source URL from a metadata sheet, by lower-case file stem (normal-1)."""
    columns = {str(c).strip().upper(): c for c in sheet.columns}
    missing = [c for c in ("FILE NAME", "URL") if c not in columns]
    if missing:
        raise DatasetError(
            f"missing column(s) {', '.join(repr(c) for c in missing)}; the sheet has {', '.join(repr(str(c)) for c in sheet.columns)}",
            source,
        )
    out = {}
    for name, url in zip(sheet[columns["FILE NAME"]], sheet[columns["URL"]]):
        if isinstance(name, str) and name.strip():
            out[_stem(name)] = "" if pd.isna(url) else str(url).strip()
    return out


def openpyxl_available() -> bool:
    """Whether pandas can read the xlsx sheets (openpyxl is an optional dependency)."""
    return importlib.util.find_spec("openpyxl") is not None


def read_metadata(root: Path) -> dict[str, str]:
    """Source URLs from the optional xlsx sheets; empty when there are none or openpyxl is missing."""
    sheets = [p for name in SHEETS for p in find_files(root, re.escape(name)).values()]
    if not sheets:
        return {}
    if not openpyxl_available():
        log.info("openpyxl is not installed: skipping %s (pip install openpyxl to read the source URLs)", ", ".join(map(str, sheets)))
        return {}
    urls: dict[str, str] = {}
    for path in sheets:
        try:
            sheet = pd.read_excel(path, dtype=str)
        except (ValueError, OSError, KeyError) as exc:
            raise DatasetError(f"unreadable metadata sheet ({exc}); delete it to load the images without metadata", path) from exc
        urls.update(metadata_from_sheet(sheet, path))
    return urls


def load_tb_cxr_db(root: Path) -> Manifest:
    root = Path(root)
    images = find_files(root, NAME)
    if not images:
        raise DatasetError(
            "no TB Chest X-ray Database images found (expected Normal/Normal-1.png and "
            "Tuberculosis/Tuberculosis-1.png under TB_Chest_Radiography_Database/)",
            root,
        )
    urls = read_metadata(root)
    rows = []
    for name, path in sorted(images.items()):
        stem = Path(name).stem
        rows.append({
            "path": path.relative_to(root).as_posix(),
            "label": LABELS[NAME.fullmatch(name)["prefix"].lower()],
            "patient_id": stem,
            "source_url": urls.get(stem.lower(), ""),
        })
    return build_manifest(rows, dataset="tb_cxr_db", task="tb_cxr", classes=CLASSES, root=root, group_kind="image")


register_dataset(DatasetSpec(
    name="tb_cxr_db",
    title="Tuberculosis (TB) Chest X-ray Database (Rahman et al.)",
    task="tb_cxr",
    modality="chest X-ray, PA (PNG, 512x512)",
    classes=CLASSES,
    licence="as stated on the Kaggle page; images come from other public collections whose terms also apply; cite the paper",
    citation=CITATION,
    homepage=HOMEPAGE,
    loader=load_tb_cxr_db,
    access="manual",
    access_note="Kaggle downloads need a signed-in account, and Kaggle publishes no checksum that dxlab could verify",
    group_kind="image",
    official_split=False,
    layout="TB_Chest_Radiography_Database/{Normal,Tuberculosis}/{Normal,Tuberculosis}-N.png; optional *.metadata.xlsx",
    description=(
        "3,500 normal and 700 TB chest X-rays in the first release (3,500 TB in the current one), gathered "
        "from several public collections (among them NLM Shenzhen and Montgomery, NIAID TB portal, RSNA): "
        "normals and TB cases largely come from different sources, so a classifier can learn the source; "
        "do not combine with nlm_tb (shared images). No patient ids are published: each image is its own group."
    ),
))
