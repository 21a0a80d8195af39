"""Serving: ``dxlab serve`` against ``mlflow models serve --env-manager local`` on the same registered model.

What it does, in order:

1. creates a temporary ``DXLAB_HOME`` with a SQLite MLflow store (both servers
   get it through ``DXLAB_MLFLOW_TRACKING_URI`` / ``MLFLOW_TRACKING_URI``) and
   registers one packaged model there (:func:`dxlab.models.packaged.log_packaged_model`;
   default ``resnet18``, 1 channel, 128 px as in ``configs/tb_cxr.yaml``,
   labels normal/tb) with the alias ``champion``. The weights are random but
   seeded: this measures speed only, the probabilities mean nothing. Its
   out-of-distribution guards are fitted on the benchmark's images, as training
   fits them, so that dxlab runs the checks it runs for a trained package
   (mlflow's pyfunc runs none);
2. reads real chest X-rays from ``../shared/data`` (relative to the repository
   root): ``tb_shenzhen_montgomery_128/*/*.png`` and ``cxr_misc/*/*`` (PNG and
   JPEG, 128 to 1024 px); it skips, saying so, when they are absent.
   ``--synthetic`` draws chest X-ray-like images with
   :mod:`dxlab.datasets.synthetic` instead (``--size`` px PNG), for a machine
   without the shared data (a GPU machine, say): speed only, like the weights;
3. starts ``dxlab serve --model models:/NAME@champion`` and ``mlflow models
   serve -m models:/NAME@champion --env-manager local`` on two free loopback
   ports (127.0.0.1), each in its own process group, waits for
   ``/v2/health/ready`` and ``/ping``, and always stops both process groups at
   the end (also on an error, Ctrl-C or SIGTERM);
4. drives both with the same closed-loop load, one image per request: for each
   ``--clients`` count (default 1 and 16) a short warm-up, then ``--requests``
   requests (at most ``--max-seconds``) from that many threads, each with its
   own keep-alive ``http.client.HTTPConnection``. Each condition runs in ``--rounds`` rounds
   (default 4) that alternate between the servers, so that a change in the
   machine's background load hits both alike;
5. reports, per server and condition: images/s (counted while every client
   still has requests to send, as wrk counts them: each round's drain, when
   fewer and fewer clients wait on their last answers, is left out),
   p50/p95/p99 latency (every request), errors and
   the peak RSS of the server's process tree (sampled with psutil every 0.2 s
   from its start: model loading included), and the ratios dxlab/mlflow,
   against the targets of ``docs/TARGETS.md``.

What each server is sent (the requests are encoded before timing starts):

- **dxlab**: the clinician's path, Open Inference Protocol v2 ``BYTES``: the
  image file's bytes (PNG or JPEG) in base64. Decoding, preprocessing and the
  forward pass all happen in the server.
- **mlflow**: what ``mlflow models serve`` accepts: JSON ``{"inputs": ...}``,
  the (1, C, H, W) float tensor already preprocessed on the client with the
  package's own preprocessing (values rounded to 4 decimals to keep the body
  small). Decoding and preprocessing happen before timing starts and are not
  counted: this favours the baseline.

``--dxlab-tensor`` adds a third contender: dxlab sent the very tensor mlflow
gets (OIP ``FP32``, same rounding), to separate the payload from the engine.

Latency is the client's end-to-end time of one HTTP request (send, server
work, receive). Both servers run with their default settings except dxlab's
batching flags, ``--max-batch-size 16 --max-delay-ms 2`` by default (under
load the next batch forms while the previous forward pass runs whatever the
delay, and with one client every millisecond of delay adds to its latency),
``--device cpu`` (the baseline's pyfunc loads on the CPU) and ``--precision``
``--dxlab-precision`` (default ``auto``: bf16 on a CPU with native bf16, else
fp32; mlflow always runs fp32). Before timing, every image goes once to each
server and dxlab's probabilities are compared with mlflow's: a target counts as
met only when they agree within the engine's ``PRECISION_TOLERANCE``. Threads: mlflow
runs torch's default (all cores, one forward pass at a time); dxlab its own
defaults (``--instances``/``--threads`` auto: on this 2-core machine two
single-threaded forward passes at once), or ``--dxlab-instances`` and
``--dxlab-threads``. ``--torch-threads N`` sets ``OMP_NUM_THREADS``/``MKL_NUM_THREADS``
for both servers (and this process) alike. The client threads run on the same
machine and share its CPUs with the server under test, equally for both.

Before the servers start, this process times the parts on one torch thread
(or ``--torch-threads``; skip with ``--no-profile``): decode,
preprocess, forward at batch 1 and batch ``--max-batch-size``, the served
inference copy's forward at that batch in fp32 and bf16, and MLflow's
own request handling (``scoring_server.invocations``) on a tensor body, to show
where the time goes. On a CUDA machine a GPU section also measures, in
process and without HTTP, the engine's forward pass in bf16 (or fp16) at batch
``--gpu-batch`` against fp32 at batch 1 (target >= 10x); elsewhere it says it
was skipped.

    .venv/bin/python benchmarks/serve.py [--data DIR | --synthetic] [--arch resnet18] [--size 128]
        [--clients 1 16] [--requests 800] [--max-seconds 90] [--max-batch-size 16] [--max-delay-ms 2]
        [--dxlab-precision auto|fp32|bf16] [--torch-threads N] [--dxlab-tensor] [--no-profile] [--json]
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.client
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data"
MODEL_NAME = "dxlab-bench-serve"
LABELS = ("normal", "tb")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TARGETS = {
    16: "16 clients: >= 3x the baseline's images/s at a lower p99 latency",
    1: "1 client: latency no worse than the baseline (median; p99 shown)",
    "gpu": "GPU: >= 10x images/s with batching + bf16/fp16 against eager fp32 batch 1",
}


def log(message: str) -> None:
    print(f"[serve-bench] {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- data


def find_images(data: Path, count: int) -> list[Path]:
    """Real chest X-rays: every cxr_misc image (mixed sizes and formats), then NLM 128 px PNGs evenly spread."""
    misc = sorted(p for p in (data / "cxr_misc").glob("*/*") if p.suffix.lower() in IMAGE_SUFFIXES)
    nlm = sorted((data / "tb_shenzhen_montgomery_128").glob("*/*.png"))
    take = max(0, count - len(misc))
    if nlm and take:
        step = max(1, len(nlm) // take)
        nlm = nlm[::step][:take]
    else:
        nlm = []
    files = misc[:count] + nlm
    # interleave so that any run of consecutive requests mixes sizes
    files.sort(key=lambda p: zlib.crc32(p.name.encode()))
    return files


def oip_bytes_body(raw: bytes) -> bytes:
    return json.dumps({"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                                   "data": [base64.b64encode(raw).decode("ascii")]}]}).encode()


def rounded(x: np.ndarray) -> list:
    # float64 first, so that the JSON holds short decimals ("0.1235"), not float32 artefacts
    return np.round(x.astype(np.float64), 4).tolist()


def mlflow_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": rounded(x)}).encode()


def oip_tensor_body(x: np.ndarray) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": list(x.shape), "datatype": "FP32",
                                   "data": rounded(x.reshape(-1))}]}).encode()


# --------------------------------------------------------------------------- the registered model


def register_model(home: Path, arch: str, size: int, seed: int, images: list[np.ndarray]) -> tuple[str, str]:
    """Log and register a packaged model with random (seeded) weights; alias champion. Returns (uri, version).

    Its out-of-distribution guards are fitted on ``images`` (decoded), as training fits them on the
    training images, so that dxlab serve runs the checks it runs for a trained package."""
    import logging

    import mlflow
    import torch
    from mlflow import MlflowClient

    from dxlab.models.ood import fit_ood
    from dxlab.models.packaged import PackageInfo, log_packaged_model
    from dxlab.models.preprocessing import PreprocessSpec, preprocess_batch
    from dxlab.models.registry import build_model

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    logging.getLogger("alembic").setLevel(logging.ERROR)
    uri = os.environ["MLFLOW_TRACKING_URI"]
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    experiment = mlflow.create_experiment("serve-benchmark", artifact_location=(home / "artifacts").as_uri())
    torch.manual_seed(seed)
    args = {"in_channels": 1, "num_classes": len(LABELS)}
    model = build_model(arch, **args).eval()
    spec = PreprocessSpec(size, 1, (0.5,), (0.25,))
    ood = fit_ood(model, images, preprocess_batch(images, spec), seed=seed)
    info = PackageInfo(architecture=arch, architecture_args=args, preprocessing=spec, labels=LABELS,
                       thresholds={"tb": 0.5}, operating_rule="none (benchmark; random weights)",
                       data_version="none (random weights)", extra={"ood": ood})
    card = (f"# Benchmark model\n\n{arch}, random weights (torch seed {seed}). For speed measurements only: "
            "its probabilities mean nothing. Not for clinical use.\n")
    with mlflow.start_run(experiment_id=experiment, run_name="serve-benchmark"):
        logged = log_packaged_model(model, info, model_card=card, registered_model_name=MODEL_NAME)
    version = str(logged.registered_model_version)
    MlflowClient(tracking_uri=uri, registry_uri=uri).set_registered_model_alias(MODEL_NAME, "champion", version)
    return f"models:/{MODEL_NAME}@champion", version


# --------------------------------------------------------------------------- servers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tool(name: str) -> str:
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    found = shutil.which(name)
    if not found:
        raise SystemExit(f"benchmarks/serve.py: cannot find the {name!r} command (run with the project's venv python)")
    return found


class Server:
    """A server process in its own process group, its log, and a psutil RSS sampler of its process tree."""

    def __init__(self, key: str, title: str, command: list[str], env: dict[str, str], port: int, ready_path: str,
                 logfile: Path) -> None:
        self.key, self.title, self.command, self.port, self.ready_path = key, title, command, port, ready_path
        self.logfile = logfile
        self.base = f"http://127.0.0.1:{port}"
        self.started = time.monotonic()
        self._log = open(logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(command, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        self.peak_rss = 0
        self.peak_rss_by_proc: dict[str, int] = {}
        self._stop_sampling = threading.Event()
        self._sampler = threading.Thread(target=self._sample, name=f"rss-{key}", daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        import psutil

        try:
            root = psutil.Process(self.proc.pid)
        except psutil.Error:
            return
        while not self._stop_sampling.is_set():
            try:
                procs = [root, *root.children(recursive=True)]
            except psutil.Error:
                return
            total = 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    name = " ".join(p.cmdline()[:3])[:80] or p.name()
                except psutil.Error:
                    continue
                total += rss
                self.peak_rss_by_proc[name] = max(self.peak_rss_by_proc.get(name, 0), rss)
            self.peak_rss = max(self.peak_rss, total)
            self._stop_sampling.wait(0.2)

    def log_tail(self, lines: int = 25) -> str:
        try:
            text = self.logfile.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(text[-lines:])

    def ready_now(self, client) -> bool:
        """One readiness probe; raises when the process has exited."""
        import httpx

        if self.proc.poll() is not None:
            raise RuntimeError(f"{self.title} exited with status {self.proc.returncode} before it was ready; "
                               f"its log ({self.logfile}):\n{self.log_tail()}")
        try:
            return client.get(self.base + self.ready_path).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        self._stop_sampling.set()
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
            try:
                os.killpg(self.proc.pid, sig)
            except (ProcessLookupError, PermissionError):
                break
            try:
                self.proc.wait(timeout=wait)
            except subprocess.TimeoutExpired:
                continue
            # the leader is gone; a child (mlflow's uvicorn) may outlive it briefly
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, 0)
                time.sleep(0.5)
                os.killpg(self.proc.pid, signal.SIGKILL)
            break
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        self._log.close()


def wait_ready(servers: dict[str, Server], deadline: float) -> dict[str, float]:
    """Probe every server until all are ready; seconds from each one's start to its readiness."""
    import httpx

    startup: dict[str, float] = {}
    with httpx.Client(timeout=2.0) as client:
        while len(startup) < len(servers):
            for key, server in servers.items():
                if key not in startup and server.ready_now(client):
                    startup[key] = round(time.monotonic() - server.started, 1)
            if len(startup) < len(servers):
                if time.monotonic() > deadline:
                    late = [s for k, s in servers.items() if k not in startup]
                    raise RuntimeError("not ready in time: " + "; ".join(
                        f"{s.title} on {s.base}{s.ready_path}; its log:\n{s.log_tail()}" for s in late))
                time.sleep(0.25)
    return startup


