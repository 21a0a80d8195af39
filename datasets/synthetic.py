"""Deterministic synthetic data sets for tests, teaching and the offline demo.

Each generator writes files in the on-disk layout of a real public set, so the
same loader code that reads the real set reads the synthetic one:

| task               | written like            | loader                 |
|--------------------|-------------------------|------------------------|
| ``tb_cxr``         | NLM Shenzhen/Montgomery (``CHNCXR_0001_1.png`` + ClinicalReadings) | ``nlm_tb`` |
| ``dermatology``    | HAM10000 (metadata CSV + ``ISIC_*.jpg``) | ``ham10000``  |
| ``cancer_breast_us`` | MedMNIST BreastMNIST (``.npz``) | ``breastmnist``       |
| ``cancer_histology`` | NCT-CRC-HE-100K (``<CODE>/<CODE>-*.tif``) | ``nct_crc``   |
| ``cancer_mammography`` | mini-MIAS (``mdbNNN.pgm`` + ``Info.txt``) | ``mini_mias`` |

The images are drawn, not sampled from patients: chest radiograph-like images
with TB-like upper-lobe opacities and cavities for the positive class;
skin-lesion-like images whose colour, border and texture differ by class;
breast ultrasound-like speckle images with a round, smooth (benign) or an
irregular, shadowing (malignant) mass; H&E-like colorectal tissue patches of
the nine NCT-CRC-HE classes (fat, glass, debris, lymphocytes, mucus, muscle,
normal crypts, stroma, tumour glands), stained by Beer-Lambert mixing of
haematoxylin and eosin; MLO mammogram-like images with a pectoral muscle and
fibroglandular texture, normal, with a round well-defined (benign) mass, or
with a spiculated mass and/or a microcalcification cluster (malignant). A
small CNN learns each in a few epochs.

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
from dxlab.datasets.sources.mini_mias import CLASSES as MIAS_CLASSES
from dxlab.datasets.sources.mini_mias import SIZE as MIAS_SIZE
from dxlab.datasets.sources.nct_crc import CODES as NCT_CODES
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


def _noise(rng: np.random.Generator, size: int, passes: int) -> np.ndarray:
    """Smooth random texture of unit standard deviation; more ``passes``, coarser grain."""
    noise = _blur(rng.normal(0, 1, (size, size)), passes)
    return noise / (noise.std() + 1e-8)


def _ellipses(y: np.ndarray, x: np.ndarray, centres: np.ndarray, long: np.ndarray, short: np.ndarray | None = None,
              angle: np.ndarray | None = None, weight: np.ndarray | None = None, px: float = 0.02) -> np.ndarray:
    """The brightest of soft-edged ellipses (semi-axes ``long`` x ``short``, rotated by ``angle``) times ``weight``.

    Edges are ``px`` (one pixel) wide, so a cell smaller than a pixel still
    shows, fainter.
    """
    k = len(centres)
    short = long if short is None else short
    angle = np.zeros(k) if angle is None else angle
    weight = np.ones(k) if weight is None else weight
    out = np.zeros_like(x)
    for start in range(0, k, 64):  # in chunks, to bound memory at large sizes
        sl = slice(start, start + 64)
        dy, dx = y[None] - centres[sl, 0, None, None], x[None] - centres[sl, 1, None, None]
        c, s = np.cos(angle[sl])[:, None, None], np.sin(angle[sl])[:, None, None]
        d = np.hypot((dx * c + dy * s) / long[sl, None, None], (dy * c - dx * s) / short[sl, None, None])
        disc = np.clip((1 - d) * short[sl, None, None] / px + 0.5, 0, 1) * weight[sl, None, None]
        out = np.maximum(out, disc.max(0))
    return out


def _spaced_points(rng: np.random.Generator, k: int, gap: float) -> np.ndarray:
    """Up to ``k`` points in and around the unit square, no two closer than ``gap``, as ``(y, x)`` rows."""
    points: list[np.ndarray] = []
    for p in rng.uniform(-0.15, 1.15, (k * 20, 2)):
        if all(np.hypot(*(p - q)) >= gap for q in points):
            points.append(p)
            if len(points) == k:
                break
    return np.array(points)


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


# -- colorectal histology ----------------------------------------------------------
#: optical density per unit of stain, RGB: haematoxylin (nuclei, purple) and eosin (cytoplasm, fibres, pink);
#: near Ruifrok & Johnston's vectors, eosin tilted to blue for the pink of scanned H&E
_HAEMATOXYLIN = np.array([0.65, 0.70, 0.29])
_EOSIN = np.array([0.10, 0.90, 0.40])


def _adipose(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Large empty fat cells: thin pink membranes between Voronoi cells."""
    seeds = _spaced_points(rng, int(rng.integers(6, 10)), 0.22)
    d = np.sort(np.hypot(y[None] - seeds[:, 0, None, None], x[None] - seeds[:, 1, None, None]), axis=0)
    border = np.exp(-(((d[1] - d[0]) / max(0.025, 1.6 * px)) ** 2))
    return 0.04 + 0.12 * border, 0.03 + 0.6 * border, 0.0


