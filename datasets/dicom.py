"""Reading DICOM files into the float image convention of :mod:`dxlab.datasets.images`.

:func:`read_dicom` turns a DICOM file (or its bytes) into a ``float32`` array
in ``[0, 1]`` plus a :class:`DicomMeta`. The grey-level pipeline follows
PS3.3 C.11 in this order:

1. **Modality LUT**: the Modality LUT Sequence when present, else Rescale
   Slope / Intercept, else the stored values.
2. **VOI LUT**, chosen by ``window``:

   - ``"default"``: the first item of the VOI LUT Sequence when present
     (a LUT is preferred over a window, as pydicom's ``prefer_lut`` does), else
     the first Window Center / Width pair, else no VOI;
   - an ``int``: that item of the VOI LUT Sequence, or that window preset when
     the file has no VOI LUT Sequence;
   - ``(center, width)``: this window, whatever the file says;
   - ``"minmax"``: no VOI, the image's own minimum and maximum;
   - ``None``: no VOI.

3. **Scaling to [0, 1]**, from ranges that the header fixes, never from the
   image content (except ``"minmax"``), so one scanner's images keep one
   brightness scale:

   - after a window: the window's output range (PS3.3 C.11.2.1.2, with the
     ``VOILUTFunction`` LINEAR, LINEAR_EXACT or SIGMOID), which is ``[0, 1]``;
   - after a VOI LUT: ``[0, 2**n - 1]`` where ``n`` is the LUT's bits per
     entry (third value of LUT Descriptor; widened when the LUT data hold larger
     values than ``n`` bits can, a common header error);
   - without VOI: the modality-LUT output range of the stored value range
     (``BitsStored`` and ``PixelRepresentation`` through the rescale or LUT).

4. **MONOCHROME1 inversion** (``1 - x``) after VOI, so that air is dark as in
   MONOCHROME2 images.

Colour images (RGB, YBR_*, PALETTE COLOR) skip steps 1 and 2: they become RGB
scaled by ``2**BitsStored - 1`` and, with ``grey=True`` (the default, as chest
X-ray models want), grey with the BT.601 weights of
:func:`~dxlab.datasets.images.to_channels`.

**Inconsistent headers.** The photometric interpretation in the header is
followed. When a MONOCHROME1 image, after inversion, has corners brighter
than its centre (air outside the body should be dark), a warning is logged and
added to ``DicomMeta.warnings``: the header is probably wrong (as in
``chest_CR_FAKE_MONO1_headeronly_SIIM.dcm``, a MONOCHROME2 image labelled
MONOCHROME1). The pixels are not "corrected" behind the user's back.

Files without preamble or file meta are parsed with ``force=True``; their
transfer syntax is set from the encoding pydicom detected (implicit VR little
endian for the classic ACR-NEMA-style files). Multi-frame images are refused
unless ``allow_multiframe=True``, which returns an ``(F, H, W)`` stack.

:func:`read_any` dispatches on content: DICOM (``DICM`` at byte 128, or a
force-parse for files without it) or PNG/JPEG/TIFF/PGM via
:func:`~dxlab.datasets.images.read_image`. :func:`make_dicom` writes small
DICOM images (for tests, examples and demos).
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np

from dxlab.datasets.images import read_image, to_channels
from dxlab.datasets.tables import age_from_text
from dxlab.errors import DatasetError

log = logging.getLogger(__name__)

#: What ``window`` may be: a preset name, an index, an explicit (center, width), or None.
Window = Union[str, int, tuple[float, float], None]

#: The decoder to install for each compressed transfer syntax (for error messages).
DECODER_HINTS = {
    "1.2.840.10008.1.2.4.50": "Pillow (JPEG baseline)",
    "1.2.840.10008.1.2.4.51": "Pillow or python-gdcm (JPEG extended)",
    "1.2.840.10008.1.2.4.57": "python-gdcm (pip install python-gdcm; JPEG lossless)",
    "1.2.840.10008.1.2.4.70": "python-gdcm (pip install python-gdcm; JPEG lossless)",
    "1.2.840.10008.1.2.4.80": "pyjpegls (pip install pyjpegls) or python-gdcm (JPEG-LS)",
    "1.2.840.10008.1.2.4.81": "pyjpegls (pip install pyjpegls) or python-gdcm (JPEG-LS)",
    "1.2.840.10008.1.2.4.90": "Pillow built with OpenJPEG, or python-gdcm (JPEG 2000)",
    "1.2.840.10008.1.2.4.91": "Pillow built with OpenJPEG, or python-gdcm (JPEG 2000)",
    "1.2.840.10008.1.2.4.201": "pylibjpeg with pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.202": "pylibjpeg with pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.4.203": "pylibjpeg with pylibjpeg-openjpeg (HTJ2K)",
    "1.2.840.10008.1.2.5": "numpy (RLE is decoded by pydicom itself)",
}

#: Decoder plugins to try, in order, per transfer syntax ("" = pydicom's choice among the
#: installed ones). python-gdcm is kept for JPEG lossless, which nothing else here
#: decodes: its bundled OpenJPEG aborts the whole process on a corrupt JPEG 2000
#: stream, so JPEG 2000 goes to Pillow.
_PREFERRED_PLUGINS = {
    "1.2.840.10008.1.2.4.50": ("pillow", "gdcm"),
    "1.2.840.10008.1.2.4.51": ("pillow", "gdcm"),
    "1.2.840.10008.1.2.4.57": ("gdcm",),
    "1.2.840.10008.1.2.4.70": ("gdcm",),
    "1.2.840.10008.1.2.4.80": ("pyjpegls", "gdcm"),
    "1.2.840.10008.1.2.4.81": ("pyjpegls", "gdcm"),
    "1.2.840.10008.1.2.4.90": ("pillow",),
    "1.2.840.10008.1.2.4.91": ("pillow",),
    "1.2.840.10008.1.2.5": ("pydicom",),
}

_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"II*\x00", b"MM\x00*", b"P2", b"P5", b"P3", b"P6")
# Attributes of which at least one must be found for a force-parsed file to count as DICOM.
_CORE_KEYWORDS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Modality", "PatientID", "Rows", "PixelData")


@dataclass(frozen=True)
class DicomMeta:
    """What dxlab keeps from a DICOM header, plus how the pixels were mapped.

    ``age`` is in years (from PatientAge, e.g. ``062Y``); ``pixel_spacing`` is
    (row, column) in mm from Pixel Spacing, else Imager Pixel Spacing; ``voi``
    says which VOI was applied; ``warnings`` lists what looked wrong.
    """

    source: str
    modality: str = ""
    body_part: str = ""
    view_position: str = ""
    laterality: str = ""
    patient_id: str = ""
    study_uid: str = ""
    series_uid: str = ""
    sop_uid: str = ""
    sop_class_uid: str = ""
    sex: str = ""
    age: float | None = None
    pixel_spacing: tuple[float, float] | None = None
    photometric: str = ""
    transfer_syntax: str = ""
    rows: int = 0
    columns: int = 0
    frames: int = 1
    bits_stored: int = 0
    burned_in_annotation: str = ""
    has_pixels: bool = False
    voi: str = ""
    inverted: bool = False
    warnings: tuple[str, ...] = field(default=())

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


# --------------------------------------------------------------------------- opening


def _label(source: str | Path | bytes, name: str | None) -> str:
    return name or ("<bytes>" if isinstance(source, (bytes, bytearray)) else str(source))


def looks_like_dicom(source: str | Path | bytes) -> bool:
    """True when ``source`` (a path or bytes) has the ``DICM`` marker at byte 128,
    or lacks it but is not a known image format and parses as DICOM (the
    marker-less files of old archives; their names often have no suffix)."""
    try:
        head = bytes(source[:132]) if isinstance(source, (bytes, bytearray)) else _head(Path(source))
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    if not head or head.startswith(_IMAGE_MAGIC):
        return False
    try:
        open_dicom(source, header_only=True)
        return True
    except DatasetError:
        return False


def _head(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(132)


def open_dicom(source: str | Path | bytes, *, name: str | None = None, header_only: bool = False):
    """Parse a DICOM file (or bytes) into a pydicom ``Dataset``.

    Files without the ``DICM`` marker are parsed with ``force=True`` and kept
    only when they hold recognisable DICOM attributes. The transfer syntax is
    set when the file meta lacks it. ``header_only`` defers reading large values
    (the pixel data is then not loaded; ``"PixelData" in ds`` still works for
    files on disk).
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    label = _label(source, name)
    if isinstance(source, (bytes, bytearray)):
        data = bytes(source)
        if not data:
            raise DatasetError("empty file (0 bytes); not a DICOM file", label)
        fp: Any = io.BytesIO(data)
        head = data[:132]
    else:
        path = Path(source)
        if not path.is_file():
            raise DatasetError("DICOM file not found", label)
        if path.stat().st_size == 0:
            raise DatasetError("empty file (0 bytes); not a DICOM file", label)
        head = _head(path)
        fp = str(path)
    has_marker = head[128:132] == b"DICM"
    if not has_marker and head.startswith(_IMAGE_MAGIC):
        raise DatasetError("not a DICOM file: it is a PNG/JPEG/TIFF/PGM image (read it with read_image or read_any)", label)
    kwargs: dict[str, Any] = {"force": not has_marker}
    if header_only:
        if isinstance(fp, str):
            kwargs["defer_size"] = "16 KB"
        else:
            kwargs["stop_before_pixels"] = True
    try:
        ds = pydicom.dcmread(fp, **kwargs)
    except InvalidDicomError as exc:
        raise DatasetError(f"not a DICOM file: {exc}", label) from exc
    except Exception as exc:  # pydicom raises many types on garbage; all mean the same here
        what = "corrupt DICOM file" if has_marker else "not a DICOM file (no DICM marker at byte 128, and it does not parse as DICOM)"
        raise DatasetError(f"{what}: {type(exc).__name__}: {exc}", label) from exc
    if not has_marker and not _has_core_attributes(ds):
        raise DatasetError("not a DICOM file (no DICM marker at byte 128, and no DICOM attributes found)", label)
    _ensure_transfer_syntax(ds)
    return ds


