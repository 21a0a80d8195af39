"""mini-MIAS mammograms (Suckling et al. 1994).

Official layout: ``mdb001.pgm`` ... ``mdb322.pgm`` (1024x1024, 8-bit PGM) and
the ``Info.txt`` table, one line per abnormality::

    mdb001 G CIRC B 535 425 197     ref, background tissue, class, severity, x, y, radius
    mdb003 D NORM                   a normal image
    mdb216 D CALC M *NOTE 3*        a lesion without a position

PGMs are found by name anywhere under the folder; the table is ``Info.txt``
or, failing that, the one file named ``*Info*.txt``. Rows whose image is
absent are dropped (the count is logged); none left is an error.

Each image is one breast. The label is the image's worst severity: normal (no
abnormality), benign, or malignant (any malignant abnormality). Lesions are
kept as a JSON list in the ``lesions`` column, in Info.txt's 1024-pixel
coordinates with the origin at the bottom left (``y_from_top`` = 1023 - y is
given too). MIAS lists the films in pairs, the left (even number) and right
(odd number) breast of one woman: mdb001 and mdb002 are one patient. The
patient id is therefore ``(n + 1) // 2`` (``mias-001`` for mdb001/mdb002), so
a woman's two breasts never straddle splits.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("normal", "benign", "malignant")
ABNORMALITIES = ("CALC", "CIRC", "SPIC", "MISC", "ARCH", "ASYM", "NORM")
TISSUES = {"F": "fatty", "G": "fatty_glandular", "D": "dense_glandular"}
SEVERITIES = {"B": "benign", "M": "malignant"}
INFO_LINE = re.compile(
    rf"(?P<ref>mdb\d{{3}})\s+(?P<tissue>[FGD])\s+(?P<cls>{'|'.join(ABNORMALITIES)})"
    # a trailing remark ("*NOTE 3*") is allowed; half a position is not
    r"(?:\s+(?P<sev>[BM]))?(?:\s+(?P<x>\d+)\s+(?P<y>\d+)\s+(?P<r>\d+))?(?:\s+\*.*)?"
)
IMAGE_NAME = re.compile(r"mdb\d{3}\.pgm")
SIZE = 1024


def find_info_file(root: Path) -> Path:
    """``Info.txt`` anywhere below ``root``; else the only ``*Info*.txt``."""
    candidates = sorted(p for p in root.rglob("*.txt") if "info" in p.name.lower() and p.is_file())
    exact = [p for p in candidates if p.name.lower() == "info.txt"]
    chosen = exact or candidates
    if len(chosen) == 1:
        return chosen[0]
    if not chosen:
        raise DatasetError("no Info.txt table found (the mini-MIAS list of films and abnormalities)", root)
    raise DatasetError(f"several Info tables found ({', '.join(str(p.relative_to(root)) for p in chosen)}); keep one", root)


def read_info(path: Path) -> dict[str, dict[str, object]]:
    """The Info.txt table as ``{ref: {"tissue": ..., "label": ..., "lesions": [...]}}``."""
    images: dict[str, dict[str, object]] = {}
    for number, line in enumerate(path.read_text(encoding="latin-1").splitlines(), start=1):
        if not line.startswith("mdb"):
            continue  # the header and notes of the file
        m = INFO_LINE.fullmatch(line.strip())
        if not m:
            raise DatasetError(f"line {number} is not an Info.txt row (ref tissue class [severity [x y radius]]): {line.strip()!r}", path)
        ref, cls, sev = m["ref"], m["cls"], m["sev"]
        image = images.setdefault(ref, {"tissue": TISSUES[m["tissue"]], "label": "normal", "lesions": []})
        if image["tissue"] != TISSUES[m["tissue"]]:
            raise DatasetError(f"line {number}: {ref} is listed with two background tissues", path)
        if cls == "NORM":
            continue
        if sev is None:
            raise DatasetError(f"line {number}: abnormality {cls} of {ref} has no severity (B or M)", path)
        severity = SEVERITIES[sev]
        if CLASSES.index(severity) > CLASSES.index(image["label"]):
            image["label"] = severity
        x, y, r = (int(m[k]) if m[k] is not None else None for k in ("x", "y", "r"))
        image["lesions"].append({
            "class": cls, "severity": severity, "x": x, "y": y,
            "y_from_top": None if y is None else SIZE - 1 - y, "radius": r,
        })
    if not images:
        raise DatasetError("no rows like 'mdb001 G CIRC B 535 425 197' in the Info table", path)
    return images


def patient_of(ref: str) -> str:
    """MIAS pairs films by woman: mdb001 and mdb002 give ``mias-001``."""
    return f"mias-{(int(ref[3:]) + 1) // 2:03d}"


def load_mini_mias(root: Path) -> Manifest:
    root = Path(root)
    info_path = find_info_file(root)
    info = read_info(info_path)
    images = {Path(name).stem: path for name, path in find_files(root, IMAGE_NAME).items()}
    absent = sorted(set(info) - set(images))
    unlisted = sorted(set(images) - set(info))
    if absent:
        log.warning("%s: %d of %d images listed in %s are absent and dropped", root, len(absent), len(info), info_path.name)
    if unlisted:
        log.warning("%s: %d PGM files are not in %s and are ignored (%s)", root, len(unlisted), info_path.name, ", ".join(unlisted[:5]))
    present = sorted(set(info) & set(images))
    if not present:
        raise DatasetError(f"none of the {len(info)} images listed in {info_path.name} is here (expected mdbNNN.pgm files anywhere below)", root)
    rows = []
    for ref in present:
        entry = info[ref]
        lesions = entry["lesions"]
        rows.append({
            "path": images[ref].relative_to(root).as_posix(),
            "label": entry["label"],
            "patient_id": patient_of(ref),
            "image_id": ref,
            "side": "left" if int(ref[3:]) % 2 == 0 else "right",
            "background_tissue": entry["tissue"],
            "abnormalities": ";".join(sorted({lesion["class"] for lesion in lesions})) or "NORM",
            "n_lesions": len(lesions),
            "lesions": json.dumps(lesions, separators=(",", ":")),
        })
    return build_manifest(rows, dataset="mini_mias", task="cancer_mammography", classes=CLASSES, root=root)


register_dataset(DatasetSpec(
    name="mini_mias",
    title="mini-MIAS mammograms",
    task="cancer_mammography",
    modality="MG (digitised film mammogram, MLO), grey 1024x1024 PGM at 200 um",
    classes=CLASSES,
    licence="MIAS licence agreement: research use only; cite the database; no renting, leasing or selling",
    citation=(
        "Suckling J, Parker J, Dance DR, et al. The Mammographic Image Analysis Society digital mammogram database. "
        "Exerpta Medica, International Congress Series 1069. 1994:375-378."
    ),
    homepage="http://peipa.essex.ac.uk/info/mias.html",
    loader=load_mini_mias,
    access="manual",
    access_note="the MIAS distribution (PEIPA) publishes no checksums, so dxlab cannot verify a download",
    group_kind="patient",
    description=(
        "322 mammograms of 161 women (207 normal, 63 benign, 52 malignant at image level); lesion centres and radii "
        "from Info.txt. The two breasts of a woman (mdb001/mdb002, ...) share a patient id."
    ),
    layout="mdb001.pgm ... mdb322.pgm anywhere below the folder, plus Info.txt (or one *Info*.txt)",
))