def _background(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Bare glass: near white to light grey, unstained."""
    grey = rng.uniform(0.03, 0.3) + 0.03 * _noise(rng, x.shape[0], 6)
    return np.full_like(x, 0.02), np.full_like(x, 0.02), grey


def _debris(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Necrotic debris: pink fragments of every size and dark nuclear dust on a pale ground."""
    k = rng.integers(15, 30)
    fragments = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.02, 0.07, k), rng.uniform(0.015, 0.05, k),
                          rng.uniform(0, np.pi, k), rng.uniform(0.3, 0.9, k), px)
    k = rng.integers(15, 35)
    dust = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.01, 0.022, k), weight=rng.uniform(1.0, 2.0, k), px=px)
    size = x.shape[0]
    return 0.12 + 0.05 * _noise(rng, size, 2) + dust, 0.12 + 0.05 * _noise(rng, size, 2) + fragments, 0.0


def _lymphocytes(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Sheets of small, round, uniform, dark nuclei with little cytoplasm."""
    k = rng.integers(150, 200)
    nuclei = _ellipses(y, x, rng.uniform(-0.03, 1.03, (k, 2)), rng.uniform(0.024, 0.034, k), weight=rng.uniform(1.6, 2.1, k), px=px)
    return 0.1 + nuclei, 0.25 - 0.15 * (nuclei > 0.5), 0.0


def _mucus(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Pale blue-pink, smooth, wispy mucin with a rare floating cell."""
    size = x.shape[0]
    k = rng.integers(0, 3)
    cells = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.02, 0.03, k), weight=np.full(k, 1.2), px=px)
    h = 0.28 + 0.05 * _noise(rng, size, 3) + 0.05 * _noise(rng, size, 8) + cells
    return h, 0.12 + 0.05 * _noise(rng, size, 8), 0.0


def _smooth_muscle(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Dense pink fibres running one way, with cigar-shaped nuclei along them."""
    theta = rng.uniform(0, np.pi)
    across = -x * np.sin(theta) + y * np.cos(theta)
    fibres = 0.5 + 0.5 * np.cos(across * rng.uniform(35, 50) + 1.5 * _noise(rng, x.shape[0], 4))
    k = rng.integers(8, 14)
    nuclei = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.06, 0.09, k), rng.uniform(0.012, 0.018, k),
                       theta + rng.normal(0, 0.1, k), rng.uniform(1.2, 1.7, k), px)
    return 0.08 + nuclei, 0.5 + 0.3 * fibres, 0.0


def _stroma(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Loose, wavy pink fibres in every direction, white space between, a few spindle nuclei."""
    e = 0.16 + 0.04 * _noise(rng, x.shape[0], 3)
    for _ in range(rng.integers(10, 16)):
        theta, (oy, ox) = rng.uniform(0, np.pi), rng.uniform(0, 1, 2)
        along = (x - ox) * np.cos(theta) + (y - oy) * np.sin(theta)
        across = -(x - ox) * np.sin(theta) + (y - oy) * np.cos(theta)
        wave = rng.uniform(0.01, 0.04) * np.sin(along * rng.uniform(10, 25) + rng.uniform(0, 6))
        width = max(rng.uniform(0.008, 0.016), 0.6 * px)
        e = e + rng.uniform(0.25, 0.5) * np.exp(-(((across - wave) / width) ** 2))
    k = rng.integers(3, 7)
    nuclei = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.04, 0.06, k), rng.uniform(0.01, 0.015, k),
                       rng.uniform(0, np.pi, k), rng.uniform(1.0, 1.4, k), px)
    return 0.05 + nuclei, e, 0.0