def _has_core_attributes(ds) -> bool:
    try:
        return any(kw in ds for kw in _CORE_KEYWORDS)
    except Exception:
        return False


def _ensure_transfer_syntax(ds) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None)
    if meta is None:
        meta = ds.file_meta = FileMetaDataset()
    if meta.get("TransferSyntaxUID"):
        return
    implicit, little = ds.original_encoding
    if implicit is None:  # nothing was decoded; the usual default
        implicit, little = True, True
    meta.TransferSyntaxUID = ImplicitVRLittleEndian if implicit else (ExplicitVRLittleEndian if little else ExplicitVRBigEndian)


# --------------------------------------------------------------------------- metadata


def _text(ds, keyword: str) -> str:
    value = ds.get(keyword, "")
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = "\\".join(str(v) for v in value)
    return str(value).strip()


def _spacing(ds) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        try:
            if value is not None and len(value) == 2:
                row, col = float(value[0]), float(value[1])
                if row > 0 and col > 0:
                    return (row, col)
        except (TypeError, ValueError):
            continue
    return None


def _int(ds, keyword: str, default: int = 0) -> int:
    try:
        return int(ds.get(keyword, default) or default)
    except (TypeError, ValueError):
        return default


def _meta(ds, label: str, **extra: Any) -> DicomMeta:
    age = _text(ds, "PatientAge")
    return DicomMeta(
        source=label,
        modality=_text(ds, "Modality").upper(),
        body_part=_text(ds, "BodyPartExamined").upper(),
        view_position=_text(ds, "ViewPosition").upper(),
        laterality=(_text(ds, "ImageLaterality") or _text(ds, "Laterality")).upper(),
        patient_id=_text(ds, "PatientID"),
        study_uid=_text(ds, "StudyInstanceUID"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        sop_uid=_text(ds, "SOPInstanceUID"),
        sop_class_uid=_text(ds, "SOPClassUID"),
        sex=_text(ds, "PatientSex").upper(),
        age=age_from_text(age) if age else None,
        pixel_spacing=_spacing(ds),
        photometric=_text(ds, "PhotometricInterpretation").upper(),
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        frames=max(1, _int(ds, "NumberOfFrames", 1)),
        bits_stored=_int(ds, "BitsStored"),
        burned_in_annotation=_text(ds, "BurnedInAnnotation").upper(),
        has_pixels=any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")),
        **extra,
    )


def read_dicom_meta(source: str | Path | bytes, *, name: str | None = None) -> DicomMeta:
    """The metadata of a DICOM file without decoding its pixels (fast)."""
    label = _label(source, name)
    return _meta(open_dicom(source, name=name, header_only=True), label)


# --------------------------------------------------------------------------- pixels


def read_dicom(
    source: str | Path | bytes,
    *,
    window: Window = "default",
    allow_multiframe: bool = False,
    grey: bool = True,
    name: str | None = None,
) -> tuple[np.ndarray, DicomMeta]:
    """Decode a DICOM image into a float32 array in [0, 1] plus its metadata.

    See the module docstring for the pipeline and the meaning of ``window``.
    Raises :class:`DatasetError` naming the file when it is not DICOM, has no
    pixel data, uses a transfer syntax no installed decoder handles (the message
    names the package to install), or has pixel data that do not match its
    header; and for multi-frame images unless ``allow_multiframe``.
    """
    label = _label(source, name)
    ds = open_dicom(source, name=name)
    return _decode(ds, label, window=window, allow_multiframe=allow_multiframe, grey=grey)


def _decode(ds, label: str, *, window: Window, allow_multiframe: bool, grey: bool) -> tuple[np.ndarray, DicomMeta]:
    if "PixelData" not in ds:
        other = [k for k in ("FloatPixelData", "DoubleFloatPixelData") if k in ds]
        if other:
            raise DatasetError(f"{other[0]} (float pixel data) is not supported; expected integer Pixel Data (7FE0,0010)", label)
        raise DatasetError("no pixel data (7FE0,0010): not an image (a report, structured report or presentation state?)", label)
    frames = max(1, _int(ds, "NumberOfFrames", 1))
    if frames > 1 and not allow_multiframe:
        raise DatasetError(f"multi-frame image ({frames} frames); pass allow_multiframe=True to read it as a stack", label)
    for keyword in ("Rows", "Columns", "BitsAllocated", "PhotometricInterpretation"):
        if keyword not in ds:
            raise DatasetError(f"pixel data present but the header lacks {keyword}, needed to decode it", label)
    stored = _pixel_array(ds, label)
    photometric = _text(ds, "PhotometricInterpretation").upper()
    spp = _int(ds, "SamplesPerPixel", 1)
    warnings_: list[str] = []
    if spp == 3 or photometric in ("PALETTE COLOR",):
        image, voi = _colour(ds, stored, label, grey=grey), "none (colour)"
        inverted = False
    else:
        if photometric not in ("MONOCHROME1", "MONOCHROME2"):
            raise DatasetError(f"unsupported photometric interpretation {photometric!r} for a 1-sample image; expected MONOCHROME1 or MONOCHROME2", label)
        image, voi = _grey(ds, stored, label, window)
        inverted = photometric == "MONOCHROME1"
        if inverted:
            image = 1.0 - image
            if _border_brighter_than_centre(image):
                msg = (
                    "MONOCHROME1 image whose corners are brighter than its centre after inversion: "
                    "the PhotometricInterpretation header is probably wrong (pixels look MONOCHROME2)"
                )
                log.warning("%s: %s", label, msg)
                warnings_.append(msg)
    image = np.ascontiguousarray(np.clip(image, 0.0, 1.0), dtype=np.float32)
    return image, _meta(ds, label, voi=voi, inverted=inverted, warnings=tuple(warnings_))


def _pixel_array(ds, label: str) -> np.ndarray:
    from pydicom.pixels import get_decoder

    ts = ds.file_meta.TransferSyntaxUID
    ts_name = getattr(ts, "name", str(ts))
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:
        hint = DECODER_HINTS.get(str(ts))
        raise DatasetError(
            f"transfer syntax {ts_name} ({ts}) cannot be decoded here" + (f"; install {hint}" if hint else "; no pixel decoder supports it"),
            label,
        ) from None
    if not decoder.is_available:
        hint = DECODER_HINTS.get(str(ts)) or "; ".join(decoder.missing_dependencies)
        raise DatasetError(f"no installed decoder for transfer syntax {ts_name} ({ts}); install {hint}", label)
    plugins = [p for p in _PREFERRED_PLUGINS.get(str(ts), ()) if p in decoder.available_plugins] or [""]
    try:
        for n, plugin in enumerate(plugins):
            try:
                ds.pixel_array_options(decoding_plugin=plugin)
                arr = ds.pixel_array
                break
            except Exception:
                if n == len(plugins) - 1:
                    raise
    except (ValueError, AttributeError) as exc:
        raise DatasetError(f"pixel data do not match the header (Rows {ds.get('Rows')}, Columns {ds.get('Columns')}, "
                           f"BitsAllocated {ds.get('BitsAllocated')}, SamplesPerPixel {ds.get('SamplesPerPixel', 1)}, "
                           f"NumberOfFrames {ds.get('NumberOfFrames', 1)}, {ts_name}): {exc}", label) from exc
    except Exception as exc:  # decoder plugins raise RuntimeError and others on corrupt streams
        raise DatasetError(f"pixel data could not be decoded ({ts_name}): {type(exc).__name__}: {exc}", label) from exc
    rows, cols = _int(ds, "Rows"), _int(ds, "Columns")
    if arr.ndim < 2 or (arr.shape[-2:] != (rows, cols) and arr.shape[-3:-1] != (rows, cols)):
        raise DatasetError(f"decoded pixel array has shape {arr.shape}; the header says {rows}x{cols}", label)
    return arr


def _stored_range(ds) -> tuple[float, float]:
    bits = _int(ds, "BitsStored") or _int(ds, "BitsAllocated") or 16
    if _int(ds, "PixelRepresentation") == 1:
        return float(-(2 ** (bits - 1))), float(2 ** (bits - 1) - 1)
    return 0.0, float(2**bits - 1)


def _modality(ds, stored: np.ndarray, label: str) -> tuple[np.ndarray, tuple[float, float]]:
    """Apply the modality LUT; returns the values and the output range of the stored range."""
    lo, hi = _stored_range(ds)
    if "ModalityLUTSequence" in ds and len(ds.ModalityLUTSequence):
        item = ds.ModalityLUTSequence[0]
        values, lut = _apply_lut(ds, item, stored, "Modality LUT Sequence item 0", label)
        return values.astype(np.float32), (float(lut.min()), float(lut.max()))
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    values = stored  # integers stay integers until a float step needs them (a LUT indexes them)
    if slope != 1.0 or intercept != 0.0:
        values = stored.astype(np.float32) * np.float32(slope) + np.float32(intercept)
    a, b = lo * slope + intercept, hi * slope + intercept
    return values, (min(a, b), max(a, b))


def _lut_values(ds, item) -> np.ndarray | None:
    """The LUT Data of a (Modality or VOI) LUT item as an integer array."""
    data = item.get("LUTData")
    if data is None:
        return None
    if isinstance(data, (bytes, bytearray)):  # OW: 16-bit words, in the data set's byte order
        big = ds.file_meta.get("TransferSyntaxUID") == "1.2.840.10008.1.2.2"
        return np.frombuffer(data, dtype=">u2" if big else "<u2")
    return np.asarray(data if isinstance(data, (list, tuple)) or hasattr(data, "__len__") else [data])


def _apply_lut(ds, item, values: np.ndarray, what: str, label: str) -> tuple[np.ndarray, np.ndarray]:
    """PS3.3 C.11.1 and C.11.2.1.1: index the LUT by (input - first mapped value), clamped to its ends."""
    lut = _lut_values(ds, item)
    if "LUTDescriptor" not in item or lut is None or not lut.size:
        raise DatasetError(f"{what} lacks LUT Descriptor or LUT Data", label)
    entries, first = int(item.LUTDescriptor[0]) or 65536, int(item.LUTDescriptor[1])
    if _int(ds, "PixelRepresentation") == 1 and first >= 32768:
        first -= 65536  # a signed first mapped value stored as US
    lut = lut[:entries]
    if values.dtype.kind in "iu":
        index = np.clip(values.astype(np.int32) - first, 0, lut.size - 1)
    else:
        index = np.clip(np.rint(values) - first, 0, lut.size - 1).astype(np.intp)
    return lut[index], lut


def _grey(ds, stored: np.ndarray, label: str, window: Window) -> tuple[np.ndarray, str]:
    values, (lo, hi) = _modality(ds, stored, label)
    luts = ds.get("VOILUTSequence") or []
    centers = _multi(ds.get("WindowCenter"))
    widths = _multi(ds.get("WindowWidth"))
    function = _text(ds, "VOILUTFunction").upper() or "LINEAR"

    if window is None:
        return _scale(values, lo, hi), "none"
    if isinstance(window, str):
        if window == "minmax":
            return _scale(values, float(values.min()), float(values.max())), "minmax"
        if window != "default":
            raise DatasetError(f"unknown window {window!r}; expected 'default', 'minmax', None, an index or (center, width)", label)
        if len(luts):
            return _apply_voi_lut(ds, values, 0, label)
        if centers and widths:
            return _windowed(values, centers[0], widths[0], function, label, lo, hi)
        return _scale(values, lo, hi), "none"
    if isinstance(window, (tuple, list)):
        if len(window) != 2:
            raise DatasetError(f"window must be (center, width), got {window!r}", label)
        return _windowed(values, float(window[0]), float(window[1]), function, label, lo, hi)
    if isinstance(window, (int, np.integer)) and not isinstance(window, bool):
        index = int(window)
        if len(luts):
            if not 0 <= index < len(luts):
                raise DatasetError(f"VOI LUT index {index} out of range; the file has {len(luts)} VOI LUTs (0..{len(luts) - 1})", label)
            return _apply_voi_lut(ds, values, index, label)
        n = min(len(centers), len(widths))
        if not 0 <= index < n:
            raise DatasetError(f"window index {index} out of range; the file has {n} window presets" + (f" (0..{n - 1})" if n else ""), label)
        return _windowed(values, centers[index], widths[index], function, label, lo, hi)
    raise DatasetError(f"unsupported window {window!r}; expected 'default', 'minmax', None, an index or (center, width)", label)


def _multi(value) -> list[float]:
    if value is None or value == "":
        return []
    items = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
    out = []
    for v in items:
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            continue
    return out


def _scale(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    if not hi > lo:
        return np.zeros(values.shape, dtype=np.float32)
    out = (values.astype(np.float32, copy=False) - np.float32(lo)) * np.float32(1.0 / (hi - lo))
    return np.clip(out, 0.0, 1.0, out=out)


def _windowed(values: np.ndarray, center: float, width: float, function: str, label: str, lo: float, hi: float) -> tuple[np.ndarray, str]:
    """PS3.3 C.11.2.1.2 (LINEAR), C.11.2.1.3.1 (LINEAR_EXACT, SIGMOID), output in [0, 1]."""
    values = values.astype(np.float32, copy=False)
    if function == "SIGMOID":
        if width <= 0:
            log.warning("%s: window width %g is not positive; the window is ignored", label, width)
            return _scale(values, lo, hi), "none (invalid window)"
        out = 1.0 / (1.0 + np.exp(-4.0 * (values - np.float32(center)) / np.float32(width)))
        return out.astype(np.float32, copy=False), f"window {center:g}/{width:g} SIGMOID"
    if function == "LINEAR_EXACT":
        if width <= 0:
            log.warning("%s: window width %g is not positive; the window is ignored", label, width)
            return _scale(values, lo, hi), "none (invalid window)"
        out = (values - np.float32(center)) / np.float32(width) + np.float32(0.5)
        return np.clip(out, 0.0, 1.0, out=out), f"window {center:g}/{width:g} LINEAR_EXACT"
    if width < 1:
        log.warning("%s: window width %g is below 1 (invalid for LINEAR); the window is ignored", label, width)
        return _scale(values, lo, hi), "none (invalid window)"
    if width == 1:
        return (values >= np.float32(center - 0.5)).astype(np.float32), f"window {center:g}/1"
    out = (values - np.float32(center - 0.5)) / np.float32(width - 1) + np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out), f"window {center:g}/{width:g}"


def _apply_voi_lut(ds, values: np.ndarray, index: int, label: str) -> tuple[np.ndarray, str]:
    item = ds.VOILUTSequence[index]
    mapped, lut = _apply_lut(ds, item, values, f"VOI LUT Sequence item {index}", label)
    bits = int(item.LUTDescriptor[2])
    if float(lut.max()) > 2**bits - 1:  # header says fewer bits than the data use
        bits = max(bits, int(math.ceil(math.log2(float(lut.max()) + 1))))
    explanation = _text(item, "LUTExplanation")
    return _scale(mapped, 0.0, float(2**bits - 1)), f"VOI LUT {index}" + (f" ({explanation})" if explanation else "")


def _colour(ds, stored: np.ndarray, label: str, *, grey: bool) -> np.ndarray:
    photometric = _text(ds, "PhotometricInterpretation").upper()
    arr = stored
    if photometric == "PALETTE COLOR":
        from pydicom.pixels import apply_color_lut

        try:
            arr = apply_color_lut(stored, ds)
        except Exception as exc:
            raise DatasetError(f"palette colour image cannot be mapped: {exc}", label) from exc
        bits = 16 if arr.dtype.itemsize > 1 else 8
    else:
        # pydicom's pixel_array already converts YBR_* to RGB
        bits = _int(ds, "BitsStored") or 8
    image = arr.astype(np.float32) / np.float32(2**bits - 1)
    if image.ndim == 4:  # multi-frame colour
        return np.stack([to_channels(f, 1) for f in image]) if grey else image
    return to_channels(image, 1) if grey else image


def _border_brighter_than_centre(image: np.ndarray) -> bool:
    """Air outside the body is dark in a correctly displayed radiograph.

    Compares the four corner blocks (each 1/8 of the height and width) with
    the central half of the image; in a chest film the corners hold air above
    the shoulders or collimated background, the centre the mediastinum and
    lungs.
    """
    img = image[0] if image.ndim == 3 else image
    h, w = img.shape[:2]
    if h < 16 or w < 16:
        return False
    bh, bw = h // 8, w // 8
    corners = [img[:bh, :bw], img[:bh, -bw:], img[-bh:, :bw], img[-bh:, -bw:]]
    corner_mean = float(np.mean([c.mean() for c in corners]))
    centre_mean = float(img[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4].mean())
    return corner_mean > centre_mean + 0.05


# --------------------------------------------------------------------------- dispatch


def read_any(source: str | Path | bytes, *, name: str | None = None, window: Window = "default", grey: bool = True) -> np.ndarray:
    """Decode a DICOM, PNG, JPEG, TIFF or PGM file (or bytes) into the float convention.

    DICOM is recognised by its ``DICM`` marker at byte 128; a file without the
    marker is tried as DICOM when it is not a known image format. Grey
    results are ``(H, W)``; colour images stay ``(H, W, 3)`` for image formats
    (use :func:`~dxlab.datasets.images.to_channels`), DICOM colour becomes grey
    unless ``grey=False``.
    """
    label = _label(source, name)
    if isinstance(source, (bytes, bytearray)):
        head = bytes(source[:132])
    else:
        path = Path(source)
        if not path.is_file():
            raise DatasetError("image file not found", label)
        head = _head(path)
    if head[128:132] == b"DICM":
        return read_dicom(source, name=name, window=window, grey=grey)[0]
    if head.startswith(_IMAGE_MAGIC) or not head:
        return read_image(source, name=name)
    try:
        ds = open_dicom(source, name=name)
    except DatasetError:
        # Neither a known image format nor DICOM: let the image reader say what it is not.
        try:
            return read_image(source, name=name)
        except DatasetError as exc:
            raise DatasetError("not a readable image or DICOM file (expected PNG, JPEG, TIFF, PGM or DICOM)", label) from exc
    return _decode(ds, label, window=window, allow_multiframe=False, grey=grey)[0]


# --------------------------------------------------------------------------- writing


#: SOP classes make_dicom uses: Digital X-Ray for presentation (grey), Secondary Capture (colour).
DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


def make_dicom(
    image: np.ndarray,
    *,
    photometric: str | None = None,
    bits_stored: int | None = None,
    transfer_syntax: str = "1.2.840.10008.1.2.1",
    **attributes: Any,
):
    """A DICOM dataset holding an integer image, for tests, examples and demos.

    ``image`` is ``(H, W)`` (MONOCHROME2 unless ``photometric`` says
    MONOCHROME1), ``(F, H, W)`` (multi-frame grey) or ``(H, W, 3)`` (RGB),
    ``uint8``, ``uint16`` or ``int16``. ``transfer_syntax`` may be any
    uncompressed one, RLE Lossless, JPEG-LS (via pyjpegls), or JPEG baseline and
    JPEG 2000 (encoded by Pillow; 8-bit only for JPEG baseline). Other keywords
    become attributes (``PatientID="X"``, ``WindowCenter=...``). Save it with
    ``ds.save_as(path, enforce_file_format=True)``.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, generate_uid

    arr = np.asarray(image)
    if arr.dtype not in (np.uint8, np.uint16, np.int16):
        raise ValueError(f"make_dicom needs a uint8, uint16 or int16 image, got {arr.dtype}")
    colour = arr.ndim == 3 and arr.shape[-1] == 3
    frames = arr.shape[0] if arr.ndim == 3 and not colour else 1
    allocated = arr.dtype.itemsize * 8
    ts = UID(transfer_syntax)

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    ds.SOPClassUID = SECONDARY_CAPTURE if colour else DX_FOR_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "OT" if colour else "DX"
    ds.PatientID = ""
    ds.PatientName = ""
    ds.Rows, ds.Columns = arr.shape[-3:-1] if colour else arr.shape[-2:]
    ds.SamplesPerPixel = 3 if colour else 1
    ds.PhotometricInterpretation = photometric or ("RGB" if colour else "MONOCHROME2")
    if colour:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated = allocated
    ds.BitsStored = bits_stored or allocated
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if arr.dtype == np.int16 else 0
    if frames > 1:
        ds.NumberOfFrames = frames
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID

    if not ts.is_compressed:
        order = ">" if ts == "1.2.840.10008.1.2.2" else "<"
        ds.PixelData = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder(order)).tobytes()
        if allocated > 8:
            ds["PixelData"].VR = "OW"
        return ds
    if ts in ("1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.91"):
        from PIL import Image
        from pydicom.encaps import encapsulate

        fmt = "JPEG" if ts == "1.2.840.10008.1.2.4.50" else "JPEG2000"
        if fmt == "JPEG" and arr.dtype != np.uint8:
            raise ValueError("JPEG baseline holds 8-bit images only")
        fragments = []
        for frame in (arr if frames > 1 else [arr]):
            buffer = io.BytesIO()
            pil = Image.fromarray(frame if frame.dtype == np.uint8 else frame.astype(np.uint16))
            options = {"quality": 95} if fmt == "JPEG" else {"irreversible": ts == "1.2.840.10008.1.2.4.91", "no_jp2": True}
            pil.save(buffer, format=fmt, **options)
            fragments.append(buffer.getvalue())
        ds.PixelData = encapsulate(fragments)
        ds["PixelData"].VR = "OB"
        if fmt == "JPEG" and colour:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        return ds
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.compress(ts, arr, generate_instance_uid=False)
    return ds
