"""NCT-CRC-HE-100K colorectal histology patches (Kather et al. 2019).

Official layout (Zenodo record 1214456, unzipped)::

    NCT-CRC-HE-100K/<CODE>/<CODE>-XXXXXXXX.tif      100,000 patches, 224x224, 86 slides
    CRC-VAL-HE-7K/<CODE>/<CODE>-XXXXXXXX.tif          7,180 patches, 50 other patients

with the nine tissue codes ADI BACK DEB LYM MUC MUS NORM STR TUM. Patches are
found by the code prefix of their file name anywhere under the folder, so a
flat folder of patches works too. Patches under a ``CRC-VAL-HE-7K`` folder are
the official test split; the rest are left unsplit (``split_manifest`` cuts
train/val from them). ``NCT-CRC-HE-100K-NONORM`` (the same patches without
colour normalisation) is accepted instead of ``NCT-CRC-HE-100K``, never beside
it, since it would hold every patch twice.

The set publishes no patient or slide id per patch, so each patch is its own
group (``group_kind="image"``): patches of one slide can land in both train
and val. The official test set comes from different patients, so test
results are free of that leak.
"""

from __future__ import annotations

import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

#: The official tissue codes, in the order MedMNIST's PathMNIST numbers them.
CODES = ("ADI", "BACK", "DEB", "LYM", "MUC", "MUS", "NORM", "STR", "TUM")
#: Class names, one per code (MedMNIST's label names as identifiers).
CLASSES = (
    "adipose",
    "background",
    "debris",
    "lymphocytes",
    "mucus",
    "smooth_muscle",
    "normal_colon_mucosa",
    "cancer_associated_stroma",
    "colorectal_adenocarcinoma_epithelium",
)
CLASS_OF_CODE = dict(zip(CODES, CLASSES))
PATCH_NAME = re.compile(rf"(?P<code>{'|'.join(CODES)})-[A-Za-z0-9-]+\.(tif|tiff|TIF|TIFF)")
TEST_FOLDER = "CRC-VAL-HE-7K"
TRAIN_FOLDERS = ("NCT-CRC-HE-100K", "NCT-CRC-HE-100K-NONORM")
_BOTH_VARIANTS = (
    f"both {TRAIN_FOLDERS[0]} and {TRAIN_FOLDERS[1]} are below this folder: they hold the same patches (with and "
    "without colour normalisation); point the loader at a folder that holds only one of them"
)


def load_nct_crc(root: Path) -> Manifest:
    root = Path(root)
    # checked before the file search, which would only report the first name found twice
    if all((root / folder).is_dir() or any(root.glob(f"*/{folder}")) for folder in TRAIN_FOLDERS):
        raise DatasetError(_BOTH_VARIANTS, root)
    patches = find_files(root, PATCH_NAME)
    if not patches:
        raise DatasetError(
            f"no NCT-CRC-HE patches found (expected file names like ADI-AAAFLCLY.tif, codes {', '.join(CODES)}, anywhere below)",
            root,
        )
    rows = []
    sets_seen: set[str] = set()
    for name, path in sorted(patches.items()):
        code = PATCH_NAME.fullmatch(name)["code"]
        rel = path.relative_to(root)
        if path.parent.name in CODES and path.parent.name != code:
            raise DatasetError(f"patch named {code} lies in the {path.parent.name} class folder", path)
        source_set = next((part for part in rel.parts[:-1] if part in (TEST_FOLDER, *TRAIN_FOLDERS)), "")
        sets_seen.add(source_set)
        rows.append({
            "path": rel.as_posix(),
            "label": CLASS_OF_CODE[code],
            "patient_id": path.stem,
            "split": "test" if source_set == TEST_FOLDER else "",
            "code": code,
            "source_set": source_set,
        })
    if set(TRAIN_FOLDERS) <= sets_seen:
        raise DatasetError(_BOTH_VARIANTS, root)
    return build_manifest(rows, dataset="nct_crc", task="cancer_histology", classes=CLASSES, root=root,
                          group_kind="image")


register_dataset(DatasetSpec(
    name="nct_crc",
    title="NCT-CRC-HE-100K colorectal cancer histology (with CRC-VAL-HE-7K)",
    task="cancer_histology",
    modality="histology (H&E), RGB 224x224 at 0.5 um/px; Macenko colour-normalised except the NONORM variant",
    classes=CLASSES,
    licence="CC BY 4.0",
    citation=(
        "Kather JN, Krisam J, Charoentong P, et al. Predicting survival from colorectal cancer histology slides using "
        "deep learning: a retrospective multicenter study. PLoS Med. 2019;16(1):e1002730. Data: Kather JN, Halama N, "
        "Marx A. 100,000 histological images of human colorectal cancer and healthy tissue (v0.1). Zenodo. 2018. "
        "doi:10.5281/zenodo.1214456"
    ),
    homepage="https://zenodo.org/records/1214456",
    loader=load_nct_crc,
    access="manual",
    access_note=(
        "the Zenodo record lists MD5s for its zips, but dxlab has not checked them against the record itself, so it "
        "does not download the archives (NCT-CRC-HE-100K.zip 11.7 GB, CRC-VAL-HE-7K.zip 0.8 GB); download and unzip them by hand"
    ),
    group_kind="image",
    official_split=True,
    description=(
        "100,000 patches of 86 slides (NCT-CRC-HE-100K) plus an official test set of 7,180 patches from 50 other "
        "patients (CRC-VAL-HE-7K); 9 tissue classes. No patient ids per patch: each patch is its own group."
    ),
    layout="NCT-CRC-HE-100K/<CODE>/<CODE>-*.tif and optionally CRC-VAL-HE-7K/<CODE>/<CODE>-*.tif (test); "
           "any folder of <CODE>-*.tif patches works",
))
