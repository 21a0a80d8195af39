"""TBX11K tuberculosis chest X-rays with lesion boxes (Liu et al. 2020).

The official archive unpacks to::

    TBX11K/imgs/{health,sick,tb,test,extra/...}/*.png     (512x512)
    TBX11K/lists/TBX11K_train.txt, TBX11K_val.txt, ...    (lines like 'tb/tb0003.png', relative to imgs/)
    TBX11K/annotations/xml/tb0003.xml                     (Pascal VOC boxes, original pixel coordinates)
    TBX11K/annotations/json/TBX11K_train.json, ...        (COCO boxes, 512-pixel coordinates)

The manifest holds the images of the official ``TBX11K_train`` and
``TBX11K_val`` lists, with those splits. The label is the image's folder:
``health`` healthy, ``sick`` sick but non-TB, ``tb`` TB. Not loaded: the
official test set (``imgs/test``, labels withheld for the online challenge)
and ``imgs/extra`` (the DA, DB, Montgomery and Shenzhen sets that the
``all_*`` lists add; load those from their own sources).

Boxes go into the ``boxes`` column as JSON, ``[{"category": ..., "box":
[xmin, ymin, xmax, ymax]}, ...]`` in the image's own pixel coordinates: the
XML boxes (drawn on the original radiographs) are scaled by the image's size
over the size the XML records; COCO boxes are used for images without an XML
file. ``tb_type`` summarises them: active, latent, uncertain, or a ``+``
of several; empty without boxes.
"""

from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from pathlib import Path

from PIL import Image

from dxlab.datasets.manifest import Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, register_dataset
from dxlab.datasets.tables import find_files
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

CLASSES = ("healthy", "sick_but_non_tb", "tb")
FOLDERS = {"health": "healthy", "sick": "sick_but_non_tb", "tb": "tb"}
LISTS = {"TBX11K_train.txt": "train", "TBX11K_val.txt": "val"}
LAYOUT = "imgs/{health,sick,tb}/*.png, lists/TBX11K_train.txt and TBX11K_val.txt, optional annotations/xml or annotations/json"
TB_TYPES = {"ActiveTuberculosis": "active", "ObsoletePulmonaryTuberculosis": "latent", "PulmonaryTuberculosis": "uncertain"}

#: (category, [xmin, ymin, xmax, ymax]) boxes with the (width, height) their coordinates refer to
Boxes = tuple[tuple[float, float] | None, list[tuple[str, list[float]]]]

CITATION = (
    "Liu Y, Wu YH, Ban Y, Wang H, Cheng MM. Rethinking computer-aided tuberculosis diagnosis. "
    "IEEE/CVF Conference on Computer Vision and Pattern Recognition (CVPR), 2020, pp. 2646-2655. "
    "Liu Y, Wu YH, Zhang SC, Liu L, Wu M, Cheng MM. Revisiting computer-aided tuberculosis diagnosis. "
    "IEEE Transactions on Pattern Analysis and Machine Intelligence, 2023."
)
HOMEPAGE = "https://mmcheng.net/tb/"


def find_base(root: Path) -> Path:
    """The folder holding ``imgs/`` and ``lists/`` (``root`` itself or one below it)."""
    for base in (root, root / "TBX11K"):
        if (base / "lists" / "TBX11K_train.txt").is_file() and (base / "imgs").is_dir():
            return base
    found = find_files(root, r"TBX11K_train\.txt")
    if "TBX11K_train.txt" not in found:
        raise DatasetError(f"lists/TBX11K_train.txt not found below the folder (expected the official TBX11K layout: {LAYOUT})", root)
    base = found["TBX11K_train.txt"].parent.parent
    if not (base / "imgs").is_dir():
        raise DatasetError(f"no imgs/ folder beside lists/ (expected the official TBX11K layout: {LAYOUT})", base)
    return base


