"""Decoding the encoded images a client sends (PNG, JPEG, TIFF, PGM or DICOM), with limits.

The pixel count is checked from the header before any pixel is decoded, so a
small file that claims a huge image (a decompression bomb) is refused without
allocating it: Pillow's header for PNG/JPEG/TIFF, Rows x Columns x frames for
DICOM. Everything else (corrupt, truncated, not an image, a DICOM without pixel
data) is :mod:`dxlab.datasets`' decoding with its messages, re-raised as a
:class:`~dxlab.serving.engine.BadInputError` (HTTP 400).
"""

from __future__ import annotations

import io
import warnings

import numpy as np

from dxlab.datasets.dicom import read_any, read_dicom_meta
from dxlab.datasets.images import MAX_PIXELS
from dxlab.errors import DatasetError, ServingError

#: Pillow's signatures of the formats read_image reads (DICOM has "DICM" at byte 128)
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"P2", b"P5", b"P3", b"P6", b"BM")


class ImageTooLargeError(ServingError):
    """An image whose header claims more pixels than the service accepts (HTTP 413)."""

    status = 413


class UndecodableImageError(ServingError):
    """Bytes that are no readable image: corrupt, truncated, unsupported, or a DICOM without pixels (HTTP 400)."""

    status = 400


def decode_image(data: bytes, *, name: str = "image", max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Encoded image bytes -> dxlab's float image ((H, W) grey or (H, W, 3), values in [0, 1]).

    ``max_pixels`` is capped at :data:`dxlab.datasets.images.MAX_PIXELS`.
    """
    limit = min(int(max_pixels), MAX_PIXELS)
    if not data:
        raise UndecodableImageError(f"{name}: empty (0 bytes); expected an encoded PNG, JPEG or DICOM image")
    pixels = _claimed_pixels(data, name)
    if pixels is not None and pixels > limit:
        raise ImageTooLargeError(f"{name}: the image claims {pixels} pixels; the limit is {limit}")
    try:
        return read_any(data, name=name)
    except DatasetError as exc:
        raise UndecodableImageError(str(exc)) from None


def _claimed_pixels(data: bytes, name: str) -> int | None:
    """The pixel count a header claims, read without decoding pixels; None when unknown."""
    if data[:16].startswith(_IMAGE_MAGIC):
        from PIL import Image

        try:
            with warnings.catch_warnings():
                # the size is compared below; Pillow's own bomb warning would only repeat it
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(data)) as img:
                    return int(img.width) * int(img.height) * max(1, int(getattr(img, "n_frames", 1)))
        except Image.DecompressionBombError as exc:
            raise ImageTooLargeError(f"{name}: refused as a possible decompression bomb: {exc}") from None
        except Exception:  # noqa: BLE001 - any header Pillow cannot read is refused by the decoder with its message
            return None
    try:
        meta = read_dicom_meta(data)
    except DatasetError:
        return None
    return int(meta.rows) * int(meta.columns) * max(1, int(meta.frames))
