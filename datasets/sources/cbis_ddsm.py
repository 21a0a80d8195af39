"""CBIS-DDSM mammograms (Lee et al. 2017; TCIA).

Official layout: the four description CSVs (``mass_case_description_train_set.csv``,
``mass_case_description_test_set.csv``, ``calc_case_description_train_set.csv``,
``calc_case_description_test_set.csv``) and the DICOM files as the NBIA Data
Retriever writes them::

    CBIS-DDSM/<Subject ID>/<study>/<series>/1-1.dcm

Each CSV row is one abnormality; its ``image file path`` starts with the
subject folder of the full mammogram (``Mass-Training_P_00001_LEFT_CC/...``),
the rest of that path being series UIDs that the retriever does not keep. The
loader therefore resolves each row by that first path component and takes
the one ``.dcm`` file below the folder of that name (anywhere under the root).
Rows whose mammogram is absent are dropped (the count is logged); none left
is an error.

The manifest is image-level: one row per full mammogram, identified by
patient, side and view, so a mammogram listed with a mass and with a
calcification is one row. Its label is the worst pathology over its
abnormalities: malignant when any is MALIGNANT, else benign (BENIGN and
BENIGN_WITHOUT_CALLBACK). The split is the official one, from the CSV's name;
a patient listed in both the training and the test CSVs (CBIS-DDSM split
masses and calcifications separately) is put in test entirely, so that no
patient straddles splits. ``patient_id`` (``P_00001``) is the group.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import read_table
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("benign", "malignant")
CSV_NAME = re.compile(r"(?P<kind>mass|calc)_case_description_(?P<split>train|test)_set\.csv", re.IGNORECASE)
PATHOLOGY = {"MALIGNANT": "malignant", "BENIGN": "benign", "BENIGN_WITHOUT_CALLBACK": "benign"}
REQUIRED = ("patient_id", "left or right breast", "image view", "abnormality id", "abnormality type", "pathology", "image file path")
#: The mass CSVs spell it "breast_density", the calcification CSVs "breast density".
DENSITY_COLUMNS = ("breast density", "breast_density")


def find_description_csvs(root: Path) -> list[Path]:
    found = sorted(p for p in root.rglob("*.csv") if CSV_NAME.fullmatch(p.name) and p.is_file())
    if not found:
        raise DatasetError(
            "no CBIS-DDSM description CSVs found (expected mass_case_description_train_set.csv and the like anywhere below)",
            root,
        )
    return found


def read_abnormalities(csv_path: Path) -> list[dict[str, str]]:
    """The rows of one description CSV, with its official split and the mammogram's subject folder."""
    table = read_table(csv_path, required=REQUIRED)
    split = "train" if CSV_NAME.fullmatch(csv_path.name)["split"].lower() == "train" else "test"
    density_col = next((c for c in DENSITY_COLUMNS if c in table.columns), None)
    rows = []
    for number, rec in enumerate(table.to_dict("records"), start=2):
        pathology = rec["pathology"].strip().upper()
        if pathology not in PATHOLOGY:
            raise DatasetError(f"row {number}: pathology {rec['pathology']!r} is not one of {', '.join(PATHOLOGY)}", csv_path)
        subject = rec["image file path"].strip().replace("\\", "/").split("/")[0]
        if not subject:
            raise DatasetError(f"row {number}: empty 'image file path'", csv_path)
        rows.append({
            "subject": subject,
            "patient_id": rec["patient_id"].strip(),
            "side": rec["left or right breast"].strip().lower(),
            "view": rec["image view"].strip().upper(),
            "abnormality_type": rec["abnormality type"].strip().lower(),
            "pathology": pathology,
            "density": rec[density_col].strip() if density_col else "",
            "split": split,
            "csv": csv_path.name,
        })
    return rows


def find_subject_dicoms(root: Path, subjects: set[str]) -> dict[str, Path]:
    """For each subject folder name, the one DICOM file below the folder of that name."""
    found: dict[str, list[Path]] = {}
    for path in root.rglob("*.dcm"):
        subject = next((part for part in path.relative_to(root).parts[:-1] if part in subjects), None)
        if subject is not None and path.is_file():
            found.setdefault(subject, []).append(path)
    chosen = {}
    for subject, paths in found.items():
        if len(paths) > 1:
            # a subject folder should hold the full-mammogram series only; prefer it by its series name
            full = [p for p in paths if "full mammogram" in p.as_posix().lower()]
            if len(full) != 1:
                listing = ", ".join(str(p.relative_to(root)) for p in sorted(paths)[:4])
                raise DatasetError(f"subject folder {subject!r} holds {len(paths)} DICOM files ({listing}); expected one full mammogram", root)
            paths = full
        chosen[subject] = paths[0]
    return chosen


