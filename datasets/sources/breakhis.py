"""BreakHis breast cancer histology (Spanhol et al. 2016).

Official layout::

    BreaKHis_v1/histology_slides/breast/{benign,malignant}/SOB/<subtype>/<SOB_B_A_14-22549AB>/<40X|100X|200X|400X>/
        SOB_B_A-14-22549AB-40-001.png

Images are found by their file name anywhere under the folder; everything
the manifest needs is in the name ``SOB_<B|M>_<subtype>-<year>-<slide>-<magnification>-<sequence>.png``:
the label (B benign, M malignant), the tumour subtype, the slide and the
magnification. The group is the slide as BreakHis names it (``14-22549AB``,
``group_kind="slide"``), which is also the patient folder of the official
tree, so one slide's images at every magnification stay in one split.
"""

from __future__ import annotations

import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

CLASSES = ("benign", "malignant")
BREAKHIS_NAME = re.compile(
    r"SOB_(?P<cls>[BM])_(?P<subtype>[A-Z]+)-(?P<year>\d{2})-(?P<slide>[0-9A-Z]+)-(?P<mag>40|100|200|400)-(?P<seq>\d+)\.png",
    re.IGNORECASE,
)
#: Subtype code -> (class, name), as in Spanhol et al. 2016, Table I.
SUBTYPES = {
    "A": ("benign", "adenosis"),
    "F": ("benign", "fibroadenoma"),
    "PT": ("benign", "phyllodes_tumor"),
    "TA": ("benign", "tubular_adenoma"),
    "DC": ("malignant", "ductal_carcinoma"),
    "LC": ("malignant", "lobular_carcinoma"),
    "MC": ("malignant", "mucinous_carcinoma"),
    "PC": ("malignant", "papillary_carcinoma"),
}


def parse_breakhis_name(name: str) -> dict[str, object]:
    """Label, subtype, slide and magnification from a BreakHis file name.

    ``SOB_B_A-14-22549AB-40-001.png`` gives benign, adenosis, slide
    ``14-22549AB``, magnification 40, sequence 1. A name whose class letter
    contradicts its subtype, or whose subtype is unknown, is an error.
    """
    m = BREAKHIS_NAME.fullmatch(name)
    if not m:
        raise DatasetError("not a BreakHis file name (expected SOB_<B|M>_<subtype>-<year>-<slide>-<mag>-<seq>.png)", name)
    code = m["subtype"].upper()
    if code not in SUBTYPES:
        raise DatasetError(f"unknown tumour subtype code {code!r}; expected one of {', '.join(SUBTYPES)}", name)
    label, subtype = SUBTYPES[code]
    if label != CLASSES[m["cls"].upper() == "M"]:
        raise DatasetError(f"class letter {m['cls']!r} contradicts subtype {code} ({subtype}, {label})", name)
    return {
        "label": label,
        "patient_id": f"{m['year']}-{m['slide'].upper()}",
        "subtype": subtype,
        "subtype_code": code,
        "magnification": int(m["mag"]),
        "sequence": int(m["seq"]),
    }


def load_breakhis(root: Path) -> Manifest:
    root = Path(root)
    images = find_files(root, BREAKHIS_NAME)
    if not images:
        raise DatasetError("no BreakHis images found (expected file names like SOB_B_A-14-22549AB-40-001.png anywhere below)", root)
    rows = [
        {"path": path.relative_to(root).as_posix(), **parse_breakhis_name(name)}
        for name, path in sorted(images.items())
    ]
    return build_manifest(rows, dataset="breakhis", task="cancer_histology", classes=CLASSES, root=root,
                          group_kind="slide")


register_dataset(DatasetSpec(
    name="breakhis",
    title="BreakHis breast cancer histopathology",
    task="cancer_histology",
    modality="histology (H&E), RGB 700x460 PNG at 40X/100X/200X/400X",
    classes=CLASSES,
    licence="free for research use with citation (BreakHis page; no open licence is stated)",
    citation=(
        "Spanhol FA, Oliveira LS, Petitjean C, Heutte L. A dataset for breast cancer histopathological image "
        "classification. IEEE Trans Biomed Eng. 2016;63(7):1455-1462. doi:10.1109/TBME.2015.2496264"
    ),
    homepage="https://web.inf.ufpr.br/vri/databases-software/breast-cancer-histopathological-database-breakhis/",
    loader=load_breakhis,
    access="manual",
    access_note="the BreakHis page publishes no checksum for BreaKHis_v1.tar.gz, so dxlab cannot verify a download",
    group_kind="slide",
    description=(
        "7,909 images of 82 patients (2,480 benign, 5,429 malignant) at four magnifications; 4 benign and 4 malignant "
        "subtypes. The slide (patient folder) is the group: never split one across train and test."
    ),
    layout="BreakHis file names (SOB_B_A-14-22549AB-40-001.png) anywhere below the folder, e.g. the official "
           "BreaKHis_v1/histology_slides/breast/<class>/SOB/<subtype>/<slide>/<mag>X/ tree",
))