# --------------------------------------------------------------------------- load


def drive(url: str, bodies: list[bytes], clients: int, requests: int, max_seconds: float, expect: bytes,
          timeout_s: float = 60.0) -> dict[str, Any]:
    """Closed loop: ``clients`` threads, each with a keep-alive client, send ``requests`` requests in all
    (or until ``max_seconds``), cycling through ``bodies``; returns latencies and errors.

    Throughput is counted as load generators such as wrk count it: the requests completed while every
    client still had requests to send (``counted``), over that window (``elapsed``), from the start to
    the moment the last request was handed out or the time ran out. The drain after it, when fewer and
    fewer clients wait on their last answers, is left out: it would charge each round's tail of lower
    concurrency to the server. Every request's latency counts, the drain's too; ``span`` runs to the
    last answer."""
    lock = threading.Lock()
    issued = [0]
    latencies: list[float] = []
    errors: list[str] = []
    barrier = threading.Barrier(clients + 1)
    stop_at = [0.0]
    closed_at = [math.inf]
    done_at: list[float] = []

    def next_index() -> int | None:
        with lock:
            now = time.perf_counter()
            if issued[0] >= requests or now >= stop_at[0]:
                closed_at[0] = min(closed_at[0], now)
                return None
            issued[0] += 1
            return issued[0] - 1

    target = urlsplit(url)
    headers = {"Content-Type": "application/json"}

    def worker(offset: int) -> None:
        # the standard library's keep-alive connection: the load generator shares the CPUs with the server
        # under test, so the lighter the client, the less it takes from the server
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=timeout_s)
        try:
            barrier.wait()
            while (i := next_index()) is not None:
                body = bodies[(i + offset) % len(bodies)]
                t0 = time.perf_counter()
                try:
                    conn.request("POST", target.path, body=body, headers=headers)
                    r = conn.getresponse()
                    content = r.read()
                    ok = r.status == 200 and expect in content
                    detail = "" if ok else f"HTTP {r.status}: {content[:160]!r}"
                except (OSError, http.client.HTTPException) as exc:
                    conn.close()  # the next request connects again
                    ok, detail = False, f"{type(exc).__name__}: {exc}"
                t1 = time.perf_counter()
                with lock:
                    if ok:
                        latencies.append(t1 - t0)
                        done_at.append(t1)
                    else:
                        errors.append(detail)
        finally:
            conn.close()

    threads = [threading.Thread(target=worker, args=(k * 7,), daemon=True) for k in range(clients)]
    for t in threads:
        t.start()
    start = time.perf_counter()
    stop_at[0] = start + max_seconds
    barrier.wait()
    for t in threads:
        t.join(timeout=max_seconds + timeout_s + 30)
    closed = min(closed_at[0], stop_at[0])
    return {"latencies": latencies, "errors": errors, "elapsed": max(closed - start, 1e-9),
            "counted": sum(t <= closed for t in done_at), "span": max([start, *done_at]) - start,
            "capped": issued[0] < requests}