def read_list(path: Path) -> list[str]:
    """The image paths (relative to ``imgs/``) an official list names, in order."""
    if not path.is_file():
        raise DatasetError("official image list not found", path)
    entries = [ln.split()[0].replace("\\", "/") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    return [e[len("imgs/"):] if e.startswith("imgs/") else e for e in entries]


def read_voc(path: Path) -> Boxes:
    """Boxes from a Pascal VOC XML file, with the image size the file records."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"malformed XML annotation: {exc}", path) from exc
    size = root.find("size")
    ref = None
    if size is not None and size.findtext("width") and size.findtext("height"):
        ref = (float(size.findtext("width")), float(size.findtext("height")))
    boxes = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        try:
            coords = [float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")]
        except (AttributeError, TypeError, ValueError):
            raise DatasetError("an <object> lacks a numeric <bndbox> xmin/ymin/xmax/ymax", path) from None
        boxes.append(((obj.findtext("name") or "").strip(), coords))
    return ref, boxes


def read_coco(folder: Path) -> dict[str, Boxes]:
    """Boxes from every COCO JSON file in ``folder``, by image path relative to ``imgs/``."""
    out: dict[str, Boxes] = {}
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else ():
        try:
            coco = json.loads(path.read_text(encoding="utf-8"))
            names = {c["id"]: c["name"] for c in coco.get("categories", [])}
            images = {im["id"]: im for im in coco["images"]}
            per_image: dict[str, Boxes] = {}
            for im in images.values():
                ref = (float(im["width"]), float(im["height"])) if im.get("width") and im.get("height") else None
                per_image[im["file_name"]] = (ref, [])
            for ann in coco.get("annotations", []):
                x, y, w, h = (float(v) for v in ann["bbox"])
                per_image[images[ann["image_id"]]["file_name"]][1].append((names.get(ann["category_id"], ""), [x, y, x + w, y + h]))
        except (ValueError, KeyError, TypeError) as exc:
            raise DatasetError(f"malformed COCO annotation file: {exc!r}", path) from exc
        for name, boxes in per_image.items():
            out.setdefault(name, boxes)  # the same image in several files carries the same boxes
    return out


def _scaled(boxes: Boxes, image: Path) -> list[dict[str, object]]:
    ref, items = boxes
    if not items:
        return []
    sx = sy = 1.0
    if ref is not None:
        try:
            with Image.open(image) as img:
                sx, sy = img.width / ref[0], img.height / ref[1]
        except OSError as exc:
            raise DatasetError(f"unreadable image (its size is needed to scale its boxes): {exc}", image) from exc
    return [
        {"category": cat, "box": [round(x0 * sx, 2), round(y0 * sy, 2), round(x1 * sx, 2), round(y1 * sy, 2)]}
        for cat, (x0, y0, x1, y1) in items
    ]


def load_tbx11k(root: Path) -> Manifest:
    root = Path(root)
    base = find_base(root)
    imgs = base / "imgs"
    xml_dir = base / "annotations" / "xml"
    lists = {name: read_list(base / "lists" / name) for name in LISTS}
    coco = read_coco(base / "annotations" / "json")
    rows = []
    seen: dict[str, str] = {}
    for list_name, entries in lists.items():
        list_path, split = base / "lists" / list_name, LISTS[list_name]
        for entry in entries:
            folder = entry.split("/", 1)[0]
            if folder not in FOLDERS:
                raise DatasetError(f"{entry!r} is not in one of the labelled folders {', '.join(FOLDERS)}", list_path)
            if entry in seen:
                raise DatasetError(f"{entry!r} is listed in both {seen[entry]} and {list_name}", list_path)
            seen[entry] = list_name
            image = imgs / entry
            if not image.is_file():
                raise DatasetError(f"image {entry!r} listed in {list_name} is missing under {imgs}", list_path)
            xml = xml_dir / f"{Path(entry).stem}.xml"
            boxes = _scaled(read_voc(xml) if xml.is_file() else coco.get(entry, (None, [])), image)
            rows.append({
                "path": image.relative_to(root).as_posix(),
                "label": FOLDERS[folder],
                "patient_id": Path(entry).stem,
                "split": split,
                "tb_type": "+".join(sorted({TB_TYPES.get(b["category"], b["category"]) for b in boxes})),
                "boxes": json.dumps(boxes, separators=(",", ":")),
            })
    unboxed = [r["patient_id"] for r in rows if r["label"] == "tb" and r["boxes"] == "[]"]
    if unboxed:
        log.info("TBX11K: %d TB image(s) have no boxes (the release has one, tb1199): %s", len(unboxed), ", ".join(unboxed[:5]))
    return build_manifest(rows, dataset="tbx11k", task="tb_cxr", classes=CLASSES, root=root, group_kind="image")


register_dataset(DatasetSpec(
    name="tbx11k",
    title="TBX11K tuberculosis chest X-rays with TB area boxes",
    task="tb_cxr",
    modality="CR/DR chest X-ray, PA (PNG, 512x512)",
    classes=CLASSES,
    licence="research use with citation of the papers (the authors' page states no licence; Dataset Ninja lists CC BY 4.0)",
    citation=CITATION,
    homepage=HOMEPAGE,
    loader=load_tbx11k,
    access="manual",
    access_note=(
        "the authors share TBX11K through Google Drive and Baidu Yunpan links without a published "
        "checksum, so dxlab cannot download or verify it"
    ),
    group_kind="image",
    official_split=True,
    layout=LAYOUT,
    description=(
        "8,400 labelled chest X-rays from the official train (6,600) and val (1,800) lists: 3,800 healthy, "
        "3,800 sick but non-TB, 800 TB with boxes of active/latent TB areas. The official test set's labels "
        "are withheld, so it is left out: hold out part of train, or report on val. No patient ids are "
        "published: each image is its own group."
    ),
))
