"""MedMNIST v2 / MedMNIST+ npz files: DermaMNIST, BreastMNIST, PathMNIST, PneumoniaMNIST.

Each set is one official npz file, ``<flag>.npz`` (28x28 pixels) or, from
MedMNIST+, ``<flag>_64.npz``, ``<flag>_128.npz``, ``<flag>_224.npz``, directly
in the folder given to the loader. The file holds ``{train,val,test}_images``
(N, H, W) or (N, H, W, 3) uint8 and ``{train,val,test}_labels`` (N, 1); the
official splits are kept.

Every file's MD5 is checked against the one the ``medmnist`` package publishes
(``medmnist/info.py``, version 3.0.2) before anything is read: a file that does
not match is refused with :class:`~dxlab.errors.ChecksumError`. The one
exception is a folder written by dxlab's synthetic generators (it holds the
``DXLAB_SYNTHETIC`` marker, and its manifest is flagged synthetic).

So that downstream code reads image files like for any other set, the loader
writes each image as a PNG into a cache folder beside the npz,
``<npz stem>_png/<split>/<index>.png`` (an existing file with the same bytes
is left alone). MedMNIST publishes no patient ids, so each image is its own
group (``group_kind="image"``): images of one patient may sit in different
official splits, and the loader cannot know.

Class names are the official MedMNIST label dicts (``INFO[flag]["label"]``)
as identifiers: BreastMNIST ``malignant`` / ``benign_or_normal``; DermaMNIST
uses the HAM10000 diagnosis codes (same order as MedMNIST's names), so that it
matches the HAM10000 loader; PathMNIST uses the NCT-CRC-HE classes of
:mod:`~dxlab.datasets.sources.nct_crc`.
"""

from __future__ import annotations

import hashlib
import io
import logging
from functools import partial
from pathlib import Path

import numpy as np

from dxlab.datasets.download import verify_checksum
from dxlab.datasets.manifest import SPLITS, SYNTHETIC_MARKER, Manifest, build_manifest
from dxlab.datasets.registry import DatasetSpec, Source, register_dataset
from dxlab.datasets.sources.nct_crc import CLASSES as NCT_CLASSES
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

#: The MedMNIST+ record (v3); its 28-pixel files are byte-identical to v2's (record 6496656).
ZENODO = "https://zenodo.org/records/10519652/files"
HOMEPAGE = "https://medmnist.com/"
SIZES = (28, 64, 128, 224)

#: Official MD5s from medmnist/info.py (MedMNIST/MedMNIST, version 3.0.2).
OFFICIAL_MD5: dict[str, dict[int, str]] = {
    "breastmnist": {
        28: "750601b1f35ba3300ea97c75c52ff8f6",
        64: "742edef2a1fd1524b2efff4bd7ba9364",
        128: "363e4b3f8d712e9b5de15470a2aaadf1",
        224: "b56378a6eefa9fed602bb16d192d4c8b",
    },
    "dermamnist": {
        28: "0744692d530f8e62ec473284d019b0c7",
        64: "b70a2f5635c6199aeaa28c31d7202e1f",
        128: "2defd784463fa5243564e855ed717de1",
        224: "8974907d8e169bef5f5b96bc506ae45d",
    },
    "pathmnist": {
        28: "a8b06965200029087d5bd730944a56c1",
        64: "55aa9c1e0525abe5a6b9d8343a507616",
        128: "ac42d08fb904d92c244187169d1fd1d9",
        224: "2c51a510bcdc9cf8ddb2af93af1eadec",
    },
    "pneumoniamnist": {
        28: "28209eda62fecd6e6a2d98b1501bb15f",
        64: "8f4eceb4ccffa70c672198ea285246c6",
        128: "05b46931834c231683c68f40c47b2971",
        224: "d6a3c71de1b945ea11211b03746c1fe1",
    },
}

#: Class identifiers in label-index order; the comment gives MedMNIST's own name.
CLASSES: dict[str, tuple[str, ...]] = {
    # 0 "malignant", 1 "normal, benign"
    "breastmnist": ("malignant", "benign_or_normal"),
    # 0 actinic keratoses and intraepithelial carcinoma, 1 basal cell carcinoma,
    # 2 benign keratosis-like lesions, 3 dermatofibroma, 4 melanoma,
    # 5 melanocytic nevi, 6 vascular lesions
    "dermamnist": ("akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"),
    # 0 adipose ... 8 colorectal adenocarcinoma epithelium (NCT-CRC-HE-100K order)
    "pathmnist": NCT_CLASSES,
    # 0 normal, 1 pneumonia
    "pneumoniamnist": ("normal", "pneumonia"),
}