def summarize(run: dict[str, Any]) -> dict[str, Any]:
    lat = np.array(run["latencies"]) * 1000.0
    done = len(lat)
    pct = (lambda q: round(float(np.percentile(lat, q)), 1)) if done else (lambda q: None)
    out = {"requests": done + len(run["errors"]), "ok": done, "errors": len(run["errors"]),
           "seconds": round(run["elapsed"], 2), "images_per_s": round(run["counted"] / run["elapsed"], 2),
           "p50_ms": pct(50), "p95_ms": pct(95), "p99_ms": pct(99),
           "mean_ms": round(float(lat.mean()), 1) if done else None, "capped_by_time": run["capped"]}
    if run["errors"]:
        out["first_errors"] = sorted(set(run["errors"]))[:3]
    return out


def dxlab_counters(base: str) -> dict[str, float]:
    """Batch-size and forward-pass counters from dxlab's /metrics (sums over labels)."""
    import httpx

    wanted = {"dxlab_batch_size_sum": "images", "dxlab_batch_size_count": "batches",
              "dxlab_inference_duration_seconds_sum": "forward_s"}
    out = dict.fromkeys(wanted.values(), 0.0)
    try:
        text = httpx.get(base + "/metrics", timeout=5).text
    except httpx.HTTPError:
        return out
    for line in text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in wanted:
            out[wanted[name]] += float(line.rsplit(" ", 1)[1])
    return out


