"""``dxlab serve``: its options, the local engine behind uvicorn, and Ray's install hint."""

from __future__ import annotations

import importlib.util

import pytest
from fastapi.testclient import TestClient

from dxlab.cli import main


def test_serve_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["serve", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--model", "--host", "--port", "--device", "--max-batch-size", "--max-delay-ms", "--queue-size",
                 "--timeout-s", "--reload-interval-s", "--max-body-mb", "--engine"):
        assert flag in out


def test_serve_runs_the_app_with_the_options(registry, monkeypatch, capsys):
    import uvicorn

    seen = {}

    def fake_run(app, host, port, **kwargs):
        seen.update(host=host, port=port)
        with TestClient(app) as client:
            seen["ready"] = client.get("/v2/health/ready").status_code
            seen["meta"] = client.get("/v2/models/tiny").json()

    monkeypatch.setattr(uvicorn, "run", fake_run)
    code = main(["serve", "--model", "tiny=models:/dxlab-tiny@champion", "--device", "cpu", "--port", "8123",
                 "--max-batch-size", "4", "--reload-interval-s", "0", "--tracking-uri", registry.uri])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert seen["host"] == "127.0.0.1" and seen["port"] == 8123 and seen["ready"] == 200
    assert seen["meta"]["name"] == "tiny" and seen["meta"]["versions"] == ["1"]
    assert "tiny v1 on cpu" in out


@pytest.mark.parametrize(("argv", "message"), [
    (["--model", "models:/dxlab-tiny"], "models:/NAME@ALIAS"),
    (["--model", "models:/no-such-model@champion", "--device", "cpu"], "not found in the model registry"),
    (["--model", "models:/x@champion", "--max-batch-size", "0"], "max_batch_size=0"),
    (["--model", "models:/x@champion", "--replicas", "2"], "--replicas needs --engine ray"),
])
def test_bad_options_fail_with_a_message(registry, capsys, argv, message):
    code = main(["serve", *argv, "--tracking-uri", registry.uri])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


@pytest.mark.skipif(importlib.util.find_spec("ray") is not None, reason="ray is installed here")
def test_ray_engine_without_ray_says_how_to_install_it(capsys):
    code = main(["serve", "--model", "models:/dxlab-tiny@champion", "--engine", "ray"])
    err = capsys.readouterr().err
    assert code == 2 and "pip install 'dxlab[ray]'" in err


def test_a_ray_replica_runs_requests_through_the_same_app(registry):
    """The replica class needs no Ray to run: Serve's proxy hands it Starlette requests."""
    import asyncio
    import base64
    import json

    from starlette.requests import Request

    from dxlab.serving.engine import EngineConfig
    from dxlab.serving.ray_deployment import DxlabReplica

    from .conftest import cxr_images, png_bytes

    replica = DxlabReplica(EngineConfig(models=("models:/dxlab-tiny@champion",), device="cpu", reload_interval_s=0,
                                        tracking_uri=registry.uri))

    async def call(method: str, path: str, body: bytes = b""):
        done = False

        async def receive():
            nonlocal done
            if done:
                return {"type": "http.disconnect"}
            done = True
            return {"type": "http.request", "body": body, "more_body": False}

        scope = {"type": "http", "method": method, "path": path, "raw_path": path.encode(), "root_path": "",
                 "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("testserver", 80),
                 "client": ("testclient", 50000),
                 "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
        return await replica(Request(scope, receive))

    try:
        ready = asyncio.run(call("GET", "/v2/health/ready"))
        assert ready.status_code == 200 and json.loads(ready.body) == {"ready": True}
        body = json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                       "data": [base64.b64encode(png_bytes(cxr_images(1)[0])).decode()]}]}).encode()
        infer = asyncio.run(call("POST", "/v2/models/dxlab-tiny/infer", body))
        assert infer.status_code == 200 and json.loads(infer.body)["model_version"] == "1"
        missing = asyncio.run(call("GET", "/v2/models/nope"))
        assert missing.status_code == 404 and "error" in json.loads(missing.body)
    finally:
        replica.engine.stop()
