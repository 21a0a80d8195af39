"""HAM10000 dermoscopy images (Tschandl et al. 2018).

The official release is ``HAM10000_metadata.csv`` (one row per image:
``lesion_id, image_id, dx, dx_type, age, sex, localization``) plus the images
``ISIC_xxxxxxx.jpg`` in ``HAM10000_images_part_1/`` and ``_part_2/``. The
metadata file is looked for anywhere below the folder (or given explicitly);
images are found by name anywhere below the folder, so any arrangement of
the two archives works. Harvard Dataverse also serves the table as
``HAM10000_metadata.tab`` (tab-separated); both are read.

``lesion_id`` is the grouping key: HAM10000 has several images of one
lesion, and they must never be split apart. Metadata rows whose image is not
on disk (a partial download) are left out with one logged warning; a table
none of whose images is present is an error.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import age_from_text, files_for_rows, find_files, read_table, sex_from_text
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc")
METADATA_NAMES = ("HAM10000_metadata.csv", "HAM10000_metadata.tab")
REQUIRED = ("lesion_id", "image_id", "dx")
OFFICIAL_COLUMNS = (*REQUIRED, "dx_type", "age", "sex", "localization", "dataset")
IMAGE_NAME = re.compile(r"ISIC_\d{7}\.jpe?g", re.IGNORECASE)
#: values the official table uses for "not recorded"
UNKNOWN = {"", "unknown", "nan"}

CITATION = (
    "Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source "
    "dermatoscopic images of common pigmented skin lesions. Sci Data. 2018;5:180161. doi:10.1038/sdata.2018.161"
)
HOMEPAGE = "https://doi.org/10.7910/DVN/DBW86T"


def find_metadata(root: Path) -> Path:
    """The HAM10000 metadata table below ``root``; an error when there is none."""
    for name in METADATA_NAMES:
        found = find_files(root, re.escape(name))
        if name in found:
            return found[name]
    raise DatasetError(f"no HAM10000 metadata table found below the folder (expected {' or '.join(METADATA_NAMES)})", root)


def _drop_repeated_rows(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    """One row per image: exact repeats of a row are dropped (logged); conflicting ones are an error."""
    official = [c for c in OFFICIAL_COLUMNS if c in table.columns]
    repeated = table.duplicated(subset=official)
    if repeated.any():
        log.warning("%s: %d rows repeat an earlier row exactly and are dropped", path, int(repeated.sum()))
        table = table[~repeated]
    clash = table["image_id"].duplicated(keep=False)
    if clash.any():
        rows = [int(i) + 2 for i in table.index[clash][:2]]
        image = table.loc[clash, "image_id"].iloc[0]
        raise DatasetError(f"image {image!r} has conflicting rows (rows {rows[0]} and {rows[1]})", path)
    return table


def load_ham10000(root: Path, *, metadata: str | Path | None = None) -> Manifest:
    """Manifest of HAM10000 under ``root``; ``metadata`` overrides where the table is."""
    root = Path(root)
    table_path = Path(metadata) if metadata is not None else find_metadata(root)
    # the Kaggle copy has an unnamed index column first: extra columns are ignored
    table = read_table(table_path, required=REQUIRED, sep="\t" if table_path.suffix == ".tab" else ",")
    table = table.apply(lambda col: col.str.strip())
    table = _drop_repeated_rows(table, table_path)
    bad = sorted(set(table["dx"]) - set(CLASSES))
    if bad:
        row = int(table.index[table["dx"].isin(bad)][0]) + 2
        raise DatasetError(f"row {row}: diagnosis (column 'dx') {bad[0]!r} is not one of {', '.join(CLASSES)}", table_path)
    empty = table["lesion_id"] == ""
    if empty.any():
        raise DatasetError(f"row {int(table.index[empty][0]) + 2}: empty lesion_id", table_path)

    images = {Path(name).stem: path for name, path in find_files(root, IMAGE_NAME).items()}
    files = files_for_rows(list(table["image_id"]), images, table=table_path, root=root)
    rows = []
    for rec, file in zip(table.to_dict("records"), files):
        if file is None:
            continue
        site = rec.get("localization", "")
        rows.append({
            "path": file.relative_to(root).as_posix(),
            "label": rec["dx"],
            "patient_id": rec["lesion_id"],
            "image_id": rec["image_id"],
            "dx_type": rec.get("dx_type", ""),
            "age": age_from_text(rec.get("age", "")),
            "sex": sex_from_text(rec.get("sex", "")),
            "site": "" if site.lower() in UNKNOWN else site,
            # newer Dataverse versions name the collection each image came from
            **({"source": rec["dataset"]} if "dataset" in rec else {}),
        })
    return build_manifest(rows, dataset="ham10000", task="dermatology", classes=CLASSES, root=root, group_kind="lesion")


register_dataset(DatasetSpec(
    name="ham10000",
    title="HAM10000 dermoscopic images of pigmented skin lesions",
    task="dermatology",
    modality="dermoscopy (RGB JPEG, 600x450)",
    classes=CLASSES,
    licence="CC BY-NC 4.0 (Harvard Dataverse terms): non-commercial use, with attribution",
    citation=CITATION,
    homepage=HOMEPAGE,
    loader=load_ham10000,
    access="manual",
    access_note=(
        "Harvard Dataverse serves the files behind a terms-of-use page and publishes no checksum that "
        "dxlab could pin, so a download cannot be verified"
    ),
    group_kind="lesion",
    official_split=False,
    layout="HAM10000_metadata.csv (or .tab) anywhere below the folder; ISIC_xxxxxxx.jpg images anywhere below it",
    description=(
        "10,015 dermoscopic images of 7,470 lesions in 7 classes (akiec, bcc, bkl, df, mel, nv, vasc); "
        "67% are nv. lesion_id groups the images of one lesion. Metadata: dx_type (how the diagnosis "
        "was confirmed), age, sex, site. No official split (the ISIC 2018 test set is separate)."
    ),
))
