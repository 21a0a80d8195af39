"""The inference engine: registered models loaded once, requests batched onto them.

An :class:`Engine` serves several packaged models at once, each loaded from
the MLflow registry by ``models:/NAME@ALIAS`` (or ``models:/NAME/VERSION``,
``runs:/...``, a local folder) with :func:`dxlab.models.packaged.load_packaged`:
the preprocessing, labels, thresholds and temperature come from the package,
never from here.

**Device and precision.** ``device="auto"`` takes CUDA when present, else the
CPU. Every forward pass runs under ``torch.inference_mode``, and under
autocast where the hardware computes in reduced precision: ``precision="auto"``
takes bf16 on a GPU that supports it (else fp16) and on a CPU with native bf16
(AVX-512 BF16 or AMX, :func:`native_bf16_cpu`), fp32 on other CPUs;
``fp32``, ``bf16`` or ``fp16`` (CUDA only) override it. When a version loads,
its reduced-precision probabilities are compared with fp32 on a seeded probe
batch; beyond :data:`PRECISION_TOLERANCE` it is served in fp32.
Probabilities are always computed in float32. The forward passes
run on an inference copy of the network (:func:`dxlab.models.inference.inference_network`:
BatchNorm folded into the convolutions, channels-last memory; the same answers
up to float rounding). Each model is warmed up (batch 1 and the maximum batch,
and one Grad-CAM) before it serves.

**Threads.** Each model has ``instances`` worker threads (auto: two on a CPU
with two cores or more, else one), each running its own forward passes with
``threads`` torch threads (auto on the CPU: the cores but one, shared among
the instances; see :func:`forward_threads`). The setting is process-wide:
:meth:`Engine.stop` restores torch's thread count.

**Dynamic batching.** Each model has one bounded queue that its workers share.
A request (one or more images) is decoded and preprocessed in the caller's
thread, then queued. A free worker takes the oldest request, waits until
``max_batch_size`` images are queued or ``max_delay_ms`` has passed since that
request arrived, concatenates what it took (whole requests, up to
``max_batch_size`` images; a larger request runs alone, in chunks), runs one
forward pass and resolves each request's future with its rows. When the queue
already holds ``queue_size`` images, :meth:`Engine.submit` raises
:class:`QueueFullError` at once (HTTP 429, with a ``retry_after`` estimated
from the queue depth and the recent forward-pass time). A request not started
by its deadline (``timeout_s``) fails with :class:`RequestTimeoutError`.

**Hot reload.** For ``@ALIAS`` sources a poller asks the registry every
``reload_interval_s`` which version the alias names. When it moved, the new
version is loaded and warmed in the poller's thread while the old one keeps
serving, then swapped in by one reference assignment. Each queued request
holds the loaded model it was preprocessed for, and the worker batches only
requests of one loaded model together, so requests in flight finish on the old
version (its preprocessing may differ) and none fails during the swap.

**Out-of-distribution abstention.** When the package's ``extra["ood"]`` holds
a fitted detector, :func:`dxlab.models.ood.ood_check` runs on each batch; an
image it flags is answered "not assessable" with the reason, without
probabilities or a decision. Older packages have no detector: no abstention.

**Grad-CAM** (on request): computed after the batched forward pass with
:mod:`dxlab.models.gradcam` (which works on a twin of the network, so the
worker keeps batching on the network itself), one request at a time per model;
the overlay is drawn over the decoded image as sent.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import logging
import math
import os
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dxlab.errors import DxlabError, ModelError, ServingError
from dxlab.models.inference import inference_network
from dxlab.serving.metrics import Metrics

log = logging.getLogger(__name__)

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
#: what a served model name may hold (it appears in URLs and metric labels)
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
NOT_ASSESSABLE = "not assessable"
#: largest difference in a probability that bf16/fp16 forward passes may show against fp32 on the
#: load-time probe (PRECISION_PROBE seeded standard-normal inputs) before a model falls back to fp32
PRECISION_TOLERANCE = 0.02
PRECISION_PROBE = 8


# --------------------------------------------------------------------------- errors


class BadInputError(ServingError):
    """Input the models cannot take: a wrong shape, datatype or value (HTTP 400)."""

    status = 400


class UnknownModelError(ServingError):
    """A model (or model version) that this engine does not serve (HTTP 404)."""

    status = 404


class PayloadTooLargeError(ServingError):
    """A request larger than the service accepts (HTTP 413)."""

    status = 413


class QueueFullError(ServingError):
    """The model's queue is full; try again after ``retry_after`` seconds (HTTP 429)."""

    status = 429


class NotReadyError(ServingError):
    """The engine is not started, or is stopping (HTTP 503)."""

    status = 503