def _lobed(theta: np.ndarray, r: float, lobes: tuple) -> np.ndarray:
    """Radius ``r`` at angle ``theta``, made lobulated by two harmonics ``(k1, k2, phase1, phase2, depth1, depth2)``."""
    k1, k2, p1, p2, a1, a2 = lobes
    return r * (1 + a1 * np.sin(k1 * theta + p1) + a2 * np.sin(k2 * theta + p2))


def _glands(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float, centres: np.ndarray, lumen_r: np.ndarray,
            thickness: np.ndarray, irregular: float, crowded: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lumen mask, gland mask (lumen + epithelium) and nuclei of glands around ``centres``.

    A gland's lumen radius varies with angle by ``irregular`` (0: a circle);
    its nuclei are one orderly basal row, or, ``crowded``, stratified and
    pleomorphic through the whole epithelium.
    """
    lumen, gland, nuclei = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    for (cy, cx), r, t in zip(centres, lumen_r, thickness):
        lobes = (rng.integers(2, 4), rng.integers(4, 7), *rng.uniform(0, 2 * np.pi, 2),
                 irregular * rng.uniform(0.5, 1.0), irregular * rng.uniform(0.2, 0.5))
        rr, inner = np.hypot(y - cy, x - cx), _lobed(np.arctan2(y - cy, x - cx), r, lobes)
        lumen = np.maximum(lumen, np.clip((inner - rr) / px + 0.5, 0, 1))
        gland = np.maximum(gland, np.clip((inner + t - rr) / px + 0.5, 0, 1))
        if crowded:
            m = int(2 * np.pi * (r + t / 2) * t / 0.0018)  # enough to fill the epithelium, overlapping
            ang = rng.uniform(0, 2 * np.pi, m)
            depth = _lobed(ang, r, lobes) + rng.uniform(0.15, 0.95, m) * t
            long, short, weight = rng.uniform(0.026, 0.045, m), rng.uniform(0.016, 0.026, m), rng.uniform(1.2, 2.0, m)
        else:
            m = max(6, int(2 * np.pi * (r + 0.75 * t) / 0.04))
            ang = np.arange(m) * 2 * np.pi / m + rng.uniform(0, 1)
            depth = _lobed(ang, r, lobes) + 0.75 * t
            long, short, weight = np.full(m, 0.022), np.full(m, 0.013), np.full(m, 1.6)
        centres_n = np.stack([cy + depth * np.sin(ang), cx + depth * np.cos(ang)], 1)
        tilt = ang + rng.normal(0, 0.3 if crowded else 0.05, m)  # long axes point at the lumen
        nuclei = np.maximum(nuclei, _ellipses(y, x, centres_n, long, short, tilt, weight, px))
    return lumen, gland, nuclei


def _normal_mucosa(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Evenly spaced crypts: round lumens, one row of basal nuclei, goblet cells; lamina propria between."""
    offset = rng.uniform(0, 0.5, 2)
    centres = np.array([(offset[0] + gy * 0.5, offset[1] + gx * 0.5) for gy in range(-1, 2) for gx in range(-1, 2)])
    centres += rng.normal(0, 0.02, centres.shape)
    k = len(centres)
    lumen, gland, nuclei = _glands(rng, y, x, px, centres, rng.uniform(0.06, 0.085, k), rng.uniform(0.08, 0.1, k), 0.04, False)
    epithelium, stroma = gland - lumen, 1 - gland
    k = rng.integers(10, 25)  # lymphocytes and plasma cells of the lamina propria
    cells = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.015, 0.022, k), weight=rng.uniform(1.2, 1.7, k), px=px)
    k = rng.integers(20, 40)  # goblet cells: pale mucin vacuoles in the epithelium
    goblet = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.018, 0.025, k), px=px) * epithelium * (nuclei < 0.3)
    size = x.shape[0]
    h = 0.1 + 0.03 * _noise(rng, size, 2) + cells * stroma + 0.2 * epithelium + nuclei
    e = (0.3 + 0.05 * _noise(rng, size, 2)) * stroma + 0.4 * epithelium
    return h * (1 - 0.7 * goblet) * (1 - lumen) + 0.02 * lumen, e * (1 - 0.8 * goblet) + 0.03 * lumen, 0.0


