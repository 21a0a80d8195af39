"""Deterministic synthetic data sets for tests, teaching and the offline demo.

Each generator writes files in the on-disk layout of a real public set, so the
same loader code that reads the real set reads the synthetic one:

| task               | written like            | loader                 |
|--------------------|-------------------------|------------------------|
| ``tb_cxr``         | NLM Shenzhen/Montgomery (``CHNCXR_0001_1.png`` + ClinicalReadings) | ``nlm_tb`` |
| ``dermatology``    | HAM10000 (metadata CSV + ``ISIC_*.jpg``) | ``ham10000``  |
| ``cancer_breast_us`` | MedMNIST BreastMNIST (``.npz``) | ``breastmnist``       |

The images are drawn, not sampled from patients: chest radiograph-like images
with TB-like upper-lobe opacities and cavities for the positive class;
skin-lesion-like images whose colour, border and texture differ by class;
breast ultrasound-like speckle images with a round, smooth (benign) or an
irregular, shadowing (malignant) mass. A small CNN learns each in a few epochs.

Every folder written here holds a ``DXLAB_SYNTHETIC`` marker file and a
README; manifests built from it are flagged ``synthetic`` and their data set
name starts with ``synthetic_``, so synthetic data is labelled wherever it shows.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from dxlab.datasets.manifest import SYNTHETIC_MARKER, Manifest
from dxlab.datasets.registry import get_dataset
from dxlab.datasets.splits import split_manifest
from dxlab.errors import DatasetError

_NOTICE = (
    "SYNTHETIC DATA written by dxlab ({task}, n={n}, seed={seed}).\n"
    "These images were drawn by a program; they show no patient and must never be used\n"
    "to judge a model's clinical performance. They exist for tests, teaching and demos.\n"
)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    return y, x


def _blur(img: np.ndarray, passes: int = 2) -> np.ndarray:
    for _ in range(passes):
        img = (img + np.roll(img, 1, 0) + np.roll(img, -1, 0) + np.roll(img, 1, 1) + np.roll(img, -1, 1)) / 5.0
    return img


def _to_uint8(img: np.ndarray) -> np.ndarray:
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# -- chest X-ray ---------------------------------------------------------------
def draw_cxr(rng: np.random.Generator, size: int, tb: bool) -> np.ndarray:
    """A grey chest radiograph-like image; ``tb`` adds upper-lobe opacities."""
    y, x = _grid(size)
    shift = rng.normal(0, 0.02, 2)
    body = np.exp(-(((x - 0.5 - shift[0]) / 0.46) ** 6 + ((y - 0.55) / 0.6) ** 6))
    img = 0.15 + 0.55 * body
    lungs = np.zeros_like(img)
    for side in (-1, 1):
        cx = 0.5 + side * rng.uniform(0.17, 0.2) + shift[0]
        cy = 0.48 + shift[1]
        lungs += np.exp(-(((x - cx) / rng.uniform(0.13, 0.15)) ** 2 + ((y - cy) / rng.uniform(0.26, 0.3)) ** 2) ** 2)
    img -= 0.38 * np.clip(lungs, 0, 1)
    spine = np.exp(-(((x - 0.5 - shift[0]) / 0.035) ** 2)) * (y > 0.1)
    img += 0.25 * spine
    ribs = 0.5 + 0.5 * np.sin((y * rng.uniform(20, 24) + 3.0 * np.abs(x - 0.5)) * np.pi)
    img += 0.05 * ribs * np.clip(lungs, 0, 1)
    heart_x = 0.55 + shift[0]
    img += 0.2 * np.exp(-(((x - heart_x) / 0.12) ** 2 + ((y - 0.68) / 0.1) ** 2))
    if tb:
        for _ in range(rng.integers(3, 6)):
            side = rng.choice([-1, 1])
            cx = 0.5 + side * rng.uniform(0.12, 0.24) + shift[0]
            cy = rng.uniform(0.25, 0.42)  # upper zones
            r = rng.uniform(0.03, 0.07)
            blob = np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * r * r)))
            img += rng.uniform(0.25, 0.4) * blob
            if rng.random() < 0.4:  # a cavity: a dark centre in the opacity
                img -= 0.15 * np.exp(-(((x - cx) ** 2 + (y - cy) ** 2) / (2 * (r / 2.5) ** 2)))
    img += rng.normal(0, 0.02, img.shape)
    return _blur(img, 1)


def synth_tb_cxr(out: Path, n: int, seed: int, size: int) -> str:
    """NLM layout: ``CXR_png/{CHNCXR,MCUCXR}_NNNN_L.png`` + ``ClinicalReadings``."""
    rng = np.random.default_rng(seed)
    (out / "CXR_png").mkdir(parents=True, exist_ok=True)
    (out / "ClinicalReadings").mkdir(exist_ok=True)
    for i in range(n):
        tb = i % 2 == 1
        prefix = "CHNCXR" if i % 3 else "MCUCXR"
        name = f"{prefix}_{i + 1:04d}_{int(tb)}"
        Image.fromarray(_to_uint8(draw_cxr(rng, size, tb))).save(out / "CXR_png" / f"{name}.png")
        sex = "male" if rng.random() < 0.6 else "female"
        age = int(rng.integers(18, 80))
        finding = "upper lobe opacities (synthetic)" if tb else "normal"
        if prefix == "MCUCXR":
            text = f"Patient's Sex: {sex[0].upper()}\nPatient's Age: {age:03d}Y\n{finding}\n"
        else:
            text = f"{sex} {age}yrs\n{finding}\n"
        (out / "ClinicalReadings" / f"{name}.txt").write_text(text)
    return "nlm_tb"


# -- dermatology ---------------------------------------------------------------
#: per class: lesion RGB colour, border irregularity, colour variegation, radius
_DERM = {
    "akiec": ((0.75, 0.42, 0.38), 0.25, 0.10, 0.22),
    "bcc": ((0.85, 0.62, 0.62), 0.10, 0.05, 0.20),
    "bkl": ((0.55, 0.42, 0.28), 0.15, 0.08, 0.25),
    "df": ((0.50, 0.32, 0.22), 0.05, 0.02, 0.13),
    "mel": ((0.22, 0.12, 0.10), 0.45, 0.30, 0.28),
    "nv": ((0.45, 0.28, 0.18), 0.02, 0.03, 0.20),
    "vasc": ((0.62, 0.12, 0.28), 0.08, 0.05, 0.16),
}
HAM_CLASSES = tuple(_DERM)


def draw_skin_lesion(rng: np.random.Generator, size: int, dx: str) -> np.ndarray:
    """An RGB dermoscopy-like image of a lesion of class ``dx``."""
    colour, irregular, variegation, radius = _DERM[dx]
    y, x = _grid(size)
    skin = np.array([0.88, 0.70, 0.60]) + rng.normal(0, 0.03, 3)
    img = np.ones((size, size, 3), np.float32) * skin
    cx, cy = 0.5 + rng.normal(0, 0.05, 2)
    theta = np.arctan2(y - cy, x - cx)
    rr = np.hypot(x - cx, y - cy)
    edge = radius * (1 + rng.uniform(0.8, 1.2) * irregular * np.sin(rng.integers(3, 8) * theta + rng.uniform(0, 6))
                     + 0.5 * irregular * np.sin(rng.integers(9, 14) * theta))
    mask = np.clip((edge - rr) / 0.02, 0, 1)[..., None]
    lesion = np.array(colour) + rng.normal(0, 0.02, 3)
    texture = variegation * (np.sin(x * rng.uniform(20, 40)) * np.cos(y * rng.uniform(20, 40)))[..., None]
    lesion_img = np.clip(lesion + texture * np.array([1.0, 0.6, 0.9]), 0, 1)
    img = img * (1 - mask) + lesion_img * mask
    if dx == "df":  # a pale halo around a small dark centre
        img += 0.1 * np.exp(-((rr - radius * 1.4) / 0.03) ** 2)[..., None]
    img += rng.normal(0, 0.015, img.shape)
    return np.clip(img, 0, 1)


def synth_dermatology(out: Path, n: int, seed: int, size: int) -> str:
    """HAM10000 layout: ``HAM10000_metadata.csv`` + ``HAM10000_images_part_1/ISIC_*.jpg``.

    About one lesion in four has a second image, as in HAM10000, so grouping by
    ``lesion_id`` matters.
    """
    rng = np.random.default_rng(seed)
    images = out / "HAM10000_images_part_1"
    images.mkdir(parents=True, exist_ok=True)
    rows, lesion, i = [], 0, 0
    sites = ("back", "trunk", "lower extremity", "upper extremity", "face", "abdomen")
    while i < n:
        dx = HAM_CLASSES[lesion % len(HAM_CLASSES)]
        lesion += 1
        sex, age, site = rng.choice(["male", "female"]), float(rng.integers(4, 18) * 5), rng.choice(sites)
        for _ in range(2 if rng.random() < 0.25 and i + 1 < n else 1):
            image_id = f"ISIC_{9000000 + i:07d}"
            Image.fromarray(_to_uint8(draw_skin_lesion(rng, size, dx))).save(images / f"{image_id}.jpg", quality=92)
            rows.append({"lesion_id": f"HAM_{lesion:07d}", "image_id": image_id, "dx": dx, "dx_type": "synthetic",
                         "age": age, "sex": sex, "localization": site})
            i += 1
    with open(out / "HAM10000_metadata.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return "ham10000"


# -- breast ultrasound -----------------------------------------------------------
def draw_breast_us(rng: np.random.Generator, size: int, malignant: bool) -> np.ndarray:
    """A grey ultrasound-like speckle image with a hypoechoic mass.

    Benign: oval, wider than tall, smooth margin, posterior enhancement.
    Malignant: irregular, spiculated, taller than wide, posterior shadowing.
    """
    y, x = _grid(size)
    layers = 0.45 + 0.15 * np.sin(y * rng.uniform(8, 12) + rng.uniform(0, 6))
    speckle = rng.rayleigh(0.3, (size, size))
    img = _blur(layers * speckle, 1)
    cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.5)
    theta = np.arctan2(y - cy, x - cx)
    r = rng.uniform(0.13, 0.2)
    below = np.clip((y - cy) / 0.5, 0, 1) * np.exp(-(((x - cx) / (r * 1.1)) ** 2))
    if malignant:
        r = r * (1 + 0.3 * np.sin(rng.integers(5, 9) * theta) + 0.15 * np.sin(rng.integers(11, 17) * theta))
        rr = np.hypot((x - cx) / 0.8, y - cy)
        img *= 1 - 0.7 * below  # shadow
    else:
        rr = np.hypot((x - cx) / 1.4, y - cy)
        img *= 1 + 0.6 * below  # enhancement
    mass = np.clip((r - rr) / 0.015, 0, 1)
    img = img * (1 - 0.85 * mass)
    return np.clip(img, 0, 1)


def synth_breast_us(out: Path, n: int, seed: int, size: int) -> str:
    """MedMNIST layout: ``breastmnist.npz`` (or ``breastmnist_<size>.npz``) with official splits."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    labels = (np.arange(n) % 3 != 0).astype(np.uint8)  # MedMNIST: 0 malignant, 1 normal or benign
    images = np.stack([_to_uint8(draw_breast_us(rng, size, lab == 0)) for lab in labels])
    cut1, cut2 = int(n * 0.7), int(n * 0.8)
    arrays = {}
    for split, sl in (("train", slice(0, cut1)), ("val", slice(cut1, cut2)), ("test", slice(cut2, n))):
        arrays[f"{split}_images"] = images[sl]
        arrays[f"{split}_labels"] = labels[sl, None]
    name = "breastmnist.npz" if size == 28 else f"breastmnist_{size}.npz"
    np.savez_compressed(out / name, **arrays)
    return "breastmnist"