class RequestTimeoutError(ServingError):
    """The request was not answered within its timeout (HTTP 504)."""

    status = 504


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ModelSource:
    """Where a served model comes from, and the name it is served under."""

    name: str
    uri: str
    #: for models:/ URIs: the registered model's name, and the alias or version it names
    registered: str | None = None
    alias: str | None = None
    version: str | None = None

    @classmethod
    def parse(cls, text: str) -> ModelSource:
        """``URI`` or ``NAME=URI``; a ``models:/`` URI is served under its registered name by default."""
        text = text.strip()
        name, sep, uri = text.partition("=")
        if not sep or "://" in name or ":/" in name:
            name, uri = "", text
        registered = alias = version = None
        if uri.startswith("models:/"):
            rest = uri[len("models:/"):].strip("/")
            if "@" in rest:
                registered, _, alias = rest.partition("@")
            elif "/" in rest:
                registered, _, version = rest.rpartition("/")
            if not registered or not (alias or version) or "/" in registered:
                raise ServingError(f"model URI {uri!r}; expected models:/NAME@ALIAS (e.g. models:/dxlab-tb-cxr@champion) "
                                   "or models:/NAME/VERSION")
        name = name or registered or os.path.basename(uri.rstrip("/")) or "model"
        if not NAME_PATTERN.match(name):
            raise ServingError(f"served model name {name!r}; expected letters, digits, '.', '_' or '-' "
                               "(give one as NAME=URI)")
        return cls(name=name, uri=uri, registered=registered, alias=alias, version=version)