def _tumour(rng: np.random.Generator, y: np.ndarray, x: np.ndarray, px: float) -> tuple:
    """Crowded, irregular glands of stratified atypical nuclei, dirty necrosis in the lumens."""
    k = rng.integers(3, 6)
    lumen, gland, nuclei = _glands(rng, y, x, px, rng.uniform(0, 1, (k, 2)), rng.uniform(0.07, 0.13, k),
                                   rng.uniform(0.1, 0.16, k), 0.35, True)
    epithelium, stroma = gland - lumen, 1 - gland
    k = rng.integers(8, 20)
    debris = _ellipses(y, x, rng.uniform(0, 1, (k, 2)), rng.uniform(0.012, 0.03, k), weight=rng.uniform(0.4, 1.5, k), px=px) * lumen
    h = 0.12 * stroma + 0.35 * epithelium + nuclei * (1 - lumen) + debris + 0.04 * _noise(rng, x.shape[0], 2)
    e = 0.42 * stroma + 0.3 * epithelium + 0.08 * lumen + 0.5 * debris
    return h, e, 0.0


#: NCT-CRC-HE tissue code -> drawing of its haematoxylin and eosin amounts (and grey, for bare glass)
_TISSUES: dict[str, Callable[..., tuple]] = {
    "ADI": _adipose, "BACK": _background, "DEB": _debris, "LYM": _lymphocytes, "MUC": _mucus,
    "MUS": _smooth_muscle, "NORM": _normal_mucosa, "STR": _stroma, "TUM": _tumour,
}


def draw_histology(rng: np.random.Generator, size: int, code: str) -> np.ndarray:
    """An RGB H&E-like patch of the NCT-CRC-HE tissue class ``code`` (ADI, BACK, ... TUM).

    Each class draws stain amounts per pixel; Beer-Lambert mixing turns them
    into colour, with a per-patch jitter of stain strength as between slides.
    """
    y, x = _grid(size)
    h, e, grey = _TISSUES[code](rng, y, x, 1.0 / (size - 1))
    h_gain, e_gain = rng.uniform(0.85, 1.15, 2)
    od = h[..., None] * _HAEMATOXYLIN * h_gain + e[..., None] * _EOSIN * e_gain + np.asarray(grey)[..., None]
    return np.clip(np.exp(-od) + rng.normal(0, 0.015, od.shape), 0, 1)


