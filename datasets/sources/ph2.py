"""PH2 dermoscopy images (Mendonça et al. 2013), in the official layout.

The archive unpacks to::

    PH2Dataset/PH2_dataset.txt
    PH2Dataset/PH2_dataset.xlsx
    PH2Dataset/PH2 Dataset images/IMD002/IMD002_Dermoscopic_Image/IMD002.bmp
    PH2Dataset/PH2 Dataset images/IMD002/IMD002_lesion/IMD002_lesion.bmp

``PH2_dataset.txt`` is a table drawn with ``||`` between column groups and
``|`` inside the dermoscopic-criteria group::

    ||   Name || Histological Diagnosis || Clinical Diagnosis || Asymmetry | Pigment Network | ... ||  Colors ||
    || IMD003 ||                        ||                  0 ||         0 |               T | ... ||     4 ||

followed by a legend. The label is the Clinical Diagnosis code (0 common
nevus, 1 atypical nevus, 2 melanoma). A table that marks the diagnosis with
an ``X`` under ``Common Nevus``/``Atypical Nevus``/``Melanoma`` columns (the
layout of ``PH2_dataset.xlsx``, when saved as text) is read too. The xlsx
itself is not read: the txt beside it holds the same table.

Each image is one lesion of one patient as far as the release says (no
patient ids are published): every image is its own group.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("common_nevus", "atypical_nevus", "melanoma")
TABLE = "PH2_dataset.txt"
CASE = re.compile(r"IMD\d{3}")
#: the X-marked diagnosis columns of the xlsx layout, in class order
MARK_COLUMNS = ("Common Nevus", "Atypical Nevus", "Melanoma")
#: legends printed under the official table
CRITERIA = {"A": "absent", "AT": "atypical", "P": "present", "T": "typical"}
ASYMMETRY = {"0": "fully symmetric", "1": "symmetric in one axis", "2": "fully asymmetric"}
COLOURS = {"1": "white", "2": "red", "3": "light brown", "4": "dark brown", "5": "blue-gray", "6": "black"}
#: metadata columns: the table's header name, the manifest column and its legend
METADATA = (
    ("Histological Diagnosis", "histological_diagnosis", None),
    ("Asymmetry", "asymmetry", ASYMMETRY),
    ("Pigment Network", "pigment_network", CRITERIA),
    ("Dots/Globules", "dots_globules", CRITERIA),
    ("Streaks", "streaks", CRITERIA),
    ("Regression Areas", "regression_areas", CRITERIA),
    ("Blue-Whitish Veil", "blue_whitish_veil", CRITERIA),
)

CITATION = (
    "Mendonça T, Ferreira PM, Marques JS, Marcal ARS, Rozeira J. PH² - A dermoscopic image database for "
    "research and benchmarking. 35th Annual International Conference of the IEEE Engineering in Medicine "
    "and Biology Society (EMBC), Osaka, Japan, July 3-7, 2013."
)
HOMEPAGE = "https://www.fc.up.pt/addi/ph2%20database.html"


def _cells(line: str) -> list[str]:
    """A table line's cells: ``||`` and ``|`` both separate cells."""
    return [cell.strip() for cell in re.split(r"\|\|?", line.strip().strip("|"))]


def read_ph2_table(path: Path) -> dict[str, dict[str, str]]:
    """Each case's label and metadata from ``PH2_dataset.txt``, by case name (IMD002)."""
    lines = [ln for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip().startswith("|")]
    header_at = next((i for i, ln in enumerate(lines) if "Name" in _cells(ln)), None)
    if header_at is None:
        raise DatasetError("no header line with a 'Name' column (expected the official '||   Name || ...' table)", path)
    header = _cells(lines[header_at])
    if "Clinical Diagnosis" not in header and not all(c in header for c in MARK_COLUMNS):
        raise DatasetError(
            f"missing column 'Clinical Diagnosis' (or the X-marked {', '.join(MARK_COLUMNS)}); the table has {', '.join(header)}",
            path,
        )
    cases: dict[str, dict[str, str]] = {}
    for line in lines[header_at + 1:]:
        cells = _cells(line)
        if len(cells) != len(header):
            name = cells[0] if cells else ""
            if CASE.fullmatch(name):
                raise DatasetError(f"case {name}: {len(cells)} cells where the header has {len(header)}", path)
            continue
        rec = dict(zip(header, cells))
        name = rec["Name"]
        if not CASE.fullmatch(name):
            continue
        rec["label"] = _label(rec, name, path)
        cases[name] = rec
    if not cases:
        raise DatasetError("no case rows (IMD002, ...) under the header", path)
    return cases


