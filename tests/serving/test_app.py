"""The HTTP service: Open Inference Protocol v2 shapes, datatypes and errors; bad inputs; metrics;
heatmaps; an alias swap under load."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from fastapi.testclient import TestClient

from dxlab.serving.app import create_app
from dxlab.serving.engine import Engine, EngineConfig, native_bf16_cpu

from .conftest import LABELS, SPEC, THRESHOLD, blocking_forward, cxr_images, dicom_bytes, png_bytes

MODEL = "dxlab-tiny"
INFER = f"/v2/models/{MODEL}/infer"
MAX_BODY_MB = 0.25
MAX_PIXELS = 250_000


def config(registry, **changes) -> EngineConfig:
    values = dict(models=(f"models:/{MODEL}@champion",), device="cpu", max_batch_size=8, max_delay_ms=20,
                  queue_size=64, timeout_s=10, reload_interval_s=0, tracking_uri=registry.uri,
                  max_body_mb=MAX_BODY_MB, max_image_pixels=MAX_PIXELS)
    return EngineConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def engine(registry):
    with Engine(config(registry)) as engine:
        yield engine


@pytest.fixture(scope="module")
def client(engine):
    with TestClient(create_app(engine)) as client:
        yield client


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def bytes_request(*encoded: bytes, **extra) -> dict:
    return {"inputs": [{"name": "image", "shape": [len(encoded)], "datatype": "BYTES", "data": [b64(e) for e in encoded]}],
            **extra}


def output(response, name: str) -> dict:
    return next(o for o in response.json()["outputs"] if o["name"] == name)


def jpeg_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray((image * 255).round().astype(np.uint8)).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


def assert_serving(client) -> None:
    """The service still answers a good request."""
    response = client.post(INFER, json=bytes_request(png_bytes(cxr_images(1)[0])))
    assert response.status_code == 200, response.text


# ----------------------------------------------------------------------------- health and metadata


def test_health_and_metadata(client):
    assert client.get("/v2/health/live").json() == {"live": True}
    ready = client.get("/v2/health/ready")
    assert ready.status_code == 200 and ready.json() == {"ready": True}
    assert client.get("/v2").json()["models"] == [MODEL]
    meta = client.get(f"/v2/models/{MODEL}").json()
    assert meta["name"] == MODEL and meta["versions"] == ["1"]
    assert {"name": "input", "datatype": "FP32", "shape": [-1, *SPEC.input_shape]} in meta["inputs"]
    assert {"name": "image", "datatype": "BYTES", "shape": [-1]} in meta["inputs"]
    assert {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]} in meta["outputs"]
    assert meta["parameters"]["labels"] == list(LABELS)
    assert meta["parameters"]["thresholds"] == {"tb": THRESHOLD}
    assert meta["parameters"]["device"] == "cpu"
    assert meta["parameters"]["precision"] == ("bf16" if native_bf16_cpu() else "fp32")  # precision="auto"
    assert client.get(f"/v2/models/{MODEL}/versions/1").status_code == 200
    assert client.get(f"/v2/models/{MODEL}/ready").json()["ready"] is True


@pytest.mark.parametrize("path", ["/v2/models/nope", "/v2/models/nope/ready", f"/v2/models/{MODEL}/versions/9",
                                  f"/v2/models/{MODEL}/versions/9/ready", "/v2/no/such/route"])
def test_unknown_models_versions_and_routes_are_404_with_an_error(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.json()) == {"error"} and response.json()["error"]


# ----------------------------------------------------------------------------- inference


def test_bytes_inputs_png_jpeg_dicom(client, engine):
    images = cxr_images(3, seed=7)
    response = client.post(INFER, json=bytes_request(png_bytes(images[0]), jpeg_bytes(images[1]),
                                                     dicom_bytes(images[2]), id="req-1"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_name"] == MODEL and body["model_version"] == "1" and body["id"] == "req-1"
    assert body["parameters"]["run_id"] == engine.model(MODEL).run_id
    names = [o["name"] for o in body["outputs"]]
    assert names == ["probabilities", "decision", "assessable", "abstention_reason"]
    proba = output(response, "probabilities")
    assert proba["datatype"] == "FP32" and proba["shape"] == [3, 2] and len(proba["data"]) == 6
    p = np.array(proba["data"]).reshape(3, 2)
    np.testing.assert_allclose(p.sum(1), 1.0, rtol=1e-5)
    decision = output(response, "decision")
    assert decision["datatype"] == "BYTES" and decision["shape"] == [3]
    assert decision["data"] == ["tb" if row[1] >= THRESHOLD else "normal" for row in p]
    assert output(response, "assessable") == {"name": "assessable", "datatype": "BOOL", "shape": [3],
                                              "data": [True, True, True]}
    assert output(response, "abstention_reason")["data"] == ["", "", ""]
    # the same numbers as the engine on the decoded PNG
    direct = engine.predict(MODEL, images=[np.asarray(png_bytes_decoded(images[0]))])
    np.testing.assert_allclose(p[0], direct.probabilities[0], atol=1e-5)


def png_bytes_decoded(image: np.ndarray) -> np.ndarray:
    from dxlab.datasets.images import read_image

    return read_image(png_bytes(image))


def test_fp32_preprocessed_and_raw_tensors(client, engine):
    images = cxr_images(2, seed=8)
    batch = engine.model(MODEL).packaged.preprocess(images).numpy()
    pre = client.post(INFER, json={"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                               "data": batch.ravel().tolist()}]})
    assert pre.status_code == 200, pre.text
    raw = np.stack(images)
    nested = client.post(INFER, json={"inputs": [{"name": "input", "shape": list(raw.shape), "datatype": "FP32",
                                                  "data": raw.tolist()}],
                                      "outputs": [{"name": "probabilities"}]})
    assert nested.status_code == 200, nested.text
    assert [o["name"] for o in nested.json()["outputs"]] == ["probabilities"]
    expected = engine.predict(MODEL, images=images).probabilities.ravel()
    np.testing.assert_allclose(output(pre, "probabilities")["data"], expected, atol=1e-5)
    np.testing.assert_allclose(output(nested, "probabilities")["data"], expected, atol=1e-5)


def test_binary_tensor_extension(client, engine):
    images = cxr_images(2, seed=9)
    encoded = [png_bytes(im) for im in images]
    binary = b"".join(struct.pack("<I", len(e)) + e for e in encoded)
    header = json.dumps({"inputs": [{"name": "image", "shape": [2], "datatype": "BYTES",
                                     "parameters": {"binary_data_size": len(binary)}}]}).encode()
    response = client.post(INFER, content=header + binary,
                           headers={"Inference-Header-Content-Length": str(len(header)),
                                    "Content-Type": "application/octet-stream"})
    assert response.status_code == 200, response.text
    as_json = client.post(INFER, json=bytes_request(*encoded))
    np.testing.assert_allclose(output(response, "probabilities")["data"], output(as_json, "probabilities")["data"],
                               atol=1e-6)


def test_concurrent_http_requests_share_forward_passes(client):
    encoded = [png_bytes(im) for im in cxr_images(24, seed=10)]
    with ThreadPoolExecutor(12) as pool:
        responses = list(pool.map(lambda e: client.post(INFER, json=bytes_request(e)), encoded))
    assert all(r.status_code == 200 for r in responses)
    text = client.get("/metrics").text
    count = _sample(text, "dxlab_batch_size_count", model=MODEL)
    single = _sample(text, "dxlab_batch_size_bucket", model=MODEL, le="1.0")
    assert count > single, "every forward pass held one image: no batching"


def test_heatmap_on_request(client):
    pytest.importorskip("dxlab.models.gradcam")
    from PIL import Image

    images = cxr_images(2, seed=11)
    response = client.post(INFER, json=bytes_request(*(png_bytes(im) for im in images), parameters={"heatmap": True}))
    assert response.status_code == 200, response.text
    heatmap = output(response, "heatmap")
    assert heatmap["datatype"] == "BYTES" and heatmap["shape"] == [2] and heatmap["parameters"]["label"] == "tb"
    with Image.open(io.BytesIO(base64.b64decode(heatmap["data"][0]))) as png:
        assert png.format == "PNG" and png.size == (40, 40)
    grid = output(response, "heatmap_grid")
    assert grid["datatype"] == "FP32" and grid["shape"] == [2, 16, 16]
    values = np.array(grid["data"], dtype=float)
    assert values.size == 512 and np.all((values >= 0) & (values <= 1))
    plain = client.post(INFER, json=bytes_request(png_bytes(images[0])))
    assert "heatmap" not in [o["name"] for o in plain.json()["outputs"]]
    # a preprocessed tensor: the overlay is drawn on the network's input; naming the output asks for it
    batch = np.stack([np.asarray(SPEC.mean[0] + 0 * im[:28, :28]) for im in images])[:, None].astype(np.float32)
    tensor = client.post(INFER, json={"inputs": [{"name": "input", "shape": list(batch.shape), "datatype": "FP32",
                                                  "data": batch.ravel().tolist()}],
                                      "outputs": [{"name": "heatmap"}], "parameters": {"heatmap_label": "normal"}})
    assert tensor.status_code == 200, tensor.text
    (only,) = tensor.json()["outputs"]
    assert only["name"] == "heatmap" and only["parameters"]["label"] == "normal"
    with Image.open(io.BytesIO(base64.b64decode(only["data"][1]))) as png:
        assert png.size == (28, 28)
    bad = client.post(INFER, json=bytes_request(png_bytes(images[0]), parameters={"heatmap": True,
                                                                                  "heatmap_label": "flu"}))
    assert bad.status_code == 400 and "normal, tb" in bad.json()["error"]


# ----------------------------------------------------------------------------- bad inputs: 4xx, and serving on


def _dicom_without_pixels() -> bytes:
    return dicom_bytes(cxr_images(1)[0], pixels=False)


def _bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims a huge image (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _big_png() -> bytes:
    return png_bytes(np.zeros((600, 600), np.float32))  # 360,000 pixels > MAX_PIXELS, a small file


def _big_dicom() -> bytes:
    return dicom_bytes(np.zeros((600, 600), np.float32), transfer_syntax="1.2.840.10008.1.2.5")  # RLE: small


BAD = {
    "truncated PNG": (lambda: bytes_request(png_bytes(cxr_images(1)[0])[:60]), 400, "truncated|corrupt"),
    "bytes that are no image": (lambda: bytes_request(b"hello, this is not an image at all" * 8), 400,
                                "not a readable image"),
    "DICOM without pixels": (lambda: bytes_request(_dicom_without_pixels()), 400, "no pixel data"),
    "empty element": (lambda: bytes_request(b""), 400, "empty"),
    "decompression bomb PNG": (lambda: bytes_request(_bomb_png()), 413, "bomb|pixels"),
    "image over the pixel limit": (lambda: bytes_request(_big_png()), 413, "limit is 250000"),
    "DICOM over the pixel limit": (lambda: bytes_request(_big_dicom()), 413, "limit is 250000"),
    "wrong tensor shape": (lambda: {"inputs": [{"name": "input", "shape": [2, 3, 5, 7], "datatype": "FP32",
                                                "data": [0.0] * 210}]}, 400, r"\[N, 1, 28, 28\], or raw images"),
    "wrong preprocessed shape": (lambda: {"inputs": [{"name": "input", "shape": [1, 2, 28, 28], "datatype": "FP32",
                                                      "data": [0.0] * 1568}]}, 400, r"\[N, 1, 28, 28\]"),
    "shape and data disagree": (lambda: {"inputs": [{"name": "input", "shape": [1, 1, 28, 28], "datatype": "FP32",
                                                     "data": [0.0] * 10}]}, 400, "784 element"),
    "wrong datatype": (lambda: {"inputs": [{"name": "input", "shape": [1], "datatype": "INT64", "data": [1]}]}, 400,
                       "BYTES .* or FP32"),
    "bad base64": (lambda: {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["@@@"]}]}, 400,
                   "base64"),
    "no inputs": (lambda: {"inputs": []}, 400, "non-empty"),
    "two inputs": (lambda: {"inputs": [bytes_request(b"x")["inputs"][0]] * 2}, 400, "expected one"),
    "unknown output": (lambda: bytes_request(png_bytes(cxr_images(1)[0]), outputs=[{"name": "logits"}]), 400,
                       "unknown output"),
    "bad parameter": (lambda: bytes_request(png_bytes(cxr_images(1)[0]), parameters={"heatmap": "yes"}), 400,
                      "heatmap"),
    "values outside [0, 1]": (lambda: {"inputs": [{"name": "input", "shape": [1, 10, 10], "datatype": "FP32",
                                                   "data": [7.0] * 100}]}, 400, r"\[0, 1\]"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_inputs_get_a_clear_4xx_and_the_service_keeps_serving(client, case):
    make, status, message = BAD[case]
    response = client.post(INFER, json=make())
    assert 400 <= response.status_code < 500, (case, response.status_code, response.text)
    if status is not None:
        assert response.status_code == status, response.text
    assert set(response.json()) == {"error"}
    if message is not None:
        assert re.search(message, response.json()["error"]), response.json()["error"]
    assert_serving(client)


def test_not_json_and_unknown_model(client):
    response = client.post(INFER, content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 400 and "not JSON" in response.json()["error"]
    response = client.post("/v2/models/nope/infer", json=bytes_request(png_bytes(cxr_images(1)[0])))
    assert response.status_code == 404 and "served: dxlab-tiny" in response.json()["error"]
    assert_serving(client)


def test_oversized_bodies_are_refused_413(client):
    big = b"x" * int(MAX_BODY_MB * 1024 * 1024 + 10)
    response = client.post(INFER, content=big, headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(8):
            yield b"y" * 65536

    response = client.post(INFER, content=chunks(), headers={"Content-Type": "application/json"})
    assert response.status_code == 413 and "exceeds the limit" in response.json()["error"]
    assert_serving(client)


def test_queue_full_is_429_with_retry_after_and_timeouts_504(registry, monkeypatch):
    cfg = config(registry, max_batch_size=1, max_delay_ms=0, queue_size=1, instances=1, timeout_s=0.3, warmup=False)
    with Engine(cfg) as engine, TestClient(create_app(engine)) as client:
        gate, entered = blocking_forward(monkeypatch, engine, MODEL)
        body = bytes_request(png_bytes(cxr_images(1)[0]))
        first = engine.submit(engine.prepare(MODEL, images=cxr_images(1)))
        assert entered.wait(5)
        waiting = []
        thread = threading.Thread(target=lambda: waiting.append(client.post(INFER, json=body)))
        thread.start()
        deadline = time.monotonic() + 5
        while engine.stats(MODEL)["queue_depth"] < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        full = client.post(INFER, json=body)
        assert full.status_code == 429, full.text
        assert int(full.headers["Retry-After"]) >= 1 and "queued" in full.json()["error"]
        thread.join(10)
        assert waiting[0].status_code == 504 and set(waiting[0].json()) == {"error"}
        gate.set()
        first.result(5)
        assert client.post(INFER, json=body).status_code == 200
        text = client.get("/metrics").text
        assert _sample(text, "dxlab_requests_total", model=MODEL, outcome="queue_full") == 1
        assert _sample(text, "dxlab_requests_total", model=MODEL, outcome="timeout") == 1


# ----------------------------------------------------------------------------- metrics


def _sample(text: str, name: str, **labels) -> float:
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(name + "{") and not line.startswith(name + " "):
            continue
        found = dict(re.findall(r'(\w+)="([^"]*)"', line))
        if all(found.get(k) == v for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_metrics_expose_the_series_without_patient_or_study_ids(client):
    image = cxr_images(1)[0]
    assert client.post(INFER, json=bytes_request(dicom_bytes(image))).status_code == 200
    client.post("/v2/models/PAT-0001/infer", json=bytes_request(dicom_bytes(image)))  # an id where a model goes
    client.post(INFER, json=bytes_request(b"junk"))
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    for series in ("dxlab_requests_total", "dxlab_request_duration_seconds_bucket", "dxlab_batch_size_bucket",
                   "dxlab_queue_depth", "dxlab_model_info", "dxlab_inference_duration_seconds_bucket",
                   "dxlab_images_total"):
        assert re.search(rf"^{series}\{{", text, re.M), series
    assert _sample(text, "dxlab_requests_total", model=MODEL, version="1", outcome="ok") >= 1
    assert _sample(text, "dxlab_requests_total", model=MODEL, outcome="bad_request") >= 1
    assert _sample(text, "dxlab_requests_total", model="_unknown", outcome="not_found") >= 1
    assert _sample(text, "dxlab_model_info", model=MODEL, version="1") == 1
    label_names = set(re.findall(r'[{,](\w+)="', text))
    assert label_names <= {"model", "version", "outcome", "le"}, label_names
    for identifier in ("PAT-0001", "1.2.826.0.1.3680043.8.498.1", "req-1"):
        assert identifier not in text


# ----------------------------------------------------------------------------- hot reload under load


def test_alias_swap_under_load_fails_no_request(registry):
    name = "dxlab-swap"
    registry.register(name, seed=3)
    v2 = registry.register(name, seed=4, alias=None)
    cfg = config(registry, models=(f"models:/{name}@champion",), reload_interval_s=0.1, max_delay_ms=2)
    url = f"/v2/models/{name}/infer"
    body = bytes_request(png_bytes(cxr_images(1, seed=12)[0]))
    with Engine(cfg) as engine, TestClient(create_app(engine)) as client:
        results: list[tuple[float, int, str | None]] = []
        stop = threading.Event()

        def load():
            while not stop.is_set():
                r = client.post(url, json=body)
                results.append((time.monotonic(), r.status_code, r.json().get("model_version")))

        threads = [threading.Thread(target=load) for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.3)
        registry.client.set_registered_model_alias(name, "champion", v2)
        deadline = time.monotonic() + 20
        while engine.model(name).version != v2 and time.monotonic() < deadline:
            time.sleep(0.02)
        swapped_at = time.monotonic()
        time.sleep(0.3)
        stop.set()
        for t in threads:
            t.join(10)
    assert engine.stats(name)["version"] == v2
    statuses = [s for _, s, _ in results]
    assert statuses and all(s == 200 for s in statuses), sorted(set(statuses))
    versions = [v for _, _, v in results]
    assert versions[0] == "1" and "1" in versions and v2 in versions
    # requests answered after the swap settled (in flight at the swap may still finish on version 1)
    assert all(v == v2 for t, _, v in results if t > swapped_at + 0.1)


# ----------------------------------------------------------------------------- out-of-distribution abstention


def test_out_of_distribution_images_are_not_assessable(registry):
    pytest.importorskip("dxlab.models.ood")
    training = cxr_images(60, seed=20)
    name = "dxlab-ood"
    registry.register(name, seed=5, ood_images=training)
    rng = np.random.default_rng(0)
    photo = rng.uniform(0, 1, (40, 40, 3)).astype(np.float32)  # a colour image, nothing like a radiograph
    with Engine(config(registry, models=(f"models:/{name}@champion",))) as engine, \
            TestClient(create_app(engine)) as client:
        assert client.get(f"/v2/models/{name}").json()["parameters"]["ood_detector"] is True
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray((photo * 255).astype(np.uint8)).save(buffer, format="PNG")
        response = client.post(f"/v2/models/{name}/infer", json=bytes_request(buffer.getvalue(), png_bytes(training[0])))
        assert response.status_code == 200, response.text
        assert output(response, "assessable")["data"] == [False, True]
        assert output(response, "decision")["data"][0] == "not assessable"
        assert output(response, "decision")["data"][1] in LABELS
        reason = output(response, "abstention_reason")["data"]
        assert reason[0].startswith("not assessable: ") and reason[1] == ""
        proba = output(response, "probabilities")["data"]
        assert proba[:2] == [None, None] and all(isinstance(p, float) for p in proba[2:])
        text = client.get("/metrics").text
        assert _sample(text, "dxlab_images_total", model=name, outcome="not_assessable") == 1
        # a preprocessed tensor has no raw image: the guards on the tensor and the features still answer
        batch = engine.model(name).packaged.preprocess([training[1]]).numpy()
        tensor = client.post(f"/v2/models/{name}/infer", json={"inputs": [
            {"name": "input", "shape": list(batch.shape), "datatype": "FP32", "data": batch.ravel().tolist()}]})
        assert tensor.status_code == 200 and output(tensor, "assessable")["data"] == [True]
