"""The HTTP service: Open Inference Protocol v2 over the engine, plus Prometheus metrics.

``create_app(engine_or_config)`` gives a FastAPI app:

| route | answer |
|---|---|
| ``GET /v2`` | server metadata |
| ``GET /v2/health/live`` | 200 while the process serves HTTP |
| ``GET /v2/health/ready`` | 200 when every model is loaded and warm, else 503 |
| ``GET /v2/models/{name}[/versions/{v}]`` | model metadata (inputs, outputs, labels, operating point) |
| ``GET /v2/models/{name}[/versions/{v}]/ready`` | 200 when served, 404 else |
| ``POST /v2/models/{name}[/versions/{v}]/infer`` | inference (see :mod:`dxlab.serving.oip`) |
| ``GET /metrics`` | Prometheus text format (see :mod:`dxlab.serving.metrics`) |

Errors are ``{"error": "..."}``: 400 bad input (not JSON, wrong shape or
datatype, an undecodable image, a DICOM without pixels), 404 unknown model or
version, 413 a body over ``max_body_mb`` (checked from Content-Length and while
reading) or an image over ``max_image_pixels`` (checked from its header,
before decoding), 429 the model's queue is full (with ``Retry-After``), 503 not
ready, 504 no answer within ``timeout_s``. A bad request never stops the service.

Given an :class:`~dxlab.serving.engine.EngineConfig`, the app owns its engine:
it starts it (loading and warming the models) when the app starts, and stops
it at shutdown. Given a started or unstarted :class:`Engine`, it starts it if
needed and leaves stopping to the caller.
"""

from __future__ import annotations

import logging
import time
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from dxlab import __version__
from dxlab.errors import DxlabError, ServingError
from dxlab.serving import oip
from dxlab.serving.decode import decode_image
from dxlab.serving.engine import Engine, EngineConfig, NotReadyError, PayloadTooLargeError, Prepared
from dxlab.serving.metrics import UNKNOWN_MODEL

log = logging.getLogger(__name__)