def npz_name(flag: str, size: int = 28) -> str:
    """The official file name: ``breastmnist.npz``, ``breastmnist_224.npz``."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def official_source(flag: str, size: int = 28) -> Source:
    """The Zenodo download of one MedMNIST file with its official MD5."""
    if flag not in OFFICIAL_MD5 or size not in OFFICIAL_MD5[flag]:
        raise DatasetError(
            f"no official MedMNIST file {flag!r} at size {size}; known: {', '.join(OFFICIAL_MD5)} at sizes {', '.join(map(str, SIZES))}"
        )
    name = npz_name(flag, size)
    return Source(url=f"{ZENODO}/{name}?download=1", filename=name, md5=OFFICIAL_MD5[flag][size])


def load_medmnist(root: Path, flag: str, size: int | None = None) -> Manifest:
    """Verify ``<flag>[_<size>].npz`` in ``root``, write its images as PNGs, return the manifest.

    ``size=None`` takes the file that is present (the smallest, when several are).
    """
    root = Path(root)
    npz = _pick_file(root, flag, size)
    size = next(s for s in SIZES if npz.name == npz_name(flag, s))
    if (root / SYNTHETIC_MARKER).is_file():
        # dxlab's own synthetic sets use this layout; they are not the official file, and say so
        log.info("%s: synthetic data (%s marker): the official MD5 is not checked", npz, SYNTHETIC_MARKER)
    else:
        verify_checksum(npz, official_source(flag, size))
    classes = CLASSES[flag]
    cache = root / f"{npz.stem}_png"
    rows: list[dict[str, object]] = []
    with _open_npz(npz) as data:
        for split in SPLITS:
            images, labels = _split_arrays(data, split, npz)
            bad = labels[(labels < 0) | (labels >= len(classes))]
            if bad.size:
                raise DatasetError(f"{split}_labels holds {int(bad[0])}, outside 0..{len(classes) - 1}", npz)
            folder = cache / split
            folder.mkdir(parents=True, exist_ok=True)
            for index, (image, label) in enumerate(zip(images, labels)):
                file = folder / f"{index}.png"
                rows.append({
                    "path": file.relative_to(root).as_posix(),
                    "label": classes[int(label)],
                    "patient_id": f"{flag}-{split}-{index}",
                    "split": split,
                    "sha256": _write_png(image, file),
                    "index": index,
                    "size": size,
                })
    return build_manifest(rows, dataset=flag, task=_TASKS[flag], classes=classes, root=root,
                          group_kind="image", hash_files=False)


def _pick_file(root: Path, flag: str, size: int | None) -> Path:
    if size is not None:
        official_source(flag, size)  # an unknown size fails with the valid ones
        path = root / npz_name(flag, size)
        if not path.is_file():
            raise DatasetError(f"{npz_name(flag, size)} not found; download it from {official_source(flag, size).url}", root)
        return path
    present = [root / npz_name(flag, s) for s in SIZES if (root / npz_name(flag, s)).is_file()]
    if not present:
        names = ", ".join(npz_name(flag, s) for s in SIZES)
        raise DatasetError(f"no MedMNIST file for {flag!r} (expected one of {names}); run: dxlab data fetch {flag}", root)
    if len(present) > 1:
        log.info("%s: several sizes present (%s); loading %s", root, ", ".join(p.name for p in present), present[0].name)
    return present[0]


def _open_npz(path: Path):
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"not a readable npz file: {exc}", path) from exc


def _split_arrays(data, split: str, npz: Path) -> tuple[np.ndarray, np.ndarray]:
    keys = (f"{split}_images", f"{split}_labels")
    missing = [k for k in keys if k not in data.files]
    if missing:
        raise DatasetError(f"npz lacks {', '.join(missing)}; it has {', '.join(data.files)}", npz)
    images, labels = data[keys[0]], data[keys[1]]
    labels = labels.reshape(len(labels), -1)
    if labels.shape[1] != 1 or len(images) != len(labels) or images.ndim not in (3, 4) or images.dtype != np.uint8:
        raise DatasetError(
            f"{split}: expected uint8 images (N, H, W[, 3]) and labels (N, 1), got images {images.shape} {images.dtype} and labels {labels.shape}",
            npz,
        )
    return images, labels[:, 0].astype(np.int64)


def _write_png(image: np.ndarray, path: Path) -> str:
    """Write ``image`` as a PNG unless the same bytes are already there; returns their SHA-256."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")  # uint8 (H, W) is L, (H, W, 3) is RGB
    data = buffer.getvalue()
    if not (path.is_file() and path.stat().st_size == len(data) and path.read_bytes() == data):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)
    return hashlib.sha256(data).hexdigest()