def _label(rec: dict[str, str], name: str, path: Path) -> str:
    if "Clinical Diagnosis" in rec:
        code = rec["Clinical Diagnosis"]
        if code not in ("0", "1", "2"):
            raise DatasetError(f"case {name}: Clinical Diagnosis {code!r} is not 0, 1 or 2 ({', '.join(CLASSES)})", path)
        return CLASSES[int(code)]
    marked = [cls for cls, col in zip(CLASSES, MARK_COLUMNS) if rec[col].upper() == "X"]
    if len(marked) != 1:
        raise DatasetError(f"case {name}: expected one X under {', '.join(MARK_COLUMNS)}, found {len(marked)}", path)
    return marked[0]


def _metadata(rec: dict[str, str]) -> dict[str, str]:
    out = {}
    for column, key, legend in METADATA:
        value = rec.get(column, "")
        out[key] = legend.get(value, value) if legend else value
    colours = re.findall(r"[1-6]", rec.get("Colors", ""))
    out["colors"] = ", ".join(COLOURS[c] for c in colours)
    return out


def load_ph2(root: Path) -> Manifest:
    root = Path(root)
    table_path = find_files(root, re.escape(TABLE)).get(TABLE)
    if table_path is None:
        raise DatasetError(f"{TABLE} not found below the folder (the official archive has PH2Dataset/{TABLE})", root)
    cases = read_ph2_table(table_path)
    images = {Path(n).stem: p for n, p in find_files(root, r"IMD\d{3}\.bmp").items()}
    masks = {Path(n).stem[: -len("_lesion")]: p for n, p in find_files(root, r"IMD\d{3}_lesion\.bmp").items()}
    missing = sorted(set(cases) - set(images))
    if missing:
        raise DatasetError(
            f"{len(missing)} case(s) listed in {TABLE} have no dermoscopic image (first: "
            f"'PH2 Dataset images/{missing[0]}/{missing[0]}_Dermoscopic_Image/{missing[0]}.bmp')",
            root,
        )
    extra = sorted(set(images) - set(cases))
    if extra:
        log.warning("%s: %d image(s) not listed in %s are left out: %s", root, len(extra), TABLE, ", ".join(extra[:5]))
    rows = []
    for name, rec in sorted(cases.items()):
        rows.append({
            "path": images[name].relative_to(root).as_posix(),
            "label": rec["label"],
            "patient_id": name,
            "mask": masks[name].relative_to(root).as_posix() if name in masks else "",
            **_metadata(rec),
        })
    return build_manifest(rows, dataset="ph2", task="dermatology", classes=CLASSES, root=root, group_kind="image")


register_dataset(DatasetSpec(
    name="ph2",
    title="PH2 dermoscopic image database",
    task="dermatology",
    modality="dermoscopy (RGB BMP, 768x560)",
    classes=CLASSES,
    licence="research and educational use only; no redistribution or commercial use; cite the paper",
    citation=CITATION,
    homepage=HOMEPAGE,
    loader=load_ph2,
    access="manual",
    access_note=(
        "the authors distribute PH2 for research and education from their own page, without a "
        "published checksum, so dxlab cannot verify a download"
    ),
    group_kind="image",
    official_split=False,
    layout=f"PH2Dataset/{TABLE} and PH2Dataset/PH2 Dataset images/IMDnnn/IMDnnn_Dermoscopic_Image/IMDnnn.bmp",
    description=(
        "200 dermoscopic images (80 common nevi, 80 atypical nevi, 40 melanomas) from Hospital Pedro "
        "Hispano, Matosinhos, with lesion masks (the 'mask' column) and dermoscopic criteria. The label "
        "is the clinical diagnosis. No patient ids are published: each image is its own group."
    ),
))
