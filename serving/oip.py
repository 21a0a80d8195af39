"""The Open Inference Protocol (v2, KServe/Triton) as dxlab speaks it: request parsing, response building.

**Inputs.** An infer request holds exactly one input tensor; its ``datatype`` says what it is:

- ``BYTES``, shape ``[N]`` (or ``[N, 1]``): N encoded images, PNG, JPEG, TIFF,
  PGM or DICOM, one element per image. In JSON each element is a base64 string
  (standard alphabet, padded), as JSON cannot hold raw bytes.
- ``FP32``, shape ``[N, C, H, W]`` equal to the model's input shape (see
  ``GET /v2/models/{name}``): a batch already preprocessed with the package's
  spec, used as is.
- ``FP32``, shape ``[N, H, W]`` (grey) or ``[N, H, W, 3]`` (RGB, channels
  last): raw decoded images, values in [0, 1], any H and W; the package's
  preprocessing (resize, channels, normalisation) is applied.

``data`` may be flat (row-major) or nested. The binary tensor data extension
is accepted for inputs: with the ``Inference-Header-Content-Length`` header,
the body is that many bytes of JSON followed by the raw tensors, and an input
gives ``"parameters": {"binary_data_size": n}`` instead of ``data`` (FP32 as
little-endian floats; BYTES as elements each prefixed by its length, 4 bytes
little-endian). Outputs are always JSON.

**Parameters** (request ``parameters``): ``heatmap`` (bool, default false)
adds Grad-CAM outputs (so does naming one in ``outputs``); ``heatmap_label`` (a label name) chooses the class the
heatmap explains (default: the thresholded positive label).

**Outputs**, one row per image, in input order (``outputs`` in the request may
select some by name):

| name | datatype | shape | holds |
|---|---|---|---|
| ``probabilities`` | FP32 | [N, K] | calibrated probabilities in label order (``parameters.labels``); ``null`` for an image that is not assessable |
| ``decision`` | BYTES | [N] | the label called at the model's operating point, or ``not assessable`` |
| ``assessable`` | BOOL | [N] | false when the image looks out of distribution |
| ``abstention_reason`` | BYTES | [N] | why an image is not assessable; ``""`` otherwise |
| ``heatmap`` | BYTES | [N] | (``heatmap: true``) base64 PNG of the Grad-CAM overlay; ``""`` where none |
| ``heatmap_grid`` | FP32 | [N, G, G] | (``heatmap: true``) the heatmap averaged to G x G cells, values in [0, 1]; ``null`` where none |

Errors are ``{"error": "..."}`` with a 4xx/5xx status.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dxlab.serving.engine import NOT_ASSESSABLE, BadInputError, InferenceResult, LoadedModel

#: the header of the binary tensor data extension
BINARY_HEADER = "inference-header-content-length"
OUTPUTS = ("probabilities", "decision", "assessable", "abstention_reason", "heatmap", "heatmap_grid")
HEATMAP_OUTPUTS = ("heatmap", "heatmap_grid")
_MAX_DIMS = 8


@dataclass
class InferRequest:
    """A parsed infer request: either encoded images or an FP32 tensor."""

    id: str | None
    input_name: str
    encoded: list[bytes] | None = None
    tensor: np.ndarray | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    #: output names asked for; None: all
    outputs: list[str] | None = None

    @property
    def heatmap(self) -> bool:
        """Asked for by the parameter, or by naming a heatmap output."""
        return bool(self.parameters.get("heatmap", False)) or any(o in HEATMAP_OUTPUTS for o in self.outputs or ())

    @property
    def heatmap_label(self) -> str | None:
        return self.parameters.get("heatmap_label")


def parse_infer_request(body: bytes, headers: Mapping[str, str] | None = None) -> InferRequest:
    """An infer request body (JSON, or JSON plus binary tensors) -> :class:`InferRequest`; bad ones raise BadInputError."""
    headers = {k.lower(): v for k, v in (headers or {}).items()}
    binary = b""
    if BINARY_HEADER in headers:
        raw = headers[BINARY_HEADER]
        if not raw.isdigit() or int(raw) > len(body):
            raise BadInputError(f"Inference-Header-Content-Length={raw!r}; expected the JSON header's length in bytes "
                                f"(at most the body's {len(body)})")
        body, binary = body[:int(raw)], body[int(raw):]
    if not body:
        raise BadInputError('empty request body; expected JSON {"inputs": [{"name", "shape", "datatype", "data"}]}')
    try:
        doc = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInputError(f"the request body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadInputError(f"the request body is a JSON {type(doc).__name__}; expected an object with \"inputs\"")
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise BadInputError('"inputs" must be a non-empty list of tensors {"name", "shape", "datatype", "data"}')
    if len(inputs) != 1:
        raise BadInputError(f"{len(inputs)} inputs; expected one: BYTES images or an FP32 tensor")
    request = InferRequest(id=_request_id(doc.get("id")), input_name="",
                           parameters=_parameters(doc.get("parameters")), outputs=_outputs(doc.get("outputs")))
    _read_input(inputs[0], binary, request)
    return request


def _request_id(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 256:
        raise BadInputError('"id" must be a string of at most 256 characters')
    return value


def _parameters(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadInputError('"parameters" must be an object, e.g. {"heatmap": true}')
    heatmap = value.get("heatmap", False)
    if not isinstance(heatmap, bool):
        raise BadInputError(f"parameter heatmap={heatmap!r}; expected true or false")
    label = value.get("heatmap_label")
    if label is not None and not isinstance(label, str):
        raise BadInputError(f"parameter heatmap_label={label!r}; expected a label name")
    return dict(value)


def _outputs(value: Any) -> list[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in value):
        raise BadInputError('"outputs" must be a list of {"name": ...}')
    names = [o["name"] for o in value]
    unknown = [n for n in names if n not in OUTPUTS]
    if unknown:
        raise BadInputError(f"unknown output(s) {', '.join(map(repr, unknown))}; outputs: {', '.join(OUTPUTS)}")
    return names


def _read_input(tensor: Any, binary: bytes, request: InferRequest) -> None:
    if not isinstance(tensor, dict):
        raise BadInputError('each input must be an object {"name", "shape", "datatype", "data"}')
    name, shape, datatype = tensor.get("name"), tensor.get("shape"), tensor.get("datatype")
    if not isinstance(name, str) or not name:
        raise BadInputError('an input needs a "name" (e.g. "image")')
    request.input_name = name
    if not isinstance(shape, list) or not 1 <= len(shape) <= _MAX_DIMS \
            or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape):
        raise BadInputError(f"input {name!r}: shape={shape!r}; expected a list of non-negative integers")
    if datatype not in ("BYTES", "FP32"):
        raise BadInputError(f"input {name!r}: datatype={datatype!r}; expected BYTES (encoded PNG, JPEG or DICOM images) "
                            "or FP32 (a tensor)")
    count = math.prod(shape)
    if count == 0:
        raise BadInputError(f"input {name!r}: shape {shape} holds no element")
    params = tensor.get("parameters") or {}
    size = params.get("binary_data_size") if isinstance(params, dict) else None
    if size is not None:
        if not isinstance(size, int) or size < 0 or size != len(binary):
            raise BadInputError(f"input {name!r}: binary_data_size={size!r} but {len(binary)} bytes follow the JSON header")
        data: Any = binary
    elif "data" in tensor:
        data = tensor["data"]
    else:
        raise BadInputError(f"input {name!r} has no \"data\"")
    if datatype == "BYTES":
        if len(shape) > 2 or (len(shape) == 2 and shape[1] != 1):
            raise BadInputError(f"input {name!r}: BYTES shape {shape}; expected [N] (one encoded image per element)")
        items = _split_binary_bytes(data, name) if size is not None else _base64_items(data, name)
        if len(items) != count:
            raise BadInputError(f"input {name!r}: shape {shape} says {count} element(s) but data holds {len(items)}")
        request.encoded = items
    else:
        request.tensor = _fp32(data, shape, count, name, binary=size is not None)


def _base64_items(data: Any, name: str) -> list[bytes]:
    if isinstance(data, list) and len(data) == 1 and isinstance(data[0], list):
        data = data[0]
    if isinstance(data, list) and data and all(isinstance(d, list) and len(d) == 1 for d in data):
        data = [d[0] for d in data]  # shape [N, 1], nested
    if not isinstance(data, list) or not all(isinstance(d, str) for d in data):
        raise BadInputError(f"input {name!r}: BYTES data must be a list of base64 strings, one encoded image each")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(base64.b64decode(item, validate=True))
        except (binascii.Error, ValueError):
            raise BadInputError(f"input {name!r}: element {i} is not valid base64") from None
    return out


def _split_binary_bytes(data: bytes, name: str) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        if pos + 4 > len(data):
            raise BadInputError(f"input {name!r}: binary BYTES data ends inside an element's 4-byte length")
        n = int.from_bytes(data[pos:pos + 4], "little")
        pos += 4
        if pos + n > len(data):
            raise BadInputError(f"input {name!r}: binary BYTES element of {n} bytes runs past the data")
        out.append(data[pos:pos + n])
        pos += n
    return out


def _fp32(data: Any, shape: list[int], count: int, name: str, *, binary: bool) -> np.ndarray:
    if binary:
        if len(data) != 4 * count:
            raise BadInputError(f"input {name!r}: shape {shape} needs {4 * count} bytes of FP32, got {len(data)}")
        return np.frombuffer(data, dtype="<f4").astype(np.float32).reshape(shape)
    try:
        arr = np.asarray(data, dtype=np.float32)
    except (ValueError, TypeError):
        raise BadInputError(f"input {name!r}: FP32 data must be numbers (a flat or nested list)") from None
    if arr.size != count:
        raise BadInputError(f"input {name!r}: shape {shape} says {count} element(s) but data holds {arr.size}")
    arr = arr.reshape(shape)
    if not np.isfinite(arr).all():
        raise BadInputError(f"input {name!r}: FP32 data hold NaN or infinite values")
    return arr


def tensor_kind(arr: np.ndarray, model: LoadedModel) -> str:
    """``"batch"`` for a preprocessed [N, C, H, W] tensor, ``"images"`` for raw [N, H, W] / [N, H, W, 3] images."""
    c, h, w = model.input_shape
    if arr.ndim == 4 and tuple(arr.shape[1:]) == (c, h, w):
        return "batch"
    if arr.ndim == 3 or (arr.ndim == 4 and arr.shape[-1] in (1, 3)):
        return "images"
    raise BadInputError(f"FP32 tensor of shape {list(arr.shape)}; model {model.name!r} takes a preprocessed batch "
                        f"[N, {c}, {h}, {w}], or raw images [N, H, W] (grey) or [N, H, W, 3] (RGB) with values in [0, 1]")


def model_metadata(model: LoadedModel) -> dict[str, Any]:
    """``GET /v2/models/{name}``: the OIP model metadata plus the package's labels and operating point."""
    c, h, w = model.input_shape
    info = model.packaged.info
    k = len(model.labels)
    return {
        "name": model.name,
        "versions": [model.version],
        "platform": "pytorch",
        "inputs": [
            {"name": "image", "datatype": "BYTES", "shape": [-1]},
            {"name": "input", "datatype": "FP32", "shape": [-1, c, h, w]},
        ],
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [-1, k]},
            {"name": "decision", "datatype": "BYTES", "shape": [-1]},
            {"name": "assessable", "datatype": "BOOL", "shape": [-1]},
            {"name": "abstention_reason", "datatype": "BYTES", "shape": [-1]},
            {"name": "heatmap", "datatype": "BYTES", "shape": [-1]},
            {"name": "heatmap_grid", "datatype": "FP32", "shape": [-1, -1, -1]},
        ],
        "parameters": {
            "labels": list(model.labels),
            "thresholds": dict(info.thresholds),
            "operating_rule": info.operating_rule,
            "temperature": info.temperature,
            "architecture": info.architecture,
            "preprocessing": info.preprocessing.to_dict(),
            "run_id": model.run_id,
            "data_version": info.data_version,
            "ood_detector": bool(model.ood),
            "device": str(model.device),
            "precision": model.precision,
        },
    }