def load_cbis_ddsm(root: Path) -> Manifest:
    root = Path(root)
    abnormalities = [row for csv_path in find_description_csvs(root) for row in read_abnormalities(csv_path)]
    dicoms = find_subject_dicoms(root, {a["subject"] for a in abnormalities})
    present = [a for a in abnormalities if a["subject"] in dicoms]
    absent = {a["subject"] for a in abnormalities} - set(dicoms)
    if absent:
        log.warning("%s: %d mammograms listed in the description CSVs have no DICOM file here and are dropped", root, len(absent))
    if not present:
        raise DatasetError(
            f"none of the {len({a['subject'] for a in abnormalities})} mammograms in the description CSVs has a DICOM file here "
            "(expected CBIS-DDSM/<Subject ID>/.../1-1.dcm, the subject ID being the first part of 'image file path')",
            root,
        )

    test_patients = {a["patient_id"] for a in present if a["split"] == "test"}
    moved = {a["patient_id"] for a in present if a["split"] == "train"} & test_patients
    if moved:
        log.warning("%s: %d patients are in both the official training and test CSVs; all their images go to test", root, len(moved))

    images: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for a in present:
        images.setdefault((a["patient_id"], a["side"], a["view"]), []).append(a)
    rows = []
    for (patient, side, view), items in sorted(images.items()):
        first = min(items, key=lambda a: a["subject"])
        rows.append({
            "path": dicoms[first["subject"]].relative_to(root).as_posix(),
            "label": "malignant" if any(PATHOLOGY[a["pathology"]] == "malignant" for a in items) else "benign",
            "patient_id": patient,
            "split": "test" if patient in test_patients else "train",
            "side": side,
            "view": view,
            "breast_density": first["density"] or next((a["density"] for a in items if a["density"]), ""),
            "abnormality_types": ";".join(sorted({a["abnormality_type"] for a in items})),
            "n_abnormalities": len(items),
            "pathologies": ";".join(sorted({a["pathology"] for a in items})),
            "subjects": ";".join(sorted({a["subject"] for a in items})),
        })
    return build_manifest(rows, dataset="cbis_ddsm", task="cancer_mammography", classes=CLASSES, root=root)


register_dataset(DatasetSpec(
    name="cbis_ddsm",
    title="CBIS-DDSM (Curated Breast Imaging Subset of DDSM)",
    task="cancer_mammography",
    modality="MG (digitised film mammogram, CC and MLO), DICOM",
    classes=CLASSES,
    licence="CC BY 3.0 (TCIA)",
    citation=(
        "Lee RS, Gimenez F, Hoogi A, Miyake KK, Gorovoy M, Rubin DL. A curated mammography data set for use in "
        "computer-aided detection and diagnosis research. Sci Data. 2017;4:170177. Data: Sawyer-Lee R, Gimenez F, "
        "Hoogi A, Rubin D. Curated Breast Imaging Subset of Digital Database for Screening Mammography (CBIS-DDSM). "
        "The Cancer Imaging Archive. 2016. doi:10.7937/K9/TCIA.2016.7O02S9CY"
    ),
    homepage="https://www.cancerimagingarchive.net/collection/cbis-ddsm/",
    loader=load_cbis_ddsm,
    access="manual",
    access_note="TCIA serves the images only through the NBIA Data Retriever (a .tcia manifest), with no published checksums",
    group_kind="patient",
    official_split=True,
    description=(
        "Full mammograms with verified pathology of their masses and calcifications; image-level label is the worst "
        "pathology (malignant vs benign). Official train/test split from the CSV names; the patient is the group."
    ),
    layout="the four *_case_description_{train,test}_set.csv files and CBIS-DDSM/<Subject ID>/<study>/<series>/1-1.dcm "
           "(NBIA Data Retriever, classic directory names) anywhere below the folder",
))