def agreement(servers: dict[str, Server], bodies: dict[str, list[bytes]]) -> dict[str, Any]:
    """Each image once to each server: how far dxlab's probabilities are from mlflow's (the package's
    own fp32 ``predict``), over the images dxlab assesses, and the precision dxlab serves in."""
    import httpx

    dxlab, mlflow = servers["dxlab"].base, servers["mlflow"].base
    meta = httpx.get(f"{dxlab}/v2/models/{MODEL_NAME}", timeout=30).json()["parameters"]
    drift, abstained = [], 0
    with httpx.Client(timeout=60, headers={"Content-Type": "application/json"}) as client:

        def answer(url: str, body: bytes) -> dict[str, Any]:
            response = client.post(url, content=body)
            if response.status_code != 200:
                raise RuntimeError(f"{url} answered HTTP {response.status_code}: {response.text[:300]}")
            return response.json()

        for ours, theirs in zip(bodies["dxlab"], bodies["mlflow"]):
            out = {o["name"]: o for o in answer(f"{dxlab}/v2/models/{MODEL_NAME}/infer", ours)["outputs"]}
            if not out["assessable"]["data"][0]:
                abstained += 1
                continue
            (row,) = answer(f"{mlflow}/invocations", theirs)["predictions"]  # the pyfunc's DataFrame: label -> p
            drift.append(np.abs(np.asarray(out["probabilities"]["data"]) - [row[label] for label in LABELS]).max())
    return {"precision": meta["precision"], "images": len(bodies["dxlab"]), "abstained": abstained,
            "max_abs_diff": round(float(max(drift, default=0.0)), 5),
            "mean_abs_diff": round(float(np.mean(drift)) if drift else 0.0, 5)}


# --------------------------------------------------------------------------- in-process parts


def timed_mean(fn, items: list, min_seconds: float = 1.5, min_rounds: int = 1) -> float:
    """Mean seconds per call of fn(item), cycling items for at least min_seconds."""
    calls, start, rounds = 0, time.perf_counter(), 0
    while rounds < min_rounds or time.perf_counter() - start < min_seconds:
        for item in items:
            fn(item)
            calls += 1
        rounds += 1
    return (time.perf_counter() - start) / calls