@dataclass(frozen=True)
class EngineConfig:
    """How the engine (and the HTTP service around it) runs; ``models`` are ``URI`` or ``NAME=URI``."""

    models: tuple[str, ...]
    device: str = "auto"
    precision: str = "auto"
    max_batch_size: int = 16
    max_delay_ms: float = 5.0
    #: images waiting per model before requests get 429
    queue_size: int = 256
    timeout_s: float = 10.0
    #: how often aliases are checked in the registry; 0 turns hot reload off
    reload_interval_s: float = 30.0
    warmup: bool = True
    #: MLflow tracking (and registry) URI; default: dxlab's settings
    tracking_uri: str | None = None
    #: largest request body the HTTP service reads
    max_body_mb: float = 20.0
    #: largest decoded image, in pixels (header-checked before decoding; capped at datasets' MAX_PIXELS)
    max_image_pixels: int = 50_000_000
    #: side of the small heatmap array returned beside the PNG overlay
    heatmap_grid_size: int = 16
    #: forward passes that run at once per model (worker threads sharing its queue and its network); 0: auto
    #: (see :func:`forward_instances`)
    instances: int = 0
    #: torch's intra-op threads per forward pass; 0: auto (see :func:`forward_threads`)
    threads: int = 0

    def __post_init__(self) -> None:
        models = (self.models,) if isinstance(self.models, str) else tuple(self.models)
        if not models:
            raise ServingError("no model to serve; give at least one, e.g. models:/dxlab-tb-cxr@champion")
        object.__setattr__(self, "models", models)
        sources = [ModelSource.parse(m) for m in models]
        names = [s.name for s in sources]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ServingError(f"two models would be served as {', '.join(dupes)}; name them with NAME=URI")
        if self.device not in DEVICES:
            raise ServingError(f"device={self.device!r}; expected one of {', '.join(DEVICES)}")
        if self.precision not in PRECISIONS:
            raise ServingError(f"precision={self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        for key, low in (("max_batch_size", 1), ("queue_size", 1), ("max_image_pixels", 1), ("heatmap_grid_size", 1),
                         ("instances", 0), ("threads", 0)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ServingError(f"{key}={value!r}; expected an integer >= {low}")
        for key, positive in (("max_delay_ms", False), ("timeout_s", True), ("reload_interval_s", False),
                              ("max_body_mb", True)):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                    or value < 0 or (positive and value == 0):
                raise ServingError(f"{key}={value!r}; expected a number {'> 0' if positive else '>= 0'}")

    @property
    def sources(self) -> tuple[ModelSource, ...]:
        return tuple(ModelSource.parse(m) for m in self.models)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when present, else the CPU; ``cuda`` without a GPU is refused."""
    if device not in DEVICES and not device.startswith("cuda:"):
        raise ServingError(f"device={device!r}; expected one of {', '.join(DEVICES)}")
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ServingError(f"device={device!r} but no CUDA GPU is available here; use --device cpu or auto")
    return torch.device(device)


def _usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def forward_instances(instances: int, device: torch.device) -> int:
    """Forward passes that run at once per model: ``instances`` when > 0; auto (0): two on a CPU
    with two cores or more, else one. Two single-threaded passes use two cores without the
    per-layer waits of one pass split over two threads (measured in ``benchmarks/serve.py``)."""
    if instances:
        return instances
    return 2 if device.type == "cpu" and _usable_cores() >= 2 else 1


def forward_threads(threads: int, instances: int, device: torch.device) -> int:
    """Torch's intra-op threads per forward pass; 0: leave torch's setting alone.

    ``threads`` > 0 is taken as given. Auto (0) on the CPU, when neither
    ``OMP_NUM_THREADS`` nor ``MKL_NUM_THREADS`` is set: the usable cores but one,
    shared among the ``instances`` that run at once. The core left over is for
    the HTTP server and the image decoding, which run in the same process while
    a forward pass computes: when they take a core from a pass that counted on
    all of them, its threads wait for each other at every layer and the pass
    slows down (measured in ``benchmarks/serve.py``).
    """
    if threads:
        return threads
    if device.type != "cpu" or os.environ.get("OMP_NUM_THREADS") or os.environ.get("MKL_NUM_THREADS"):
        return 0
    return max(1, (_usable_cores() - 1) // instances)


def native_bf16_cpu() -> bool:
    """Whether this CPU computes bf16 in hardware (AVX-512 BF16 or AMX), where oneDNN runs a
    bf16 convolution about twice as fast as fp32; elsewhere bf16 is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    return any(bool(getattr(cpu, probe, lambda: False)()) for probe in
               ("_is_avx512_bf16_supported", "_is_amx_tile_supported"))


def autocast_dtype(device: torch.device, precision: str) -> torch.dtype | None:
    """The autocast dtype of the forward passes; None for fp32."""
    if precision == "fp32":
        return None
    if device.type == "cpu":
        if precision == "fp16":
            raise ServingError("precision='fp16' runs on CUDA only; on the CPU use bf16, fp32 or auto")
        if precision == "auto":
            return torch.bfloat16 if native_bf16_cpu() else None
        if not native_bf16_cpu():
            log.warning("this CPU has no native bf16 (AVX-512 BF16 or AMX): bf16 is emulated, slower than fp32")
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if precision == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def precision_name(amp_dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[amp_dtype]


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Heatmap:
    """A Grad-CAM heatmap of one image: a PNG overlay and a small array (rows of values in [0, 1])."""

    label: str
    png: bytes
    grid: list[list[float]]


@dataclass
class InferenceResult:
    """The answer for one request of N images.

    ``probabilities`` is ``(N, K)`` float32 in label order, with NaN rows for
    images that are not assessable; ``decisions`` holds the label called at the
    model's operating point, or None where ``abstentions`` gives the reason.
    """

    model: str
    version: str
    run_id: str | None
    labels: tuple[str, ...]
    probabilities: np.ndarray
    decisions: list[str | None]
    abstentions: list[str | None]
    heatmaps: list[Heatmap | None] | None = None
    #: images in the forward pass(es) this request rode in (for tests and tuning)
    batch_size: int = 0

    def items(self) -> list[dict[str, Any]]:
        """One JSON-ready dict per image."""
        out = []
        for i, reason in enumerate(self.abstentions):
            item: dict[str, Any] = {"assessable": reason is None, "decision": self.decisions[i] or NOT_ASSESSABLE,
                                    "reason": reason,
                                    "probabilities": None if reason is not None else
                                    {label: float(p) for label, p in zip(self.labels, self.probabilities[i])}}
            if self.heatmaps is not None:
                hm = self.heatmaps[i]
                item["heatmap"] = None if hm is None else {
                    "label": hm.label, "grid": hm.grid, "png_base64": base64.b64encode(hm.png).decode("ascii")}
            out.append(item)
        return out


# --------------------------------------------------------------------------- a loaded model version


class LoadedModel:
    """One version of a packaged model on the engine's device, ready to run."""

    def __init__(self, name: str, version: str, run_id: str | None, packaged, amp_dtype: torch.dtype | None) -> None:
        self.name = name
        self.version = version
        self.run_id = run_id
        self.packaged = packaged
        self.device = packaged.device
        self.amp_dtype = amp_dtype
        #: the network the batched forward passes run: BatchNorm folded, channels-last (Grad-CAM uses the package's)
        self.net = inference_network(packaged.model, self.input_shape, device=self.device)
        #: Grad-CAM requests run one at a time per loaded model
        self.cam_lock = threading.Lock()
        #: the package's fitted out-of-distribution guards (older packages have none: no abstention)
        self.ood = (packaged.info.extra or {}).get("ood")
        if self.ood:
            from dxlab.models.ood import load_ood

            load_ood(self.ood)  # a malformed description fails the load, not every request

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(self.packaged.labels)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.packaged.spec.input_shape)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def forward(self, x: torch.Tensor, *, with_features: bool = False):
        """Preprocessed batch -> calibrated probabilities (N, K), float32 on the CPU; with
        ``with_features`` also the penultimate features of the same pass (for the OOD detector)."""
        x = x.to(self.device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        with torch.inference_mode(), self._autocast():
            if with_features:
                from dxlab.models.ood import features

                feats, logits = features(self.net, x, with_logits=True)
            else:
                logits = self.net(x)
            proba = self.packaged.proba_from_logits(logits).cpu().numpy()
        return (proba, feats) if with_features else proba

    @property
    def precision(self) -> str:
        return precision_name(self.amp_dtype)

    def warm_up(self, max_batch_size: int) -> None:
        for n in sorted({1, max_batch_size}):
            x = torch.zeros((n, *self.input_shape))
            if self.ood:
                _ood_reasons(self, [None] * n, x, self.forward(x, with_features=True)[1])
            else:
                self.forward(x)
        self._warm_up_gradcam()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def check_precision(self) -> None:
        """Reduced precision against fp32 on a seeded probe batch: beyond :data:`PRECISION_TOLERANCE`
        in any probability (or not finite), this model falls back to fp32."""
        if self.amp_dtype is None:
            return
        probe = torch.randn((PRECISION_PROBE, *self.input_shape), generator=torch.Generator().manual_seed(0))
        reduced = self.forward(probe)
        amp_dtype, self.amp_dtype = self.amp_dtype, None
        drift = float(np.abs(reduced - self.forward(probe)).max())
        if drift <= PRECISION_TOLERANCE:
            self.amp_dtype = amp_dtype
            log.info("model %s version %s: %s forward passes, probabilities within %.4f of fp32 on the probe",
                     self.name, self.version, self.precision, drift)
        else:
            log.warning("model %s version %s: %s changed a probability by %s against fp32 (tolerance %s): "
                        "serving it in fp32", self.name, self.version, precision_name(amp_dtype), drift,
                        PRECISION_TOLERANCE)

    def _warm_up_gradcam(self) -> None:
        """Import MONAI and build Grad-CAM's twin now (seconds), not on the first clinician's heatmap request."""
        try:
            from dxlab.models.gradcam import gradcam

            with self.cam_lock:
                gradcam(self.packaged.model, torch.zeros((1, *self.input_shape)))
        except (ImportError, ModelError) as exc:
            log.warning("model %s version %s: heatmaps will not be available: %s", self.name, self.version, exc)


# --------------------------------------------------------------------------- the per-model queue and worker


@dataclass
class Prepared:
    """A request decoded and preprocessed for one loaded model, ready to queue."""

    model: LoadedModel
    batch: torch.Tensor
    #: the decoded images (for OOD checks and heatmap overlays); None for preprocessed tensors
    raw: list[np.ndarray] | None = None

    @property
    def size(self) -> int:
        return int(self.batch.shape[0])


@dataclass
class _Queued:
    prepared: Prepared
    future: concurrent.futures.Future
    enqueued: float
    deadline: float


@dataclass
class _Rows:
    """What the worker resolves a request's future with."""

    model: LoadedModel
    probabilities: np.ndarray
    abstentions: list[str | None]
    batch_size: int


class _ModelServer:
    """One served name: the loaded model now current, its queue and its worker threads (the instances)."""

    def __init__(self, source: ModelSource, model: LoadedModel, config: EngineConfig, metrics: Metrics,
                 instances: int = 1) -> None:
        self.source = source
        self.current = model
        self.config = config
        self.metrics = metrics
        self._queue: deque[_Queued] = deque()
        self._pending = 0  # images queued
        self._cond = threading.Condition()
        self._stopping = False
        self._batch_seconds = 0.0  # moving average of a forward pass
        self.batch_sizes: Counter[int] = Counter()
        self.requests_done = 0
        metrics.served(source.name, model.version)
        metrics.track_queue(source.name, lambda: self._pending)
        self._threads = [threading.Thread(target=self._run, name=f"dxlab-batcher-{source.name}-{i}", daemon=True)
                         for i in range(instances)]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return self._pending

    def swap(self, model: LoadedModel) -> LoadedModel:
        old, self.current = self.current, model
        self.metrics.served(self.source.name, model.version, previous=old.version)
        return old

    def retry_after(self) -> int:
        batches = self._pending / self.config.max_batch_size + 1
        return max(1, math.ceil(batches * max(self._batch_seconds, self.config.max_delay_ms / 1000)))

    def submit(self, prepared: Prepared, timeout_s: float) -> concurrent.futures.Future:
        n = prepared.size
        if n > self.config.queue_size:
            raise PayloadTooLargeError(f"a request of {n} images; model {self.source.name!r} takes at most "
                                       f"{self.config.queue_size} per request (its queue size)")
        now = time.monotonic()
        item = _Queued(prepared, concurrent.futures.Future(), now, now + timeout_s)
        with self._cond:
            if self._stopping:
                raise NotReadyError("the engine is stopping; not taking requests")
            if self._pending + n > self.config.queue_size:
                raise QueueFullError(f"model {self.source.name!r} has {self._pending} images queued (limit "
                                     f"{self.config.queue_size}); try again shortly", retry_after=self.retry_after())
            self._queue.append(item)
            self._pending += n
            self._cond.notify()
        return item.future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=30)
        with self._cond:
            while self._queue:
                item = self._queue.popleft()
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(NotReadyError("the engine stopped before this request ran"))
            self._pending = 0

    # the worker -------------------------------------------------------------

    def _take(self) -> list[_Queued] | None:
        """Block until a batch is due; take it off the queue (None when stopping)."""
        max_n, delay = self.config.max_batch_size, self.config.max_delay_ms / 1000
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if self._stopping:
                return None
            first = self._queue[0]
            due = first.enqueued + delay
            while self._pending < max_n and not self._stopping:
                left = due - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            model = first.prepared.model
            taken, rest, n = [], deque(), 0
            for item in self._queue:
                size = item.prepared.size
                # one loaded model per batch: requests queued before a swap finish on the old version
                if item.prepared.model is model and (not taken or n + size <= max_n):
                    taken.append(item)
                    n += size
                else:
                    rest.append(item)
            self._queue = rest
            self._pending -= n
            return taken

    def _run(self) -> None:
        while True:
            items = self._take()
            if items is None:
                return
            now = time.monotonic()
            live = []
            for item in items:
                if not item.future.set_running_or_notify_cancel():
                    continue  # the caller gave up
                if now > item.deadline:
                    item.future.set_exception(RequestTimeoutError(
                        f"not started within {self.config.timeout_s:g} s (model {self.source.name!r} is overloaded)"))
                    continue
                live.append(item)
            if live:
                self._run_batch(live)

    def _run_batch(self, items: list[_Queued]) -> None:
        model = items[0].prepared.model
        try:
            x = torch.cat([item.prepared.batch for item in items]) if len(items) > 1 else items[0].prepared.batch
            n = int(x.shape[0])
            start = time.perf_counter()
            step = self.config.max_batch_size
            outs = [model.forward(x[i:i + step], with_features=bool(model.ood)) for i in range(0, n, step)]
            if model.ood:
                proba = np.concatenate([p for p, _ in outs])
                feats = torch.cat([f for _, f in outs])
            else:
                proba = np.concatenate(outs) if len(outs) > 1 else outs[0]
            seconds = time.perf_counter() - start
            reasons: list[str | None] = [None] * n
            if model.ood:
                raw = [image for item in items for image in (item.prepared.raw or [None] * item.prepared.size)]
                reasons = _ood_reasons(model, raw, x, feats)
        except Exception as exc:  # noqa: BLE001 - one bad batch must fail its requests, not the worker
            log.exception("model %s version %s: forward pass failed", model.name, model.version)
            error = exc if isinstance(exc, ServingError) else ServingError(f"inference failed: {type(exc).__name__}: {exc}")
            for item in items:
                item.future.set_exception(error)
            return
        self._batch_seconds = seconds if not self._batch_seconds else 0.8 * self._batch_seconds + 0.2 * seconds
        largest = min(n, self.config.max_batch_size)
        with self._cond:
            self.batch_sizes[largest] += 1
        self.metrics.batch_size.labels(self.source.name, model.version).observe(largest)
        self.metrics.inference_seconds.labels(self.source.name, model.version).observe(seconds)
        offset = 0
        for item in items:
            size = item.prepared.size
            item.future.set_result(_Rows(model, proba[offset:offset + size], reasons[offset:offset + size], n))
            offset += size
        with self._cond:
            self.requests_done += len(items)


def _ood_reasons(model: LoadedModel, raw: list[np.ndarray | None], batch: torch.Tensor,
                 feats: torch.Tensor) -> list[str | None]:
    """Why each image is not assessable (None: assessable), by the package's OOD guards.

    Images sent decoded have their raw statistics checked too; images sent as
    preprocessed tensors (``raw`` None) only the preprocessed ones.
    """
    from dxlab.models.ood import ood_check

    n = int(batch.shape[0])
    reasons: list[str | None] = [None] * n
    with_raw = [i for i in range(n) if raw[i] is not None]
    without = [i for i in range(n) if raw[i] is None]
    for rows, images in ((with_raw, [raw[i] for i in with_raw]), (without, None)):
        if not rows:
            continue
        index = torch.tensor(rows)
        found = list(ood_check(model.packaged.model, model.ood, images, batch[index], feats=feats[index.to(feats.device)]))
        if len(found) != len(rows):
            raise ServingError(f"the out-of-distribution check gave {len(found)} answers for {len(rows)} images")
        for i, reason in zip(rows, found):
            reasons[i] = reason
    return reasons


# --------------------------------------------------------------------------- the engine


class Engine:
    """Serves the configured models: load, batch, answer, reload. Use as a context manager or start/stop."""

    def __init__(self, config: EngineConfig, *, metrics: Metrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or Metrics()
        self.device = resolve_device(config.device)
        self.amp_dtype = autocast_dtype(self.device, config.precision)
        self._servers: dict[str, _ModelServer] = {}
        self._client = None
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._reload_lock = threading.Lock()
        self._started = False
        self._threads_before = 0  # torch's thread count before start() changed it
        #: forward passes that run at once per model
        self.instances = forward_instances(config.instances, self.device)

    # lifecycle ----------------------------------------------------------------

    def start(self) -> Engine:
        """Load and warm every model, then start the batchers and the reload poller."""
        if self._started:
            return self
        threads = forward_threads(self.config.threads, self.instances, self.device)
        if threads and threads != torch.get_num_threads():
            self._threads_before = torch.get_num_threads()
            torch.set_num_threads(threads)
        try:
            for source in self.config.sources:
                model = self._load(source)
                self._servers[source.name] = _ModelServer(source, model, self.config, self.metrics, self.instances)
        except BaseException:
            self.stop()
            raise
        self._started = True
        if self.config.reload_interval_s > 0 and any(s.source.alias for s in self._servers.values()):
            self._poller = threading.Thread(target=self._poll, name="dxlab-reload", daemon=True)
            self._poller.start()
        log.info("serving %s on %s", ", ".join(f"{s.source.name} v{s.current.version} ({s.current.precision})"
                                               for s in self._servers.values()), self.device)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=30)
        for server in self._servers.values():
            server.stop()
        self._started = False
        if self._threads_before:
            torch.set_num_threads(self._threads_before)
            self._threads_before = 0

    def __enter__(self) -> Engine:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def ready(self) -> bool:
        return self._started and not self._stop.is_set()

    # what is served ---------------------------------------------------------------

    def model_names(self) -> list[str]:
        return list(self._servers)

    def server(self, name: str) -> _ModelServer:
        server = self._servers.get(name)
        if server is None:
            served = ", ".join(self._servers) or "none"
            raise UnknownModelError(f"no model named {name!r} is served here; served: {served}")
        return server

    def model(self, name: str, version: str | None = None) -> LoadedModel:
        """The loaded model served as ``name`` now; with ``version``, only if that is the one served."""
        model = self.server(name).current
        if version is not None and version != model.version:
            raise UnknownModelError(f"model {name!r} version {version!r} is not served; version {model.version} is")
        return model

    def stats(self, name: str) -> dict[str, Any]:
        """Counters of the batcher of ``name``: forward passes by batch size, requests done, queue depth."""
        server = self.server(name)
        sizes = dict(server.batch_sizes)
        return {"version": server.current.version, "batch_sizes": sizes, "batches": sum(sizes.values()),
                "max_batch": max(sizes, default=0), "requests": server.requests_done, "queue_depth": server.depth}

    # inference -----------------------------------------------------------------

    def prepare(self, name: str, *, images: Sequence[np.ndarray] | None = None,
                batch: np.ndarray | torch.Tensor | None = None, version: str | None = None) -> Prepared:
        """Decoded images (any size, float in [0, 1]) or a preprocessed batch (N, C, H, W) -> a queueable request."""
        if not self.ready:
            raise NotReadyError("the engine is not started")
        model = self.model(name, version)
        if (images is None) == (batch is None):
            raise BadInputError("give either images or a preprocessed batch")
        if images is not None:
            if len(images) == 0:
                raise BadInputError("no image in the request")
            try:
                return Prepared(model, model.packaged.preprocess(list(images)), list(images))
            except ModelError as exc:
                raise BadInputError(str(exc)) from None
        x = torch.as_tensor(batch)
        expected = model.input_shape
        if x.ndim != 4 or tuple(x.shape[1:]) != expected or x.shape[0] == 0:
            raise BadInputError(f"tensor of shape {list(x.shape)}; model {name!r} takes preprocessed batches "
                                f"[N, {', '.join(map(str, expected))}] with N >= 1")
        x = x.float().contiguous()
        if not bool(torch.isfinite(x).all()):
            raise BadInputError("tensor holds NaN or infinite values")
        return Prepared(model, x)

    def submit(self, prepared: Prepared) -> concurrent.futures.Future:
        """Queue a prepared request; the future gives the worker's rows. Raises QueueFullError when full."""
        return self.server(prepared.model.name).submit(prepared, self.config.timeout_s)

    def finish(self, prepared: Prepared, rows: _Rows, *, heatmap: bool = False,
               heatmap_label: str | None = None) -> InferenceResult:
        """The worker's rows -> the result: decisions at the operating point, heatmaps when asked."""
        model = rows.model
        proba = np.array(rows.probabilities, dtype=np.float32, copy=True)
        reasons = list(rows.abstentions)
        ok = [i for i, r in enumerate(reasons) if r is None]
        decisions: list[str | None] = [None] * len(reasons)
        if ok:
            for i, call in zip(ok, model.packaged.decide(proba[ok])):
                decisions[i] = call
        proba[[i for i, r in enumerate(reasons) if r is not None]] = np.nan
        result = InferenceResult(model=model.name, version=model.version, run_id=model.run_id, labels=model.labels,
                                 probabilities=proba, decisions=decisions, abstentions=reasons,
                                 batch_size=rows.batch_size)
        if heatmap:
            result.heatmaps = self.explain(prepared, ok, heatmap_label)
        return result

    def predict(self, name: str, *, images: Sequence[np.ndarray] | None = None,
                batch: np.ndarray | torch.Tensor | None = None, heatmap: bool = False,
                heatmap_label: str | None = None, version: str | None = None) -> InferenceResult:
        """Blocking: prepare, queue, wait (up to ``timeout_s``), finish."""
        prepared = self.prepare(name, images=images, batch=batch, version=version)
        if heatmap_label is not None:
            self._check_label(prepared.model, heatmap_label)
        future = self.submit(prepared)
        try:
            rows = future.result(timeout=self.config.timeout_s + 1.0)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise RequestTimeoutError(f"no answer within {self.config.timeout_s:g} s") from None
        return self.finish(prepared, rows, heatmap=heatmap, heatmap_label=heatmap_label)

    async def aresult(self, prepared: Prepared, *, heatmap: bool = False,
                      heatmap_label: str | None = None) -> InferenceResult:
        """Queue a prepared request and await its result (Grad-CAM, when asked, in a worker thread)."""
        from starlette.concurrency import run_in_threadpool

        if heatmap_label is not None:
            self._check_label(prepared.model, heatmap_label)
        future = self.submit(prepared)
        try:
            rows = await asyncio.wait_for(asyncio.wrap_future(future), self.config.timeout_s + 1.0)
        except asyncio.TimeoutError:
            future.cancel()
            raise RequestTimeoutError(f"no answer within {self.config.timeout_s:g} s") from None
        if heatmap:
            return await run_in_threadpool(self.finish, prepared, rows, heatmap=True, heatmap_label=heatmap_label)
        return self.finish(prepared, rows)

    @staticmethod
    def _check_label(model: LoadedModel, label: str) -> None:
        if label not in model.labels:
            raise BadInputError(f"heatmap_label={label!r}; model {model.name!r} labels: {', '.join(model.labels)}")

    def heatmap_label(self, model: LoadedModel, label: str | None = None) -> str:
        """The label a heatmap explains: the one asked, else the only thresholded label (the positive
        finding of a binary task), else the last label."""
        if label is not None:
            self._check_label(model, label)
            return label
        thresholded = list(model.packaged.thresholds)
        return thresholded[0] if len(thresholded) == 1 else model.labels[-1]

    def explain(self, prepared: Prepared, rows: Sequence[int] | None = None,
                label: str | None = None) -> list[Heatmap | None]:
        """Grad-CAM heatmaps for the images at ``rows`` (default all) of a prepared request; None elsewhere."""
        from dxlab.models.gradcam import gradcam, heatmap_grid, overlay_png

        model = prepared.model
        label = self.heatmap_label(model, label)
        rows = list(range(prepared.size)) if rows is None else list(rows)
        out: list[Heatmap | None] = [None] * prepared.size
        if not rows:
            return out
        x = prepared.batch[rows].to(model.device)
        try:
            with model.cam_lock:
                cams = gradcam(model.packaged.model, x, class_index=model.labels.index(label))
        except ModelError as exc:
            raise BadInputError(f"no heatmap for model {model.name!r}: {exc}") from None
        for j, i in enumerate(rows):
            shown = prepared.raw[i] if prepared.raw is not None else _display(prepared.batch[i], model)
            out[i] = Heatmap(label=label, png=overlay_png(shown, cams[j]),
                             grid=heatmap_grid(cams[j], size=self.config.heatmap_grid_size))
        return out

    # loading and hot reload --------------------------------------------------------------

    def _mlflow_client(self):
        if self._client is None:
            os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
            import mlflow
            from mlflow import MlflowClient

            from dxlab.settings import get_settings

            settings = get_settings()
            uri = self.config.tracking_uri or settings.mlflow_tracking_uri
            if uri.startswith("sqlite:"):
                settings.ensure_home()
            # load_packaged resolves models:/ URIs against MLflow's current URIs
            mlflow.set_tracking_uri(uri)
            mlflow.set_registry_uri(uri)
            self._client = MlflowClient(tracking_uri=uri, registry_uri=uri)
        return self._client

    def _resolve(self, source: ModelSource) -> tuple[str, str | None]:
        """(version, run id) an alias or version names now."""
        from mlflow.exceptions import MlflowException

        client = self._mlflow_client()
        try:
            if source.alias:
                mv = client.get_model_version_by_alias(source.registered, source.alias)
            else:
                mv = client.get_model_version(source.registered, source.version)
        except MlflowException as exc:
            raise ServingError(f"{source.uri}: not found in the model registry at {client.tracking_uri}: "
                               f"{exc.message}") from None
        return str(mv.version), mv.run_id

    def _load(self, source: ModelSource, version: str | None = None) -> LoadedModel:
        from dxlab.models.packaged import load_packaged

        run_id = None
        if source.registered:
            if version is None:
                version, run_id = self._resolve(source)
            else:
                self._mlflow_client()
            uri = f"models:/{source.registered}/{version}"
        else:
            uri, version = source.uri, "1"
        try:
            packaged = load_packaged(uri, device="cpu").to(self.device)
            model = LoadedModel(source.name, str(version), packaged.info.run_id or run_id, packaged, self.amp_dtype)
        except DxlabError as exc:
            raise ServingError(f"cannot load {source.uri} (version {version}): {exc}") from None
        model.check_precision()  # also without warm-up: no unchecked bf16/fp16 answers
        if self.config.warmup:
            model.warm_up(self.config.max_batch_size)
        return model

    def check_for_updates(self) -> dict[str, str]:
        """Ask the registry where each alias points; load, warm and swap in every moved one.

        Returns ``{served name: new version}`` for the models swapped. A failed
        load is logged and counted; the old version keeps serving.
        """
        swapped = {}
        with self._reload_lock:
            for name, server in list(self._servers.items()):
                source = server.source
                if not source.alias:
                    continue
                try:
                    version, _ = self._resolve(source)
                    if version == server.current.version:
                        continue
                    model = self._load(source, version)
                except Exception as exc:  # noqa: BLE001 - a bad new version must not stop the service
                    log.error("reloading %s: %s; version %s keeps serving", source.uri, exc, server.current.version)
                    self.metrics.reloads.labels(name, "failed").inc()
                    continue
                old = server.swap(model)
                self.metrics.reloads.labels(name, "swapped").inc()
                log.info("%s: %s moved from version %s to %s; swapped", name, source.uri, old.version, model.version)
                swapped[name] = model.version
        return swapped

    def _poll(self) -> None:
        while not self._stop.wait(self.config.reload_interval_s):
            self.check_for_updates()


def _display(x: torch.Tensor, model: LoadedModel) -> np.ndarray:
    """A preprocessed image (C, H, W) back to a displayable (H, W) or (H, W, 3) image in [0, 1]."""
    spec = model.packaged.spec
    mean = torch.tensor(spec.mean, dtype=torch.float32).view(-1, 1, 1)
    std = torch.tensor(spec.std, dtype=torch.float32).view(-1, 1, 1)
    image = (x.detach().cpu().float() * std + mean).clamp(0, 1).numpy()
    return image[0] if image.shape[0] == 1 else np.transpose(image, (1, 2, 0))


__all__ = ["BadInputError", "Engine", "EngineConfig", "Heatmap", "InferenceResult", "LoadedModel", "ModelSource",
           "NOT_ASSESSABLE", "NotReadyError", "PayloadTooLargeError", "Prepared", "QueueFullError",
           "RequestTimeoutError", "UnknownModelError", "resolve_device"]