#: task -> (generator, default image side)
GENERATORS: dict[str, tuple[Callable[[Path, int, int, int], str], int]] = {
    "tb_cxr": (synth_tb_cxr, 128),
    "dermatology": (synth_dermatology, 64),
    "cancer_breast_us": (synth_breast_us, 28),
}


def synthesize(task: str, out: str | Path, *, n: int = 200, seed: int = 0, size: int | None = None) -> tuple[Manifest, Path]:
    """Write a synthetic data set for ``task`` into ``out`` and build its split manifest.

    Returns the manifest and the path of ``<out>/manifest.csv``. ``out`` must be
    empty or absent: a synthetic set is never mixed into other files.
    """
    if task not in GENERATORS:
        raise DatasetError(f"no synthetic generator for task {task!r}; available: {', '.join(GENERATORS)}")
    generator, default_size = GENERATORS[task]
    size = size or default_size
    if not 16 <= size <= 1024:
        raise DatasetError(f"image size {size} is out of range; expected 16 to 1024 pixels")
    if n < 10:
        raise DatasetError(f"n={n} is too small; expected at least 10 images (every class in every split)")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise DatasetError("output folder is not empty; synthetic data is only written into a new or empty folder", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(_NOTICE.format(task=task, n=n, seed=seed))
    (out / "README.txt").write_text(_NOTICE.format(task=task, n=n, seed=seed))
    dataset = generator(out, n, seed, size)
    manifest = split_manifest(get_dataset(dataset).load(out), seed=seed)
    return manifest, manifest.save(out / "manifest.csv")