_TASKS = {
    "breastmnist": "cancer_breast_us",
    "dermamnist": "dermatology",
    "pathmnist": "cancer_histology",
    "pneumoniamnist": "pneumonia_cxr",
}
_MEDMNIST_CITATION = (
    "Yang J, Shi R, Wei D, Liu Z, Zhao L, Ke B, Pfister H, Ni B. MedMNIST v2 - A large-scale lightweight "
    "benchmark for 2D and 3D biomedical image classification. Sci Data. 2023;10:41."
)
_ENTRIES = {
    "breastmnist": dict(
        title="BreastMNIST (MedMNIST v2): breast ultrasound",
        modality="US (breast ultrasound), grey",
        licence="CC BY 4.0",
        source_citation="Al-Dhabyani W, Gomaa M, Khaled H, Fahmy A. Dataset of breast ultrasound images. Data Brief. 2020;28:104863.",
        description="780 breast ultrasound images (BUSI) downsized to 28x28 (or 64/128/224); normal and benign merged "
                    "against malignant. Official split 546/78/156.",
    ),
    "dermamnist": dict(
        title="DermaMNIST (MedMNIST v2): dermoscopy",
        modality="dermoscopy, RGB",
        licence="CC BY-NC 4.0 (as medmnist 3.0.2 states for DermaMNIST, following HAM10000)",
        source_citation="Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection of multi-source "
                        "dermatoscopic images of common pigmented skin lesions. Sci Data. 2018;5:180161.",
        description="10,015 HAM10000 images downsized to 28x28 (or 64/128/224), 7 classes. Official split 7007/1003/2005; "
                    "MedMNIST split by image, not by lesion, so one lesion's images can be in several splits.",
    ),
    "pathmnist": dict(
        title="PathMNIST (MedMNIST v2): colorectal histology",
        modality="histology (H&E), RGB",
        licence="CC BY 4.0",
        source_citation="Kather JN, Krisam J, Charoentong P, et al. Predicting survival from colorectal cancer histology "
                        "slides using deep learning: a retrospective multicenter study. PLoS Med. 2019;16(1):e1002730.",
        description="NCT-CRC-HE-100K (train/val 9:1) and CRC-VAL-HE-7K (test) downsized to 28x28 (or 64/128/224), "
                    "9 tissue classes. Official split 89996/10004/7180.",
    ),
    "pneumoniamnist": dict(
        title="PneumoniaMNIST (MedMNIST v2): paediatric chest X-ray",
        modality="CR (paediatric chest X-ray), grey",
        licence="CC BY 4.0",
        source_citation="Kermany DS, Goldbaum M, Cai W, et al. Identifying medical diagnoses and treatable diseases by "
                        "image-based deep learning. Cell. 2018;172(5):1122-1131.",
        description="5,856 paediatric chest X-rays downsized to 28x28 (or 64/128/224), normal vs pneumonia. "
                    "Official split 4708/524/624.",
    ),
}

for _flag, _entry in _ENTRIES.items():
    register_dataset(DatasetSpec(
        name=_flag,
        title=_entry["title"],
        task=_TASKS[_flag],
        modality=_entry["modality"],
        classes=CLASSES[_flag],
        licence=_entry["licence"],
        citation=f"{_MEDMNIST_CITATION} Source data: {_entry['source_citation']}",
        homepage=HOMEPAGE,
        loader=partial(load_medmnist, flag=_flag),
        access="open",
        sources=(official_source(_flag, 28),),
        group_kind="image",
        official_split=True,
        description=_entry["description"] + " No patient ids are published: each image is its own group.",
        layout=f"{npz_name(_flag)} (or {npz_name(_flag, 64)} / _128 / _224 from MedMNIST+) directly in the folder; "
               f"PNGs are written to {_flag}_png/<split>/<index>.png beside it",
    ))