def profile_parts(uri: str, raws: list[bytes], mlflow_bodies: list[bytes], max_batch: int,
                  threads: int) -> dict[str, float]:
    """Milliseconds per image of each part, in this process, before the servers start, on ``threads`` torch threads."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _profile_parts(uri, raws, mlflow_bodies, max_batch)
    finally:
        torch.set_num_threads(before)


def _profile_parts(uri: str, raws: list[bytes], mlflow_bodies: list[bytes], max_batch: int) -> dict[str, float]:
    import mlflow.pyfunc
    import torch
    from mlflow.pyfunc import scoring_server

    from dxlab.models.packaged import load_packaged
    from dxlab.serving.decode import decode_image
    from dxlab.serving.engine import LoadedModel

    packaged = load_packaged(uri)
    spec = packaged.spec
    images = [decode_image(r) for r in raws]
    from dxlab.models.preprocessing import preprocess

    out = {"decode_ms": timed_mean(decode_image, raws) * 1000,
           "preprocess_ms": timed_mean(lambda im: preprocess(im, spec), images) * 1000}
    batch1 = [preprocess(im, spec)[None] for im in images[:8]]
    big = torch.cat([preprocess(images[i % len(images)], spec)[None] for i in range(max_batch)])
    with torch.inference_mode():
        packaged.model(batch1[0])
        out["forward_b1_ms"] = timed_mean(packaged.model, batch1, 3.0) * 1000
        packaged.model(big)
        out[f"forward_b{max_batch}_ms_per_image"] = timed_mean(packaged.model, [big], 3.0, 2) * 1000 / max_batch
    # what dxlab serve runs: the BatchNorm-folded channels-last copy, in fp32 and under bf16 autocast
    for name, amp in (("fp32", None), ("bf16", torch.bfloat16)):
        served = LoadedModel("bench", "1", None, packaged, amp)
        served.forward(big)
        per_image = timed_mean(served.forward, [big], 3.0, 2) / max_batch
        out[f"served_forward_b{max_batch}_{name}_ms_per_image"] = per_image * 1000
    pyfunc = mlflow.pyfunc.load_model(uri)
    schema = pyfunc.metadata.get_input_schema()
    handle = lambda body: scoring_server.invocations(body, "application/json", pyfunc, schema)  # noqa: E731
    handle(mlflow_bodies[0])
    texts = [b.decode() for b in mlflow_bodies[:8]]
    parse = lambda text: scoring_server._parse_json_data(data=text, metadata=pyfunc.metadata,  # noqa: E731
                                                        input_schema=schema)
    out["mlflow_json_parse_ms"] = timed_mean(parse, texts) * 1000
    out["mlflow_invocations_ms"] = timed_mean(handle, mlflow_bodies[:8], 3.0) * 1000
    out["mlflow_overhead_ms"] = out["mlflow_invocations_ms"] - out["forward_b1_ms"]
    return {k: round(v, 2) for k, v in out.items()}


def gpu_section(uri: str, tensors: list[np.ndarray], seconds: float, batch: int) -> dict[str, Any]:
    """``tensors``: the (1, C, H, W) images preprocessed for mlflow's requests, before any timing."""
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "no CUDA GPU is present on this machine"}
    from dxlab.models.packaged import load_packaged
    from dxlab.serving.engine import LoadedModel, autocast_dtype, precision_name

    packaged = load_packaged(uri).to("cuda")
    amp = autocast_dtype(torch.device("cuda"), "auto")  # what dxlab serve --precision auto takes on this GPU
    x = torch.from_numpy(np.concatenate(tensors))
    fp32 = LoadedModel("bench", "1", None, packaged, None)
    low = LoadedModel("bench", "1", None, packaged, amp)

    def rate(model: LoadedModel, n: int) -> float:
        xb = torch.cat([x] * (n // len(x) + 1))[:n].contiguous()
        for _ in range(5):
            model.forward(xb)  # returns numpy: synchronised
        calls, start = 0, time.perf_counter()
        while time.perf_counter() - start < seconds:
            model.forward(xb)
            calls += 1
        return calls * n / (time.perf_counter() - start)

    out = {"device": torch.cuda.get_device_name(0), "precision": precision_name(amp),
           "fp32_batch1_images_per_s": round(rate(fp32, 1), 1)}
    for n in sorted({16, batch}):
        out[f"fp32_batch{n}_images_per_s"] = round(rate(fp32, n), 1)
        out[f"{out['precision']}_batch{n}_images_per_s"] = round(rate(low, n), 1)
    best = out[f"{out['precision']}_batch{batch}_images_per_s"]
    out["ratio"] = round(best / out["fp32_batch1_images_per_s"], 1)
    out["batch"] = batch
    out["met"] = out["ratio"] >= 10
    out["note"] = ("in process, no HTTP: the engine's LoadedModel.forward (inference_mode, autocast), host-to-device "
                   "copy and probabilities back to the host included")
    return out


# --------------------------------------------------------------------------- main


def load_average() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "unknown"


def main(argv: list[str] | None = None) -> int:
    from dxlab.serving.engine import PRECISION_TOLERANCE, PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared data folder")
    parser.add_argument("--synthetic", action="store_true",
                        help="draw synthetic chest X-rays instead of reading --data (speed only)")
    parser.add_argument("--arch", default="resnet18", help="architecture (dxlab.models.registry)")
    parser.add_argument("--size", type=int, default=128, help="input side in pixels (configs/tb_cxr.yaml: 128)")
    parser.add_argument("--images", type=int, default=64, help="distinct X-rays cycled through by the clients")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 16], help="concurrent clients, one condition each")
    parser.add_argument("--requests", type=int, default=800, help="timed requests per server and condition")
    parser.add_argument("--rounds", type=int, default=4,
                        help="split each condition into this many rounds, alternating the servers, so that the "
                             "machine's changing background load hits both alike")
    parser.add_argument("--warmup", type=int, default=3, help="untimed warm-up requests per client before each condition")
    parser.add_argument("--max-seconds", type=float, default=90.0, help="time cap per server and condition")
    parser.add_argument("--max-batch-size", type=int, default=16, help="dxlab serve --max-batch-size")
    parser.add_argument("--dxlab-instances", type=int, default=0, help="dxlab serve --instances (0: its default)")
    parser.add_argument("--dxlab-threads", type=int, default=0,
                        help="dxlab serve --threads (0: its default: on a CPU the cores but one, shared among the "
                             "instances, unless --torch-threads)")
    parser.add_argument("--max-delay-ms", type=float, default=2.0,
                        help="dxlab serve --max-delay-ms (short: on a CPU batches form while the previous forward "
                             "pass runs, and with one client every ms of delay is added to its latency)")
    parser.add_argument("--serve-device", default="cpu", choices=("cpu", "auto", "cuda"),
                        help="dxlab serve --device (cpu: like the baseline, whose pyfunc loads on the CPU)")
    parser.add_argument("--dxlab-precision", default="auto", choices=PRECISIONS,
                        help="dxlab serve --precision (auto: bf16 on a GPU and on a CPU with native bf16)")
    parser.add_argument("--mlflow-workers", type=int, default=None,
                        help="mlflow models serve --workers (default: its own default, 1)")
    parser.add_argument("--torch-threads", type=int, default=None,
                        help="OMP/MKL threads for both servers alike (default: torch's default, all cores)")
    parser.add_argument("--dxlab-tensor", action="store_true",
                        help="also drive dxlab with the same preprocessed FP32 tensor mlflow gets (same payload)")
    parser.add_argument("--no-profile", dest="profile", action="store_false",
                        help="skip the in-process timing of decode/preprocess/forward/MLflow parsing")
    parser.add_argument("--gpu-batch", type=int, default=64, help="batch of the GPU section's bf16 pass")
    parser.add_argument("--gpu-seconds", type=float, default=5.0, help="seconds per GPU measurement")
    parser.add_argument("--start-timeout", type=float, default=240.0, help="seconds to wait for both servers")
    parser.add_argument("--seed", type=int, default=0, help="torch seed of the random weights")
    parser.add_argument("--keep-home", action="store_true", help="keep the temporary DXLAB_HOME (logs, store)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args(argv)
    if any(c < 1 for c in args.clients) or args.requests < 1 or args.images < 1 or args.rounds < 1:
        parser.error("--clients, --requests, --images and --rounds must be >= 1")
    args.rounds = min(args.rounds, args.requests)

    synthetic = None
    if args.synthetic:
        from dxlab.datasets.synthetic import synth_tb_cxr

        synthetic = Path(tempfile.mkdtemp(prefix="dxlab-bench-cxr-"))
        synth_tb_cxr(synthetic / "tb_shenzhen_montgomery_128", args.images, args.seed, args.size)
        files = find_images(synthetic, args.images)
    else:
        files = find_images(args.data, args.images) if args.data.is_dir() else []
    if not files:
        message = (f"no chest X-rays under {args.data} (expected tb_shenzhen_montgomery_128/*/*.png and "
                   "cxr_misc/*/*; pass --data DIR)")
        print(json.dumps({"skipped": message}) if args.json else f"benchmarks/serve.py: skipped: {message}")
        return 0

    # SIGTERM (and SIGHUP) unwind like Ctrl-C, through the finally that stops the servers
    def _interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)

    home = Path(tempfile.mkdtemp(prefix="dxlab-bench-serve-"))
    tracking = f"sqlite:///{home / 'mlflow.db'}"
    env_common = {"DXLAB_HOME": str(home), "DXLAB_MLFLOW_TRACKING_URI": tracking, "MLFLOW_TRACKING_URI": tracking,
                  "MLFLOW_REGISTRY_URI": tracking, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1",
                  "PYTHONUNBUFFERED": "1"}
    if args.torch_threads:
        env_common.update(OMP_NUM_THREADS=str(args.torch_threads), MKL_NUM_THREADS=str(args.torch_threads))
    os.environ.update(env_common)
    servers: dict[str, Server] = {}
    load_before = load_average()
    try:
        import torch

        if args.torch_threads:
            torch.set_num_threads(args.torch_threads)
        threads = torch.get_num_threads()
        log(f"registering {args.arch} ({args.size} px, random weights, seed {args.seed}) in {home}")
        t0 = time.perf_counter()
        from dxlab.models.packaged import load_packaged
        from dxlab.serving.decode import decode_image

        raws = [p.read_bytes() for p in files]
        decoded = [decode_image(r, name=p.name) for r, p in zip(raws, files)]
        uri, version = register_model(home, args.arch, args.size, args.seed, decoded)
        log(f"registered {uri} -> version {version} in {time.perf_counter() - t0:.1f} s")

        # requests, encoded before any timing
        packaged = load_packaged(uri)
        tensors = [packaged.preprocess([image]).numpy() for image in decoded]
        bodies = {"dxlab": [oip_bytes_body(r) for r in raws], "mlflow": [mlflow_body(x) for x in tensors]}
        if args.dxlab_tensor:
            bodies["dxlab-fp32"] = [oip_tensor_body(x) for x in tensors]
        sizes = sorted({image.shape[:2] for image in decoded})
        del packaged, decoded

        profile, profile_threads = None, None
        if args.profile:
            log("timing the parts in process (decode, preprocess, forward, MLflow's request handling)")
            # one torch thread unless --torch-threads: the per-core cost, steady on a shared machine (several
            # OpenMP threads slow down many times over when another process holds a core)
            profile_threads = args.torch_threads or 1
            profile = profile_parts(uri, raws, bodies["mlflow"], args.max_batch_size, profile_threads)

        # mlflow models serve runs `uvicorn` by name (bash -c): the venv's bin must be on PATH
        env = {**os.environ, **env_common,
               "PATH": os.pathsep.join([str(Path(tool("mlflow")).parent), os.environ.get("PATH", "")])}
        ports = {"dxlab": free_port(), "mlflow": free_port()}
        while ports["mlflow"] == ports["dxlab"]:
            ports["mlflow"] = free_port()
        dxlab_flags = ["--max-batch-size", str(args.max_batch_size), "--max-delay-ms", f"{args.max_delay_ms:g}",
                       "--device", args.serve_device, "--precision", args.dxlab_precision,
                       "--instances", str(args.dxlab_instances),
                       "--threads", str(args.dxlab_threads)]
        servers["dxlab"] = Server("dxlab", "dxlab serve", [tool("dxlab"), "serve", "--model", uri, "--host", "127.0.0.1",
                                                           "--port", str(ports["dxlab"]), *dxlab_flags],
                                  env, ports["dxlab"], "/v2/health/ready", home / "dxlab-serve.log")
        mlflow_flags = ["--env-manager", "local"] + (["--workers", str(args.mlflow_workers)] if args.mlflow_workers else [])
        servers["mlflow"] = Server("mlflow", "mlflow models serve",
                                   [tool("mlflow"), "models", "serve", "-m", uri, "--host", "127.0.0.1",
                                    "--port", str(ports["mlflow"]), *mlflow_flags],
                                   env, ports["mlflow"], "/ping", home / "mlflow-serve.log")
        log(f"started dxlab serve on :{ports['dxlab']} and mlflow models serve on :{ports['mlflow']}; waiting")
        startup = wait_ready(servers, time.monotonic() + args.start_timeout)
        log(f"ready after {startup} s")
        agree = agreement(servers, bodies)
        log(f"dxlab serves in {agree['precision']}: probabilities within {agree['max_abs_diff']} of mlflow's "
            f"({agree['images'] - agree['abstained']} assessed images)")

        targets = {"dxlab": (servers["dxlab"].base + f"/v2/models/{MODEL_NAME}/infer", b'"outputs"'),
                   "mlflow": (servers["mlflow"].base + "/invocations", b'"predictions"')}
        if args.dxlab_tensor:
            targets["dxlab-fp32"] = targets["dxlab"]
        results: dict[str, dict[int, dict[str, Any]]] = {k: {} for k in targets}
        for clients in args.clients:
            runs = {k: {"latencies": [], "errors": [], "elapsed": 0.0, "counted": 0, "span": 0.0, "capped": False}
                    for k in targets}
            counters = {k: dict.fromkeys(("images", "batches", "forward_s"), 0.0) for k in targets}
            per_round = [args.requests // args.rounds + (r < args.requests % args.rounds) for r in range(args.rounds)]
            log(f"{clients} client(s): {args.requests} requests per server in {args.rounds} alternating round(s)")
            for r, n in enumerate(per_round):
                order = list(targets) if (r + clients) % 2 else list(reversed(targets))  # alternate who goes first
                for key in order:
                    url, expect = targets[key]
                    if r == 0:
                        drive(url, bodies[key], clients, max(args.warmup * clients, 4), 60.0, expect)  # warm-up
                    before = dxlab_counters(servers["dxlab"].base) if key.startswith("dxlab") else None
                    run = drive(url, bodies[key], clients, n, args.max_seconds / args.rounds, expect)
                    for field in ("latencies", "errors"):
                        runs[key][field] += run[field]
                    for field in ("elapsed", "counted", "span"):
                        runs[key][field] += run[field]
                    runs[key]["capped"] |= run["capped"]
                    if before is not None:
                        after = dxlab_counters(servers["dxlab"].base)
                        for field in counters[key]:
                            counters[key][field] += after[field] - before[field]
            for key in targets:
                summary = summarize(runs[key])
                c = counters[key]
                if c["batches"]:
                    summary["mean_batch"] = round(c["images"] / c["batches"], 2)
                    summary["forward_busy"] = round(c["forward_s"] / runs[key]["span"], 2)
                results[key][clients] = summary
                log(f"{key}: {clients} client(s): {summary['images_per_s']} img/s, p50 {summary['p50_ms']} ms, "
                    f"p99 {summary['p99_ms']} ms, {summary['errors']} errors")

        memory = {k: {"peak_rss_mb": round(s.peak_rss / 2**20, 1),
                      "by_process_mb": {n: round(v / 2**20, 1) for n, v in s.peak_rss_by_proc.items()}}
                  for k, s in servers.items()}
        for s in servers.values():
            s.stop()
        servers.clear()

        gpu = gpu_section(uri, tensors[:16], args.gpu_seconds, args.gpu_batch)
    except KeyboardInterrupt:
        log("interrupted; stopping the servers")
        return 130
    except RuntimeError as exc:
        log(f"failed: {exc}")
        return 1
    finally:
        for s in servers.values():
            s.stop()
        if args.keep_home:
            log(f"kept {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        if synthetic:
            shutil.rmtree(synthetic, ignore_errors=True)

    agree["tolerance"] = PRECISION_TOLERANCE
    comparisons = {}
    for clients in args.clients:
        d, m = results["dxlab"][clients], results["mlflow"][clients]
        thr = d["images_per_s"] / m["images_per_s"] if m["images_per_s"] else float("inf")
        p99 = d["p99_ms"] / m["p99_ms"] if d["p99_ms"] and m["p99_ms"] else None
        p50 = d["p50_ms"] / m["p50_ms"] if d["p50_ms"] and m["p50_ms"] else None
        row = {"throughput_ratio": round(thr, 2), "p99_ratio": None if p99 is None else round(p99, 2),
               "p50_ratio": None if p50 is None else round(p50, 2)}
        clean = d["errors"] == 0 and agree["max_abs_diff"] <= PRECISION_TOLERANCE  # fast and the same answers
        if clients == 16:
            row["target"] = TARGETS[16]
            row["met"] = bool(clean and thr >= 3 and p99 is not None and p99 < 1)
        elif clients == 1:
            row["target"] = TARGETS[1]
            row["met"] = bool(clean and p50 is not None and p50 <= 1)
        comparisons[clients] = row

    result = {
        "model": {"uri": uri, "version": version, "architecture": args.arch, "channels": 1, "size": args.size,
                  "labels": list(LABELS), "weights": f"random (torch seed {args.seed}); speed only"},
        "images": {"count": len(files), "sizes": [list(s) for s in sizes],
                   "from": "synthetic" if synthetic else str(args.data)},
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "load_average_before": load_before,
                    "load_average_after": load_average()},
        "dxlab_serve_flags": " ".join(dxlab_flags),
        "mlflow_serve_flags": " ".join(mlflow_flags),
        "startup_s": startup,
        "agreement": agree,
        "results": {k: {str(c): v for c, v in r.items()} for k, r in results.items()},
        "memory": memory,
        "comparisons": {str(c): v for c, v in comparisons.items()},
        "profile_ms": profile,
        "profile_torch_threads": profile_threads if profile else None,
        "gpu": gpu,
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print_report(result, args)
    return 0


def print_report(r: dict[str, Any], args) -> None:
    m = r["model"]
    print(f"dxlab serve vs mlflow models serve: {m['architecture']}, 1 channel, {m['size']} px, labels "
          f"{'/'.join(m['labels'])}, {m['uri']} v{m['version']}")
    print(f"  weights: {m['weights']} (the probabilities mean nothing)")
    im = r["images"]
    sides = f"{min(s[0] for s in im['sizes'])}-{max(s[0] for s in im['sizes'])} px"
    if im["from"] == "synthetic":
        print(f"  {im['count']} synthetic chest X-rays (dxlab.datasets.synthetic, {sides} PNG), one image per request")
    else:
        print(f"  {im['count']} real chest X-rays from {im['from']} (tb_shenzhen_montgomery_128 + cxr_misc; {sides}, "
              "PNG and JPEG), one image per request")
    mc = r["machine"]
    print(f"  machine: {mc['cpus']} CPUs, torch threads {mc['torch_threads']} by default (mlflow; dxlab unless --threads "
          f"says otherwise); load average "
          f"{mc['load_average_before']} before, {mc['load_average_after']} after")
    print(f"  dxlab serve {r['dxlab_serve_flags']}: BYTES (base64 PNG/JPEG), decoded and preprocessed in the server")
    print(f"  mlflow models serve {r['mlflow_serve_flags']}: JSON {{\"inputs\": tensor}}, preprocessed on the client "
          "BEFORE timing (favours the baseline)")
    print(f"  latency: client end-to-end per HTTP request; ready after {r['startup_s']} s")
    a = r["agreement"]
    print(f"  answers: dxlab ({a['precision']} forward passes) within {a['max_abs_diff']} (mean {a['mean_abs_diff']}) "
          f"of mlflow's fp32 probabilities on the {a['images'] - a['abstained']} images it assessed "
          f"({a['abstained']} of {a['images']} abstained: out of distribution); a target is met only within "
          f"{a['tolerance']}")
    print()
    header = f"{'clients':>7}  {'server':<11}{'requests':>9}{'errors':>7}{'img/s':>9}{'p50 ms':>9}{'p95 ms':>9}" \
             f"{'p99 ms':>9}{'peak RSS MB':>12}{'batch':>7}{'fwd busy':>9}"
    print(header)
    print("-" * len(header))
    clients_list = sorted({int(c) for v in r["results"].values() for c in v})
    for c in clients_list:
        for key, res in r["results"].items():
            s = res[str(c)]
            mem = r["memory"].get("dxlab" if key.startswith("dxlab") else key, {}).get("peak_rss_mb", "")
            fmt = lambda v: "-" if v is None else f"{v:g}"  # noqa: E731
            print(f"{c:>7}  {key:<11}{s['requests']:>9}{s['errors']:>7}{s['images_per_s']:>9.1f}{fmt(s['p50_ms']):>9}"
                  f"{fmt(s['p95_ms']):>9}{fmt(s['p99_ms']):>9}{mem:>12}{fmt(s.get('mean_batch')):>7}"
                  f"{fmt(s.get('forward_busy')):>9}" + ("  (time cap)" if s["capped_by_time"] else ""))
            for e in s.get("first_errors", []):
                print(f"{'':>9}error: {e}")
    print("  img/s: requests answered while every client still had requests to send, over that time (the drain "
          "at the end of each round left out, as wrk does); latencies: every request")
    print("  batch: mean images per forward pass; fwd busy: wall time spent in forward passes over the run's wall "
          "time, summed over dxlab's instances (up to their number)")
    print("  peak RSS: the server's process tree (mlflow: the CLI process plus its uvicorn child), from start")
    print()
    print("ratios dxlab / mlflow and targets (docs/TARGETS.md)")
    for c, cmp in r["comparisons"].items():
        line = (f"  {c:>2} client(s): throughput x{cmp['throughput_ratio']}, p50 x{cmp['p50_ratio']}, "
                f"p99 x{cmp['p99_ratio']}")
        if "met" in cmp:
            line += f"  | {cmp['target']}: {'MET' if cmp['met'] else 'NOT MET'}"
        print(line)
    if r["profile_ms"]:
        p = r["profile_ms"]
        print()
        print(f"where the time goes (in process, before the servers start, {r['profile_torch_threads']} torch "
              "thread(s); ms per image)")
        for k, v in p.items():
            print(f"  {k:<40}{v:>9.2f}")
    print()
    g = r["gpu"]
    if "skipped" in g:
        print(f"GPU section: skipped: {g['skipped']}")
    else:
        print(f"GPU section ({g['device']}; {g['note']})")
        for k, v in g.items():
            if k.endswith("images_per_s"):
                print(f"  {k:<40}{v:>10.1f}")
        print(f"  {g['precision']} batch {g['batch']} / fp32 batch 1: x{g['ratio']}  | {TARGETS['gpu']}: "
              f"{'MET' if g['met'] else 'NOT MET'}")


if __name__ == "__main__":
    sys.exit(main())