_OUTCOMES = {400: "bad_request", 404: "not_found", 413: "too_large", 429: "queue_full", 503: "unavailable",
             504: "timeout"}


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodySizeLimit:
    """ASGI middleware: refuse bodies over ``max_bytes`` with 413, from Content-Length and while streaming.

    A declared length over the limit is refused before any byte is read; a
    chunked body fails (PayloadTooLargeError, answered 413) as soon as what was
    read passes the limit, so no oversized body is ever held in memory.
    """

    def __init__(self, app, max_bytes: int, on_reject=None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.on_reject = on_reject

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await _error(400, f"Content-Length={declared.decode('latin-1')!r} is not a number")(scope, receive, send)
                return
            if int(declared) > self.max_bytes:
                await self._reject(scope, receive, send, int(declared))
                return
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise PayloadTooLargeError(self._message(received, "more than"))
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except PayloadTooLargeError as exc:  # raised where no handler caught it
            if started:
                raise
            await _error(413, str(exc))(scope, receive, send)

    def _message(self, size: int, how: str = "") -> str:
        return (f"request body of {how + ' ' if how else ''}{size} bytes exceeds the limit of {self.max_bytes} bytes "
                f"({self.max_bytes / 1048576:g} MB; raise it with --max-body-mb)")

    async def _reject(self, scope, receive, send, size: int) -> None:
        if self.on_reject is not None:
            self.on_reject(scope)
        await _error(413, self._message(size))(scope, receive, send)


def create_app(engine_or_config: Engine | EngineConfig) -> FastAPI:
    """The FastAPI app serving ``engine_or_config`` (see the module docs)."""
    if isinstance(engine_or_config, EngineConfig):
        engine, owned = Engine(engine_or_config), True
    elif isinstance(engine_or_config, Engine):
        engine, owned = engine_or_config, False
    else:
        raise ServingError(f"create_app takes an Engine or an EngineConfig, got {type(engine_or_config).__name__}")
    config = engine.config
    metrics = engine.metrics

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if not engine.ready:
            await run_in_threadpool(engine.start)
        try:
            yield
        finally:
            if owned:
                await run_in_threadpool(engine.stop)

    app = FastAPI(title="dxlab inference service", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.state.engine = engine

    def labels_of(name: str) -> tuple[str, str]:
        """(model, version) metric labels: never a client-chosen value for a model not served."""
        if name in engine.model_names():
            return name, engine.server(name).current.version
        return UNKNOWN_MODEL, ""

    def count_rejected(scope) -> None:
        parts = scope.get("path", "").strip("/").split("/")
        if len(parts) >= 4 and parts[:2] == ["v2", "models"] and parts[-1] == "infer":
            metrics.request(*labels_of(parts[2]), "too_large")

    app.add_middleware(BodySizeLimit, max_bytes=config.max_body_bytes, on_reject=count_rejected)

    # errors: always {"error": ...} -----------------------------------------------------------

    @app.exception_handler(ServingError)
    async def serving_error(request: Request, exc: ServingError) -> JSONResponse:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return _error(exc.status, str(exc), headers)

    @app.exception_handler(DxlabError)
    async def dxlab_error(request: Request, exc: DxlabError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, f"invalid request: {details}")

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        return _error(500, f"internal error ({type(exc).__name__}); the service logged it")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    # health and metadata ----------------------------------------------------------------------

    @app.get("/v2")
    async def server_metadata() -> dict[str, Any]:
        return {"name": "dxlab", "version": __version__, "extensions": [], "models": engine.model_names()}

    @app.get("/v2/health/live")
    async def live() -> dict[str, Any]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"ready": engine.ready}, status_code=200 if engine.ready else 503)

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_metadata(name: str, version: str | None = None) -> dict[str, Any]:
        return oip.model_metadata(engine.model(name, version))

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> JSONResponse:
        model = engine.model(name, version)
        return JSONResponse({"name": name, "version": model.version, "ready": engine.ready},
                            status_code=200 if engine.ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(metrics.exposition(), media_type=metrics.content_type)

    # inference -------------------------------------------------------------------------------

    def prepare(name: str, version: str | None, body: bytes, headers: dict[str, str]) -> tuple[oip.InferRequest, Prepared]:
        """Parse, decode and preprocess in one worker thread: JSON, base64, decoding and resizing are CPU work."""
        model = engine.model(name, version)
        request = oip.parse_infer_request(body, headers)
        if request.encoded is not None:
            images = [decode_image(data, name=f"{request.input_name}[{i}]", max_pixels=config.max_image_pixels)
                      for i, data in enumerate(request.encoded)]
            return request, engine.prepare(name, images=images, version=version)
        if oip.tensor_kind(request.tensor, model) == "batch":
            return request, engine.prepare(name, batch=request.tensor, version=version)
        return request, engine.prepare(name, images=list(request.tensor), version=version)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> JSONResponse:
        start = time.perf_counter()
        model_label, version_label = labels_of(name)
        try:
            if not engine.ready:
                raise NotReadyError("the service is starting or stopping; not ready")
            engine.model(name, version)  # 404 before reading a body for a model not served
            body = await request.body()
            parsed, prepared = await run_in_threadpool(prepare, name, version, body, dict(request.headers))
            result = await engine.aresult(prepared, heatmap=parsed.heatmap, heatmap_label=parsed.heatmap_label)
            if parsed.heatmap:  # PNG overlays to encode: a worker thread's job
                payload = await run_in_threadpool(oip.infer_response, result, parsed, config.heatmap_grid_size)
            else:
                payload = oip.infer_response(result, parsed, config.heatmap_grid_size)
        except ServingError as exc:
            metrics.request(model_label, version_label, _OUTCOMES.get(exc.status, "error"))
            raise
        except DxlabError:
            metrics.request(model_label, version_label, "bad_request")
            raise
        except Exception:
            metrics.request(model_label, version_label, "error")
            log.exception("inference on %s failed", model_label)
            raise
        metrics.request(result.model, result.version, "ok", time.perf_counter() - start)
        abstained = sum(r is not None for r in result.abstentions)
        if abstained:
            metrics.images.labels(result.model, result.version, "not_assessable").inc(abstained)
        if len(result.abstentions) - abstained:
            metrics.images.labels(result.model, result.version, "assessed").inc(len(result.abstentions) - abstained)
        return JSONResponse(payload)

    return app

