"""DICOM to model-ready tensor: dxlab's ingest path against a naive per-file pydicom + Pillow loop.

Both paths turn every DICOM file of a folder (default ``../shared/data/dicom``,
relative to the repository root) into a grey ``torch.float32`` tensor of
shape ``(N, 1, size, size)``:

- **naive** (the baseline a user would write): for each file, ``pydicom.dcmread``,
  ``pixel_array``, ``apply_modality_lut``, ``apply_voi_lut``, MONOCHROME1
  inversion, min-max scaling, Pillow bilinear resize; no cache, one process;
- **dxlab**: :func:`dxlab.datasets.cache.load_many` with
  :func:`~dxlab.datasets.cache.load_resized` (``read_dicom``'s LUT pipeline), the
  decoded-image cache (keyed by file SHA-256) and a process pool for the misses.

Each is timed on a first pass (dxlab's cache empty: a fresh folder per
repeat) and a second pass (dxlab's cache warm; the naive loop has nothing to
reuse). Files are read once beforehand so that the OS page cache favours
neither. The median over ``--repeat`` runs is reported, with the ratio
naive/dxlab (above 1: dxlab is faster).

    .venv/bin/python benchmarks/ingest.py [--data DIR] [--size 224] [--workers N] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "dicom"


def naive_load(path: Path, size: int) -> np.ndarray:
    """What a user writes with pydicom and Pillow alone."""
    import pydicom
    from PIL import Image
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    ds = pydicom.dcmread(path, force=True)
    if "TransferSyntaxUID" not in ds.file_meta:  # files without file meta; the error tells the user to do this
        ds.file_meta.TransferSyntaxUID = pydicom.uid.ImplicitVRLittleEndian
    arr = apply_modality_lut(ds.pixel_array, ds)
    arr = apply_voi_lut(arr, ds, prefer_lut=True).astype(np.float32)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        arr = arr.max() - arr
    arr = (arr - arr.min()) / max(float(arr.max() - arr.min()), 1e-6)
    return np.asarray(Image.fromarray(arr, mode="F").resize((size, size), Image.BILINEAR))


def run_naive(files: list[Path], size: int):
    import torch

    return torch.from_numpy(np.stack([naive_load(p, size) for p in files]))[:, None]


def run_dxlab(files: list[Path], size: int, cache, workers: int):
    import torch

    from dxlab.datasets.cache import load_many, load_resized

    arrays = load_many(files, load_resized, {"size": size}, cache=cache, workers=workers)
    return torch.from_numpy(np.stack(arrays))[:, None]


def timed(fn, *args) -> tuple[float, object]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help=f"folder of DICOM files (default: {DEFAULT_DATA})")
    parser.add_argument("--size", type=int, default=224, help="output side in pixels (default: 224)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="decode processes for dxlab (default: all CPUs)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement; the median is reported (default: 3)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)

    import logging
    import warnings

    # The samples hold a few invalid UIDs and one deliberately mislabelled MONOCHROME1 file: their
    # warnings, printed on every pass, are not what is measured.
    logging.getLogger("pydicom").setLevel(logging.ERROR)
    logging.getLogger("dxlab.datasets.dicom").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module="pydicom")

    from dxlab.datasets.cache import ImageCache
    from dxlab.datasets.dicom import looks_like_dicom

    if not args.data.is_dir():
        print(f"benchmarks/ingest.py: no DICOM folder at {args.data} (pass --data DIR)", file=sys.stderr)
        return 2
    files = sorted(p for p in args.data.iterdir() if p.is_file() and looks_like_dicom(p))
    if not files:
        print(f"benchmarks/ingest.py: no DICOM files in {args.data}", file=sys.stderr)
        return 2
    total_mb = sum(p.stat().st_size for p in files) / 1e6
    for p in files:  # warm the OS page cache for both contenders
        p.read_bytes()

    times = {k: [] for k in ("naive_pass1", "naive_pass2", "dxlab_pass1", "dxlab_pass2")}
    shapes = set()
    for _ in range(args.repeat):
        t, out = timed(run_naive, files, args.size)
        times["naive_pass1"].append(t)
        t, _ = timed(run_naive, files, args.size)
        times["naive_pass2"].append(t)
        shapes.add(tuple(out.shape))
        with tempfile.TemporaryDirectory(prefix="dxlab-ingest-cache-") as tmp:
            cache = ImageCache(tmp)
            t, out = timed(run_dxlab, files, args.size, cache, args.workers)
            times["dxlab_pass1"].append(t)
            t, _ = timed(run_dxlab, files, args.size, cache, args.workers)
            times["dxlab_pass2"].append(t)
            shapes.add(tuple(out.shape))
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "files": len(files),
        "megabytes": round(total_mb, 1),
        "size": args.size,
        "workers": args.workers,
        "repeat": args.repeat,
        "cpus": os.cpu_count(),
        "tensor_shape": sorted(shapes)[0] if len(shapes) == 1 else sorted(shapes),
        "seconds": {k: round(v, 4) for k, v in med.items()},
        "images_per_second": {k: round(len(files) / v, 1) for k, v in med.items()},
        "speedup_pass1": round(med["naive_pass1"] / med["dxlab_pass1"], 2),
        "speedup_pass2": round(med["naive_pass2"] / med["dxlab_pass2"], 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"DICOM -> (N, 1, {args.size}, {args.size}) float tensor: {len(files)} files, {total_mb:.1f} MB, "
          f"{args.workers} worker(s) on {os.cpu_count()} CPUs, median of {args.repeat}")
    print(f"{'pass':<8}{'naive s':>10}{'dxlab s':>10}{'naive img/s':>13}{'dxlab img/s':>13}{'speedup':>9}")
    for n in ("1", "2"):
        a, b = med[f"naive_pass{n}"], med[f"dxlab_pass{n}"]
        print(f"{'pass ' + n:<8}{a:>10.3f}{b:>10.3f}{len(files) / a:>13.1f}{len(files) / b:>13.1f}{a / b:>8.1f}x")
    print("pass 1: dxlab's cache empty (decode in the process pool); pass 2: cache warm. Target: >= 2x on pass 2.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
