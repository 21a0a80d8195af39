"""Ray Serve: the same engine and HTTP app, as replicas across GPUs and nodes.

Each replica is one :class:`~dxlab.serving.engine.Engine` (its own dynamic
batching, hot reload and metrics) behind the very app that ``dxlab serve``
runs locally; Ray Serve's proxy spreads requests over the replicas. So the
routes, the Open Inference Protocol, the limits and the errors are the same.

``ray`` is an optional dependency (``pip install 'dxlab[ray]'``) imported only
here, only when used.

    dxlab serve --engine ray --replicas 2 --model models:/dxlab-tb-cxr@champion

or from Python, for ``serve run`` / a Serve config file::

    from dxlab.serving.engine import EngineConfig
    from dxlab.serving.ray_deployment import build_app
    app = build_app(EngineConfig(models=("models:/dxlab-tb-cxr@champion",)), replicas=2)

Each replica asks Ray for one GPU when the engine's device is ``cuda``, or
``auto`` on a cluster that has GPUs (``gpus_per_replica`` overrides), else none.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from typing import Any

from dxlab.errors import ServingError
from dxlab.serving.engine import EngineConfig

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'dxlab[ray]'"
DEPLOYMENT_NAME = "dxlab"


def _serve():
    try:
        from ray import serve
    except ImportError:
        raise ServingError(f"--engine ray needs Ray Serve, which is not installed here; install it with: {INSTALL_HINT}") \
            from None
    return serve


class DxlabReplica:
    """One Ray Serve replica: an engine started in the replica's process and the app over it."""

    def __init__(self, config: EngineConfig) -> None:
        from dxlab.serving.app import create_app
        from dxlab.serving.engine import Engine

        self.engine = Engine(config).start()
        self.app = create_app(self.engine)

    async def __call__(self, request) -> Any:
        """Run the request (a Starlette ``Request`` from Serve's proxy) through the app, as ASGI."""
        from starlette.responses import Response

        started: dict[str, Any] = {"status": 500, "headers": []}
        chunks: list[bytes] = []

        async def send(message) -> None:
            if message["type"] == "http.response.start":
                started["status"], started["headers"] = message["status"], list(message.get("headers") or [])
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self.app(request.scope, request.receive, send)
        response = Response(content=b"".join(chunks), status_code=started["status"])
        response.raw_headers = [(k, v) for k, v in started["headers"] if k.lower() != b"content-length"] + \
            [(b"content-length", str(sum(map(len, chunks))).encode())]
        return response


def build_app(config: EngineConfig, *, replicas: int = 1, gpus_per_replica: float | None = None,
              cpus_per_replica: float = 1.0):
    """The Ray Serve application (``Deployment.bind(...)``) of ``replicas`` engines serving ``config``."""
    serve = _serve()
    if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
        raise ServingError(f"replicas={replicas!r}; expected an integer >= 1")
    if gpus_per_replica is None:
        gpus_per_replica = 1.0 if config.device.startswith("cuda") or (config.device == "auto" and _cluster_gpus()) else 0.0
    options = {"num_cpus": cpus_per_replica, "num_gpus": gpus_per_replica}
    deployment = serve.deployment(DxlabReplica, name=DEPLOYMENT_NAME, num_replicas=replicas,
                                  ray_actor_options=options)
    return deployment.bind(config)


def _cluster_gpus() -> float:
    import ray

    return float(ray.cluster_resources().get("GPU", 0)) if ray.is_initialized() else 0.0


def run(config: EngineConfig, *, host: str = "127.0.0.1", port: int = 8080, replicas: int = 1,
        gpus_per_replica: float | None = None) -> None:
    """Start (or join, with ``RAY_ADDRESS``) a Ray cluster, deploy, and serve until interrupted."""
    serve = _serve()
    import ray

    from dxlab.settings import get_settings

    # replicas may run where this shell's environment is not: give them the registry explicitly
    config = replace(config, tracking_uri=config.tracking_uri or get_settings().mlflow_tracking_uri)
    ray.init(address=os.environ.get("RAY_ADDRESS") or None, ignore_reinit_error=True)
    app = build_app(config, replicas=replicas, gpus_per_replica=gpus_per_replica)
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=DEPLOYMENT_NAME, route_prefix="/")
    log.info("Ray Serve: %d replica(s) of %s on http://%s:%d", replicas, ", ".join(config.models), host, port)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.shutdown()
