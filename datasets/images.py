"""Decoding image files (PNG, JPEG, TIFF, BMP, PGM/PPM) into float arrays.

The one convention, used everywhere in dxlab:

- the result is a ``numpy.float32`` array, ``(H, W)`` for grey images and
  ``(H, W, 3)`` for colour images (channels last);
- values lie in ``[0, 1]``: stored integers are divided by the largest value
  their bit depth can hold (255 for 8-bit, 65535 for 16-bit), so an image's
  brightness does not depend on its file format;
- an alpha channel is dropped, palette images become RGB, grey-plus-alpha
  becomes grey; 1-bit images become 0.0 / 1.0.

DICOM files are read by :mod:`dxlab.datasets.dicom`, which applies the
modality and VOI LUTs and returns the same convention.
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from dxlab.errors import DatasetError

#: Formats (as Pillow names them) that dxlab decodes.
SUPPORTED_FORMATS = ("PNG", "JPEG", "TIFF", "BMP", "PPM")
#: File suffixes of the supported formats; PGM files are Pillow's "PPM" format.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".pgm", ".ppm")
#: Largest image accepted, in pixels (a decompression bomb guard).
MAX_PIXELS = 120_000_000

_SCALE = {"1": 1.0, "L": 255.0, "P": 255.0, "RGB": 255.0, "RGBA": 255.0, "LA": 255.0, "CMYK": 255.0,
          "I;16": 65535.0, "I;16B": 65535.0, "I;16L": 65535.0, "I;16N": 65535.0}


def read_image(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode an image file, or its bytes, into a float32 array in [0, 1].

    ``name`` is used in error messages when ``source`` is bytes.
    Raises :class:`DatasetError` naming the file for an empty, corrupt,
    truncated, oversized or unsupported image.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    data = _read_bytes(source, label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if img.format not in SUPPORTED_FORMATS:
                    raise DatasetError(
                        f"unsupported image format {img.format!r}; expected one of {', '.join(SUPPORTED_FORMATS)} (DICOM files are read with read_dicom)",
                        label,
                    )
                if img.width * img.height > MAX_PIXELS:
                    raise DatasetError(f"image of {img.width}x{img.height} pixels exceeds the limit of {MAX_PIXELS} pixels", label)
                if getattr(img, "n_frames", 1) > 1:
                    raise DatasetError(f"multi-frame image ({img.n_frames} frames); expected a single image", label)
                img.load()
                return _to_array(img, label)
    except DatasetError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DatasetError(f"rejected as a possible decompression bomb: {exc}", label) from exc
    except UnidentifiedImageError as exc:
        raise DatasetError(f"not a readable image (expected {', '.join(SUPPORTED_FORMATS)})", label) from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DatasetError(f"corrupt or truncated image: {exc}", label) from exc


def _read_bytes(source: str | Path | bytes, label: str) -> bytes:
    if isinstance(source, bytes):
        data = source
    else:
        path = Path(source)
        if not path.is_file():
            raise DatasetError("image file not found", label)
        data = path.read_bytes()
    if not data:
        raise DatasetError("empty file (0 bytes)", label)
    return data


def _to_array(img: Image.Image, label: str) -> np.ndarray:
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
        mode = img.mode
    if mode == "CMYK":
        img, mode = img.convert("RGB"), "RGB"
    if mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise DatasetError("floating-point image holds NaN or infinite values", label)
        lo, hi = float(arr.min()), float(arr.max())
        if lo < 0.0 or hi > 1.0:
            raise DatasetError(f"floating-point image has values in [{lo:g}, {hi:g}]; expected [0, 1]", label)
        return arr
    if mode == "I":
        arr = np.asarray(img)
        # Pillow opens 16-bit PNG/PGM as mode I; values never exceed 16 bits there.
        if arr.min() < 0 or arr.max() > 65535:
            raise DatasetError(f"32-bit integer image with values in [{arr.min()}, {arr.max()}]; expected 8 or 16 bit", label)
        return (arr.astype(np.float32) / 65535.0)
    if mode not in _SCALE:
        raise DatasetError(f"unsupported pixel mode {mode!r}", label)
    arr = np.asarray(img)
    if mode in ("RGBA", "LA"):
        arr = arr[..., :-1]
        if mode == "LA":
            arr = arr[..., 0]
    return arr.astype(np.float32) / np.float32(_SCALE[mode])


def to_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """Return ``image`` with 1 (``(H, W)``) or 3 (``(H, W, 3)``) channels.

    Colour to grey uses the ITU-R BT.601 luma weights, as Pillow does.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if image.ndim == 2:
        return image if channels == 1 else np.repeat(image[..., None], 3, axis=-1)
    if image.ndim == 3 and image.shape[-1] == 3:
        if channels == 3:
            return image
        return (image @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).astype(np.float32)
    raise ValueError(f"expected an (H, W) or (H, W, 3) image, got shape {image.shape}")
