"""NLM Shenzhen and Montgomery County tuberculosis chest X-ray sets (Jaeger et al. 2014).

Images are found by their NLM file names (``CHNCXR_0001_0.png``,
``MCUCXR_0001_1.png``) anywhere under the given folder; the ``_0``/``_1``
suffix is the label (normal/TB). Each image is one patient. Sex and age come
from the ``ClinicalReadings/<name>.txt`` files when present.
"""

from __future__ import annotations

import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import age_from_text, find_files, sex_from_text
from dxlab.errors import DatasetError

CLASSES = ("normal", "tb")
NLM_NAME = re.compile(r"(?P<prefix>CHNCXR|MCUCXR)_(?P<num>\d{4})_(?P<label>[01])\.(png|PNG|jpg|jpeg)")
SITES = {"CHNCXR": "shenzhen", "MCUCXR": "montgomery"}
CITATION = (
    "Jaeger S, Candemir S, Antani S, Wang YX, Lu PX, Thoma G. Two public chest X-ray datasets for "
    "computer-aided screening of pulmonary diseases. Quant Imaging Med Surg. 2014;4(6):475-477."
)
LICENCE = "NLM public data: free for research use with citation (see the NLM data page)"
HOMEPAGE = "https://lhncbc.nlm.nih.gov/LHC-downloads/downloads.html#tuberculosis-image-data-sets"
NOTE = "NLM publishes these archives without checksums, so dxlab cannot verify a download; download them by hand"


def read_clinical_reading(path: Path) -> dict[str, object]:
    """Sex and age from an NLM ClinicalReadings text file.

    Montgomery writes ``Patient's Sex: M`` / ``Patient's Age: 035Y``;
    Shenzhen writes ``male 35yrs`` on the first line.
    """
    text = path.read_text(encoding="utf-8", errors="replace")
    sex = re.search(r"Sex:\s*(\w+)", text, re.IGNORECASE)
    age = re.search(r"Age:\s*([\w.]+)", text, re.IGNORECASE)
    if sex or age:
        return {"sex": sex_from_text(sex.group(1)) if sex else "", "age": age_from_text(age.group(1)) if age else None}
    first = re.match(r"\s*(male|female|m|f)\b[\s,]*(\d+\s*\w*)?", text, re.IGNORECASE)
    if first:
        return {"sex": sex_from_text(first.group(1)), "age": age_from_text(first.group(2) or "")}
    return {"sex": "", "age": None}


def load_nlm(root: Path, *, prefixes: tuple[str, ...] = ("CHNCXR", "MCUCXR"), dataset: str = "nlm_tb") -> Manifest:
    images = {name: path for name, path in find_files(root, NLM_NAME).items() if NLM_NAME.fullmatch(name)["prefix"] in prefixes}
    if not images:
        raise DatasetError(
            f"no NLM chest X-rays found (expected file names like {prefixes[0]}_0001_0.png anywhere below)", root
        )
    readings = find_files(root, r"(CHNCXR|MCUCXR)_\d{4}_[01]\.txt")
    rows = []
    for name, path in sorted(images.items()):
        m = NLM_NAME.fullmatch(name)
        stem = Path(name).stem
        row: dict[str, object] = {
            "path": path.relative_to(root).as_posix(),
            "label": CLASSES[int(m["label"])],
            "patient_id": stem,
            "source": SITES[m["prefix"]],
            "sex": "",
            "age": None,
        }
        if f"{stem}.txt" in readings:
            row.update(read_clinical_reading(readings[f"{stem}.txt"]))
        rows.append(row)
    return build_manifest(rows, dataset=dataset, task="tb_cxr", classes=CLASSES, root=root)


_COMMON = dict(
    task="tb_cxr",
    modality="CR (chest X-ray, PA)",
    classes=CLASSES,
    licence=LICENCE,
    citation=CITATION,
    homepage=HOMEPAGE,
    access="manual",
    access_note=NOTE,
    group_kind="patient",
    layout="NLM file names (CHNCXR_0001_0.png, MCUCXR_0001_1.png) anywhere below the folder; optional ClinicalReadings/*.txt",
)

register_dataset(DatasetSpec(
    name="nlm_tb", title="NLM Shenzhen + Montgomery TB chest X-rays", loader=load_nlm,
    description="Both NLM sets together (800 images: 662 Shenzhen, 138 Montgomery); label from the _0/_1 suffix.",
    **_COMMON,
))
register_dataset(DatasetSpec(
    name="nlm_shenzhen", title="NLM Shenzhen Hospital TB chest X-rays",
    loader=lambda root: load_nlm(root, prefixes=("CHNCXR",), dataset="nlm_shenzhen"),
    description="662 PA chest X-rays (326 normal, 336 TB) from Shenzhen No.3 People's Hospital, China.",
    **_COMMON,
))
register_dataset(DatasetSpec(
    name="nlm_montgomery", title="NLM Montgomery County TB chest X-rays",
    loader=lambda root: load_nlm(root, prefixes=("MCUCXR",), dataset="nlm_montgomery"),
    description="138 PA chest X-rays (80 normal, 58 TB) from Montgomery County, Maryland, USA.",
    **_COMMON,
))
