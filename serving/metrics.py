"""Prometheus metrics of the inference service.

One :class:`Metrics` per engine, on its own ``CollectorRegistry`` (so that
several engines, in tests say, never share or collide). Names follow
Prometheus practice: the ``dxlab_`` prefix, base units (seconds), ``_total``
for counters. Labels are ``model``, ``version`` and ``outcome`` only: never a
patient, study or request identifier, and never a value a client chose (an
unknown model name is counted as ``model="_unknown"``), so the number of series
stays bounded.

| series | type | labels |
|---|---|---|
| ``dxlab_requests_total`` | counter | model, version, outcome (``ok``, ``bad_request``, ``too_large``, ``not_found``, ``queue_full``, ``timeout``, ``unavailable``, ``error``) |
| ``dxlab_images_total`` | counter | model, version, outcome (``assessed``, ``not_assessable``) |
| ``dxlab_request_duration_seconds`` | histogram | model, version |
| ``dxlab_inference_duration_seconds`` | histogram | model, version (one forward pass) |
| ``dxlab_batch_size`` | histogram | model, version (images per forward pass) |
| ``dxlab_queue_depth`` | gauge | model (images waiting) |
| ``dxlab_model_info`` | gauge | model, version (1 for the version served now) |
| ``dxlab_model_reloads_total`` | counter | model, outcome (``swapped``, ``failed``) |
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

PREFIX = "dxlab"
#: the model label of requests for a model that is not served
UNKNOWN_MODEL = "_unknown"
REQUEST_OUTCOMES = ("ok", "bad_request", "too_large", "not_found", "queue_full", "timeout", "unavailable", "error")
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    """The service's series, on a private registry; :meth:`exposition` renders them."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        # the *_created series double the output and say nothing a scraper needs (process-wide setting)
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(f"{PREFIX}_requests", "Inference requests, by model, version and outcome",
                                ("model", "version", "outcome"), registry=r)
        self.images = Counter(f"{PREFIX}_images", "Images answered, by model, version and outcome (assessed or not)",
                              ("model", "version", "outcome"), registry=r)
        self.request_seconds = Histogram(f"{PREFIX}_request_duration_seconds",
                                         "Time from receiving an inference request to answering it",
                                         ("model", "version"), buckets=_LATENCY_BUCKETS, registry=r)
        self.inference_seconds = Histogram(f"{PREFIX}_inference_duration_seconds", "Time of one batched forward pass",
                                           ("model", "version"), buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(f"{PREFIX}_batch_size", "Images per forward pass", ("model", "version"),
                                    buckets=_BATCH_BUCKETS, registry=r)
        self.queue_depth = Gauge(f"{PREFIX}_queue_depth", "Images waiting for a forward pass", ("model",), registry=r)
        self.model_info = Gauge(f"{PREFIX}_model_info", "1 for the model version served now", ("model", "version"),
                                registry=r)
        self.reloads = Counter(f"{PREFIX}_model_reloads", "Hot reloads after a registry alias moved, by outcome",
                               ("model", "outcome"), registry=r)

    def track_queue(self, model: str, depth: Callable[[], float]) -> None:
        """Read the queue depth of ``model`` from ``depth()`` at each scrape."""
        self.queue_depth.labels(model).set_function(depth)

    def served(self, model: str, version: str, previous: str | None = None) -> None:
        """Mark ``version`` as the one served now (dropping ``previous``'s info series)."""
        if previous is not None and previous != version:
            try:
                self.model_info.remove(model, previous)
            except KeyError:
                pass
        self.model_info.labels(model, version).set(1)

    def request(self, model: str, version: str, outcome: str, seconds: float | None = None) -> None:
        self.requests.labels(model, version, outcome).inc()
        if seconds is not None and outcome == "ok":
            self.request_seconds.labels(model, version).observe(seconds)

    def exposition(self) -> bytes:
        """The Prometheus text format of every series."""
        return generate_latest(self.registry)