def synth_histology(out: Path, n: int, seed: int, size: int) -> str:
    """NCT-CRC-HE-100K layout: ``NCT-CRC-HE-100K/<CODE>/<CODE>-XXXXXXXX.tif`` (RGB TIFF), the nine classes in turn.

    No ``CRC-VAL-HE-7K`` folder is written, so every patch is unsplit and
    ``split_manifest`` cuts train, val and test from them.
    """
    rng = np.random.default_rng(seed)
    for i in range(n):
        code = NCT_CODES[i % len(NCT_CODES)]
        folder = out / "NCT-CRC-HE-100K" / code
        folder.mkdir(parents=True, exist_ok=True)
        patch_id = "".join(chr(65 + i // 26 ** k % 26) for k in reversed(range(8)))  # AAAAAAAA, AAAAAAAB, ...
        Image.fromarray(_to_uint8(draw_histology(rng, size, code))).save(folder / f"{code}-{patch_id}.tif")
    return "nct_crc"


# -- mammography -------------------------------------------------------------------
#: mini-MIAS background tissue -> weight of the fibroglandular texture
_BREAST_DENSITY = {"F": 0.06, "G": 0.1, "D": 0.14}
#: label -> the abnormalities (mini-MIAS classes) an image of that label may show; one set is drawn
_MAMMO_FINDINGS = {"normal": [()], "benign": [("CIRC",)], "malignant": [("SPIC",), ("CALC",), ("SPIC", "CALC")]}


def draw_mammogram(rng: np.random.Generator, size: int, label: str, *, left: bool,
                   tissue: str) -> tuple[np.ndarray, list[tuple[str, float, float, float]]]:
    """A grey MLO mammogram-like image and its lesions as ``(class, x, y, radius)``.

    ``label`` is normal, benign (a round, well-defined mass) or malignant (a
    spiculated mass, a cluster of microcalcifications, or both); ``tissue``
    (F, G or D) sets how much fibroglandular texture there is. The chest wall
    is at the image's left edge for a left breast and at the right edge for a
    right one, with the pectoral muscle in its upper corner. Lesion positions
    and radii are fractions of the image side, y from the top.
    """
    y, x = _grid(size)
    px = 1.0 / (size - 1)
    u = x if left else 1 - x  # distance from the chest wall
    vc, a, b = 0.5 + rng.normal(0, 0.03), rng.uniform(0.55, 0.72), rng.uniform(0.4, 0.47)
    d = np.hypot(u / a, (y - vc) / b)
    breast = np.clip((1 - d) * a / px + 0.5, 0, 1)
    img = (0.22 + 0.2 * np.sqrt(np.clip(1 - d ** 2, 0, 1))) * breast  # thinner, darker towards the skin
    p0, p1 = rng.uniform(0.22, 0.38), rng.uniform(0.45, 0.7)
    pectoral = np.clip((p0 * (1 - y / p1) - u) / px + 0.5, 0, 1)
    img += (0.08 + 0.05 * y) * pectoral * breast
    central = np.exp(-(((u - 0.3 * a) / (0.45 * a)) ** 2 + ((y - vc) / (0.7 * b)) ** 2))
    texture = np.clip(0.5 + 0.35 * _noise(rng, size, max(2, size // 16)) + 0.15 * _noise(rng, size, 1), 0, 1)
    img += _BREAST_DENSITY[tissue] * texture * central * breast * (1 - pectoral)
    lesions = []
    findings = _MAMMO_FINDINGS[label]
    for kind in findings[rng.integers(len(findings))]:
        while True:  # a centre well inside the breast, clear of the pectoral muscle
            cu, cy = rng.uniform(0.15, 0.75) * a, vc + rng.uniform(-0.6, 0.6) * b
            if np.hypot(cu / a, (cy - vc) / b) < 0.75 and cu > p0 * (1 - cy / p1) + 0.08:
                break
        cx = cu if left else 1 - cu
        rr, th = np.hypot(x - cx, y - cy), np.arctan2(y - cy, x - cx)
        if kind == "CIRC":
            r = rng.uniform(0.08, 0.11)
            halo = np.exp(-(((rr - r - 1.5 * px) / (1.2 * px)) ** 2))  # the radiolucent rim of a circumscribed mass
            img += rng.uniform(0.2, 0.25) * np.clip((r - rr) / px + 0.5, 0, 1) - 0.12 * halo
        elif kind == "SPIC":  # an irregular core with thin spicules radiating from it
            core = rng.uniform(0.055, 0.075)
            mass = np.clip((core * (1 + 0.25 * np.sin(rng.integers(3, 6) * th + rng.uniform(0, 6))) - rr) / px + 0.5, 0, 1)
            spicules = np.zeros_like(x)
            for ang in rng.uniform(0, 2 * np.pi, rng.integers(12, 18)):
                length = core * rng.uniform(3.0, 5.0)
                along = (x - cx) * np.cos(ang) + (y - cy) * np.sin(ang)
                across = -(x - cx) * np.sin(ang) + (y - cy) * np.cos(ang)
                width = max(0.004, 0.5 * px) * (1.3 - 0.6 * along / length)
                spicules = np.maximum(spicules, np.exp(-((across / width) ** 2)) * (along > 0) * np.clip(1 - along / length, 0, 1))
            img += rng.uniform(0.55, 0.65) * np.maximum(mass, 0.8 * spicules)
            r = 4 * core
        else:  # CALC: a cluster of tiny bright specks, kept apart so they stay distinct
            r = rng.uniform(0.09, 0.13)
            specks = [(cy, cx)]
            for ang, dist in zip(rng.uniform(0, 2 * np.pi, 60), r * np.sqrt(rng.uniform(0, 1, 60))):
                p = (cy + dist * np.sin(ang), cx + dist * np.cos(ang))
                if all(np.hypot(p[0] - q[0], p[1] - q[1]) > max(0.018, 2.2 * px) for q in specks):
                    specks.append(p)
            sigma = max(0.004, 0.6 * px)
            dots = np.zeros_like(x)
            for sy, sx in specks[: rng.integers(18, 30)]:
                dots = np.maximum(dots, np.exp(-((x - sx) ** 2 + (y - sy) ** 2) / (2 * sigma ** 2)))
            img += rng.uniform(0.6, 0.75) * dots
        lesions.append((kind, float(cx), float(cy), float(r)))
    img += rng.normal(0, 0.015, img.shape) * breast
    return np.clip(img, 0, 1), lesions


def synth_mammography(out: Path, n: int, seed: int, size: int) -> str:
    """mini-MIAS layout: ``mdbNNN.pgm`` + ``Info.txt``, normal, benign and malignant in turn.

    Info.txt gives lesion centres and radii in mini-MIAS's 1024-pixel frame
    with y from the bottom, whatever ``size`` the images are written at.
    Consecutive films (mdb001/mdb002, ...) are one woman's right and left
    breast and share her background tissue.
    """
    rng = np.random.default_rng(seed)
    scale = MIAS_SIZE - 1
    lines = ["REF TISSUE CLASS SEVERITY X Y RADIUS  (synthetic; x, y, radius in the 1024-pixel frame, y from the bottom)"]
    for i in range(n):
        ref = f"mdb{i + 1:03d}"
        if i % 2 == 0:
            tissue = str(rng.choice(list(_BREAST_DENSITY)))
        label = MIAS_CLASSES[i % len(MIAS_CLASSES)]
        image, lesions = draw_mammogram(rng, size, label, left=(i + 1) % 2 == 0, tissue=tissue)
        Image.fromarray(_to_uint8(image)).save(out / f"{ref}.pgm")
        severity = "M" if label == "malignant" else "B"
        if not lesions:
            lines.append(f"{ref} {tissue} NORM")
        for kind, cx, cy, r in lesions:
            lines.append(f"{ref} {tissue} {kind} {severity} {round(cx * scale)} {round((1 - cy) * scale)} {round(r * scale)}")
    (out / "Info.txt").write_text("\n".join(lines) + "\n")
    return "mini_mias"


#: task -> (generator, default image side)
GENERATORS: dict[str, tuple[Callable[[Path, int, int, int], str], int]] = {
    "tb_cxr": (synth_tb_cxr, 128),
    "dermatology": (synth_dermatology, 64),
    "cancer_breast_us": (synth_breast_us, 28),
    "cancer_histology": (synth_histology, 32),
    "cancer_mammography": (synth_mammography, 64),
}
#: task -> most images its layout can name
_MAX_IMAGES = {"cancer_mammography": 999}  # mdb001 ... mdb999


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
    if n > _MAX_IMAGES.get(task, n):
        raise DatasetError(f"n={n} is too large for the {task} layout; it names at most {_MAX_IMAGES[task]} images")
    out = Path(out).expanduser()
    if out.exists() and any(out.iterdir()):
        raise DatasetError("output folder is not empty; synthetic data is only written into a new or empty folder", out)
    out.mkdir(parents=True, exist_ok=True)
    (out / SYNTHETIC_MARKER).write_text(_NOTICE.format(task=task, n=n, seed=seed))
    (out / "README.txt").write_text(_NOTICE.format(task=task, n=n, seed=seed))
    dataset = generator(out, n, seed, size)
    manifest = split_manifest(get_dataset(dataset).load(out), seed=seed)
    return manifest, manifest.save(out / "manifest.csv")