def _floats(arr: np.ndarray) -> list[float | None]:
    """Row-major values; NaN (no value) becomes JSON null."""
    return [None if math.isnan(v) else v for v in arr.astype(np.float64).ravel().tolist()]


def infer_response(result: InferenceResult, request: InferRequest, grid_size: int) -> dict[str, Any]:
    """The OIP infer response of ``result``."""
    n, k = result.probabilities.shape
    wanted = request.outputs or [o for o in OUTPUTS if o not in HEATMAP_OUTPUTS or request.heatmap]
    reasons = result.abstentions
    outputs = []
    for name in wanted:
        if name == "probabilities":
            outputs.append({"name": name, "datatype": "FP32", "shape": [n, k], "parameters": {"labels": list(result.labels)},
                            "data": _floats(result.probabilities)})
        elif name == "decision":
            outputs.append({"name": name, "datatype": "BYTES", "shape": [n],
                            "data": [d if d is not None else NOT_ASSESSABLE for d in result.decisions]})
        elif name == "assessable":
            outputs.append({"name": name, "datatype": "BOOL", "shape": [n], "data": [r is None for r in reasons]})
        elif name == "abstention_reason":
            outputs.append({"name": name, "datatype": "BYTES", "shape": [n], "data": [r or "" for r in reasons]})
        elif name in HEATMAP_OUTPUTS:
            if result.heatmaps is None:
                raise BadInputError(f"output {name!r} needs the parameter \"heatmap\": true")
            label = next((h.label for h in result.heatmaps if h is not None), None)
            if name == "heatmap":
                outputs.append({"name": name, "datatype": "BYTES", "shape": [n],
                                "parameters": {"content_type": "image/png", "encoding": "base64", "label": label},
                                "data": [base64.b64encode(h.png).decode("ascii") if h is not None else ""
                                         for h in result.heatmaps]})
            else:
                grid = np.full((n, grid_size, grid_size), np.nan, dtype=np.float32)
                for i, h in enumerate(result.heatmaps):
                    if h is not None:
                        grid[i] = np.asarray(h.grid, dtype=np.float32)
                outputs.append({"name": name, "datatype": "FP32", "shape": [n, grid_size, grid_size],
                                "parameters": {"label": label}, "data": _floats(grid)})
    response: dict[str, Any] = {"model_name": result.model, "model_version": result.version,
                                "parameters": {"run_id": result.run_id, "labels": list(result.labels)},
                                "outputs": outputs}
    if request.id is not None:
        response["id"] = request.id
    return response
