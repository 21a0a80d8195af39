"""ISIC 2019 challenge training set (HAM10000, BCN20000 and MSK images).

The official files are ``ISIC_2019_Training_GroundTruth.csv`` (``image`` plus
one-hot columns ``MEL, NV, BCC, AK, BKL, DF, VASC, SCC, UNK``),
``ISIC_2019_Training_Metadata.csv`` (``image, age_approx,
anatom_site_general, lesion_id, sex``) and the images in
``ISIC_2019_Training_Input/`` (``ISIC_0000000.jpg``; some MSK images carry a
``_downsampled`` suffix, which the ground truth names too). Both tables are
looked for anywhere below the folder, the images likewise.

Images are grouped by ``lesion_id`` where the metadata gives one, else each
image is its own group. UNK (the challenge's "none of the others" category)
marks no training image; a row marked UNK would have no class here and is
left out with a warning. Ground-truth rows whose image is absent (a partial
download) are left out with one warning; none present is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import age_from_text, files_for_rows, find_files, read_table, sex_from_text
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

#: the ground truth's one-hot columns, in its order, and the class each names
COLUMNS = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC")
CLASSES = tuple(c.lower() for c in COLUMNS)
UNK = "UNK"
GROUND_TRUTH = "ISIC_2019_Training_GroundTruth.csv"
METADATA = "ISIC_2019_Training_Metadata.csv"
IMAGE_NAME = re.compile(r"ISIC_\d{7}(?:_downsampled)?\.jpe?g", re.IGNORECASE)

CITATION = (
    "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source dermatoscopic "
    "images of common pigmented skin lesions. Sci Data. 2018;5:180161. "
    "Codella NCF, et al. Skin lesion analysis toward melanoma detection: a challenge at the 2017 International "
    "Symposium on Biomedical Imaging (ISBI), hosted by the International Skin Imaging Collaboration (ISIC). "
    "arXiv:1710.05006. "
    "Combalia M, et al. BCN20000: Dermoscopic lesions in the wild. arXiv:1908.02288 (2019)."
)
HOMEPAGE = "https://challenge.isic-archive.com/data/#2019"


def _find(root: Path, name: str) -> Path | None:
    return find_files(root, re.escape(name)).get(name)


def _one_hot_label(rec: dict[str, str], row: int, path: Path) -> str | None:
    """The class a ground-truth row marks; None for UNK; an error unless exactly one column is 1."""
    try:
        values = {c: float(rec[c]) for c in (*COLUMNS, UNK) if c in rec}
    except ValueError as exc:
        raise DatasetError(f"row {row} ({rec['image']}): non-numeric one-hot value: {exc}", path) from None
    marked = [c for c, v in values.items() if v == 1.0]
    if len(marked) != 1 or any(v not in (0.0, 1.0) for v in values.values()):
        raise DatasetError(
            f"row {row} ({rec['image']}): expected exactly one of {', '.join(values)} to be 1.0, got {rec}", path
        )
    return None if marked[0] == UNK else marked[0].lower()


def _read_metadata(path: Path | None) -> dict[str, dict[str, object]]:
    if path is None:
        log.info("%s not found: no age, sex, site or lesion ids; every image is its own group", METADATA)
        return {}
    table = read_table(path, required=("image",))
    meta = {}
    for rec in table.to_dict("records"):
        site = rec.get("anatom_site_general", "").strip()
        meta[rec["image"].strip()] = {
            "lesion_id": rec.get("lesion_id", "").strip(),
            "age": age_from_text(rec.get("age_approx", "")),
            "sex": sex_from_text(rec.get("sex", "")),
            "site": "" if site.lower() in ("unknown", "nan") else site,
        }
    return meta


def load_isic2019(root: Path) -> Manifest:
    root = Path(root)
    gt_path = _find(root, GROUND_TRUTH)
    if gt_path is None:
        raise DatasetError(f"{GROUND_TRUTH} not found below the folder", root)
    truth = read_table(gt_path, required=("image", *COLUMNS))
    meta = _read_metadata(_find(root, METADATA))

    labels: list[tuple[str, str]] = []
    unk = 0
    for i, rec in enumerate(truth.to_dict("records")):
        label = _one_hot_label(rec, i + 2, gt_path)
        if label is None:
            unk += 1
            continue
        labels.append((rec["image"].strip(), label))
    if unk:
        log.warning("%s: %d images marked UNK have no training class and are left out", gt_path, unk)

    images = {Path(name).stem: path for name, path in find_files(root, IMAGE_NAME).items()}
    files = files_for_rows([image for image, _ in labels], images, table=gt_path, root=root)
    rows = []
    for (image, label), file in zip(labels, files):
        if file is None:
            continue
        info = meta.get(image, {})
        rows.append({
            "path": file.relative_to(root).as_posix(),
            "label": label,
            "patient_id": info.get("lesion_id") or image,
            "image_id": image,
            "age": info.get("age"),
            "sex": info.get("sex", ""),
            "site": info.get("site", ""),
        })
    return build_manifest(rows, dataset="isic2019", task="dermatology", classes=CLASSES, root=root, group_kind="lesion")


register_dataset(DatasetSpec(
    name="isic2019",
    title="ISIC 2019 skin lesion classification challenge (training set)",
    task="dermatology",
    modality="dermoscopy (RGB JPEG, various sizes)",
    classes=CLASSES,
    licence="CC BY-NC 4.0 (ISIC challenge data terms): non-commercial use, with attribution",
    citation=CITATION,
    homepage=HOMEPAGE,
    loader=load_isic2019,
    access="manual",
    access_note="the ISIC challenge publishes no checksums for its archives, so dxlab cannot verify a download",
    group_kind="lesion",
    official_split=False,
    layout=(
        f"{GROUND_TRUTH} and (optional) {METADATA} anywhere below the folder; "
        "ISIC_2019_Training_Input/ISIC_*.jpg images anywhere below it"
    ),
    description=(
        "25,331 dermoscopic training images in 8 classes (mel, nv, bcc, ak, bkl, df, vasc, scc); the "
        "ground truth's UNK column marks no training image. Includes all of HAM10000: never evaluate a "
        "HAM10000-trained model on it. Grouped by lesion_id where the metadata gives one, else by image. "
        "The challenge's test labels are not public, so there is no official split."
    ),
))
