"""The engine: dynamic batching, agreement of batched and single answers, limits, reload, abstention."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from dxlab.errors import ServingError
from dxlab.serving import engine as engine_module
from dxlab.serving.engine import (
    BadInputError,
    Engine,
    EngineConfig,
    ModelSource,
    PayloadTooLargeError,
    QueueFullError,
    RequestTimeoutError,
    UnknownModelError,
)

from .conftest import LABELS, SPEC, THRESHOLD, blocking_forward, cxr_images

MODEL = "dxlab-tiny"


def config(registry, **changes) -> EngineConfig:
    # fp32 unless a test asks: these tests compare answers with the package's own fp32 predictions
    values = dict(models=(f"models:/{MODEL}@champion",), device="cpu", precision="fp32", max_batch_size=8,
                  max_delay_ms=20, queue_size=64, timeout_s=10, reload_interval_s=0, tracking_uri=registry.uri)
    return EngineConfig(**{**values, **changes})


@pytest.fixture(scope="module")
def engine(registry):
    with Engine(config(registry)) as engine:
        yield engine


def test_concurrent_requests_share_forward_passes(engine):
    images = cxr_images(32, seed=1)
    before = engine.stats(MODEL)["batches"]
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda im: engine.predict(MODEL, images=[im]), images))
    stats = engine.stats(MODEL)
    assert stats["max_batch"] > 1, stats
    assert stats["batches"] - before < len(images)  # fewer forward passes than requests
    assert max(r.batch_size for r in results) > 1
    assert all(r.version == "1" and r.labels == LABELS for r in results)


def test_batched_and_unbatched_results_agree(engine):
    images = cxr_images(8, seed=2)
    singles = [engine.predict(MODEL, images=[im]) for im in images]
    assert all(r.batch_size == 1 for r in singles)
    together = engine.predict(MODEL, images=images)
    assert together.batch_size == 8
    single = np.concatenate([r.probabilities for r in singles])
    np.testing.assert_allclose(together.probabilities, single, atol=1e-5)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda im: engine.predict(MODEL, images=[im]), images))
    np.testing.assert_allclose(np.concatenate([r.probabilities for r in concurrent]), single, atol=1e-5)
    # the package's own predict_proba gives the same numbers: no train/serve skew
    packaged = engine.model(MODEL).packaged
    np.testing.assert_allclose(packaged.predict_images(images), single, atol=1e-5)
    # decisions at the package's operating point
    assert together.decisions == ["tb" if p[1] >= THRESHOLD else "normal" for p in together.probabilities]
    np.testing.assert_allclose(together.probabilities.sum(1), 1.0, rtol=1e-5)


def test_two_instances_run_forward_passes_at_once_and_agree(registry, monkeypatch):
    images = cxr_images(12, seed=4)
    with Engine(config(registry, warmup=False)) as one:
        expected = one.predict(MODEL, images=images).probabilities
    with Engine(config(registry, instances=2, max_batch_size=2, max_delay_ms=0, warmup=False)) as engine:
        # the first forward pass waits for the gate; later ones (on the other instance) run
        gate, entered = threading.Event(), threading.Event()
        net = engine.model(MODEL).net
        original = net.forward

        def first_waits(x):
            if not entered.is_set():
                entered.set()
                gate.wait(10)
            return original(x)

        monkeypatch.setattr(net, "forward", first_waits)
        first = engine.submit(engine.prepare(MODEL, images=images[:2]))
        assert entered.wait(5)
        # the first instance is held inside its forward pass; the second still answers
        second = engine.submit(engine.prepare(MODEL, images=images[2:4]))
        deadline = time.monotonic() + 5
        while not second.done() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert second.done() and not first.done()
        gate.set()
        first.result(5)
        with ThreadPoolExecutor(12) as pool:
            results = list(pool.map(lambda im: engine.predict(MODEL, images=[im]), images))
    np.testing.assert_allclose(np.concatenate([r.probabilities for r in results]), expected, atol=1e-5)


@pytest.mark.parametrize(("threads", "instances", "device", "env", "cores", "expected"), [
    (3, 1, "cpu", {}, 8, 3),                      # as given
    (0, 1, "cpu", {}, 8, 7),                      # all cores but one
    (0, 2, "cpu", {}, 8, 3),                      # shared among the instances
    (0, 1, "cpu", {}, 1, 1),                      # at least one
    (0, 1, "cpu", {"OMP_NUM_THREADS": "2"}, 8, 0),  # the environment wins: left alone
    (0, 1, "cuda", {}, 8, 0),                     # the GPU computes: left alone
])
def test_forward_thread_budget(monkeypatch, threads, instances, device, env, cores, expected):
    from dxlab.serving.engine import forward_threads

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert forward_threads(threads, instances, torch.device(device)) == expected


@pytest.mark.parametrize(("instances", "device", "cores", "expected"), [
    (3, "cpu", 8, 3), (0, "cpu", 8, 2), (0, "cpu", 2, 2), (0, "cpu", 1, 1), (0, "cuda", 8, 1)])
def test_forward_instances(monkeypatch, instances, device, cores, expected):
    from dxlab.serving.engine import forward_instances

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(cores)), raising=False)
    assert forward_instances(instances, torch.device(device)) == expected


def test_preprocessed_batches_are_accepted_and_checked(engine):
    images = cxr_images(3, seed=3)
    batch = engine.model(MODEL).packaged.preprocess(images)
    from_images = engine.predict(MODEL, images=images)
    from_batch = engine.predict(MODEL, batch=batch.numpy())
    np.testing.assert_allclose(from_batch.probabilities, from_images.probabilities, atol=1e-6)
    with pytest.raises(BadInputError, match=r"\[N, 1, 28, 28\]"):
        engine.predict(MODEL, batch=np.zeros((2, 1, 32, 32), np.float32))
    with pytest.raises(BadInputError, match="NaN"):
        engine.predict(MODEL, batch=np.full((1, *SPEC.input_shape), np.nan, np.float32))
    with pytest.raises(BadInputError, match=r"\[0, 1\]"):
        engine.predict(MODEL, images=[np.full((20, 20), 3.0, np.float32)])
    with pytest.raises(UnknownModelError, match="served: dxlab-tiny"):
        engine.predict("nope", images=images)
    with pytest.raises(UnknownModelError, match="version '7'"):
        engine.predict(MODEL, images=images, version="7")
    assert engine.predict(MODEL, images=images[:1]).version == "1"  # still serving


def test_a_request_larger_than_the_queue_is_refused(engine):
    with pytest.raises(PayloadTooLargeError, match="at most 64"):
        engine.predict(MODEL, batch=torch.zeros((65, *SPEC.input_shape)))


def test_full_queue_and_timeouts(registry, monkeypatch):
    with Engine(config(registry, max_batch_size=1, max_delay_ms=0, queue_size=2, timeout_s=0.3, warmup=False,
                                instances=1)) as engine:
        gate, entered = blocking_forward(monkeypatch, engine, MODEL)
        image = cxr_images(1)[0]
        running = engine.submit(engine.prepare(MODEL, images=[image]))
        assert entered.wait(5)  # the worker holds the first request
        queued = [engine.submit(engine.prepare(MODEL, images=[image])) for _ in range(2)]
        with pytest.raises(QueueFullError) as full:
            engine.submit(engine.prepare(MODEL, images=[image]))
        assert full.value.status == 429 and full.value.retry_after >= 1
        time.sleep(0.4)  # past the queued requests' deadline
        gate.set()
        assert running.result(5).probabilities.shape == (1, 2)
        for future in queued:
            with pytest.raises(RequestTimeoutError):
                future.result(5)
        assert engine.predict(MODEL, images=[image]).probabilities.shape == (1, 2)  # serving again


def test_hot_reload_swaps_in_the_new_version_and_keeps_old_requests_on_the_old(registry):
    name = "dxlab-reload"
    registry.register(name, seed=1)
    with Engine(config(registry, models=(f"models:/{name}@champion",), max_delay_ms=0)) as engine:
        images = cxr_images(4, seed=4)
        old = engine.predict(name, images=images)
        prepared = engine.prepare(name, images=images)  # preprocessed for version 1, not yet queued
        assert engine.check_for_updates() == {}
        v2 = registry.register(name, seed=2)
        assert engine.check_for_updates() == {name: v2}
        new = engine.predict(name, images=images)
        assert (new.version, old.version) == (v2, "1")
        assert not np.allclose(new.probabilities, old.probabilities, atol=1e-4)
        late = engine.finish(prepared, engine.submit(prepared).result(5))
        assert late.version == "1"
        np.testing.assert_allclose(late.probabilities, old.probabilities, atol=1e-5)
        text = engine.metrics.exposition().decode()
        assert f'dxlab_model_info{{model="{name}",version="{v2}"}} 1.0' in text
        assert f'dxlab_model_info{{model="{name}",version="1"}}' not in text


def test_abstention_replaces_probabilities_with_the_reason(engine, monkeypatch):
    ood = pytest.importorskip("dxlab.models.ood")

    def fake_ood_check(model, ood_dict, raw_images, batch, *, feats=None):
        assert ood_dict == {"kind": "test"} and len(raw_images) == batch.shape[0] == len(feats)
        return ["not assessable: a photograph" if i == 0 else None for i in range(batch.shape[0])]

    monkeypatch.setattr(ood, "ood_check", fake_ood_check)
    monkeypatch.setattr(engine.model(MODEL), "ood", {"kind": "test"})
    result = engine.predict(MODEL, images=cxr_images(2))
    assert result.abstentions == ["not assessable: a photograph", None]
    assert result.decisions[0] is None and result.decisions[1] in LABELS
    assert np.isnan(result.probabilities[0]).all() and np.isfinite(result.probabilities[1]).all()
    items = result.items()
    assert items[0]["probabilities"] is None and items[0]["decision"] == "not assessable"
    assert items[1]["assessable"] and set(items[1]["probabilities"]) == set(LABELS)


@pytest.mark.parametrize(("text", "name", "alias", "version"), [
    ("models:/dxlab-tb-cxr@champion", "dxlab-tb-cxr", "champion", None),
    ("models:/dxlab-tb-cxr/3", "dxlab-tb-cxr", None, "3"),
    ("tb-next=models:/dxlab-tb-cxr@challenger", "tb-next", "challenger", None),
])
def test_model_sources_parse(text, name, alias, version):
    source = ModelSource.parse(text)
    assert (source.name, source.alias, source.version) == (name, alias, version)


@pytest.mark.parametrize(("changes", "message"), [
    ({"models": ("models:/x",)}, "models:/NAME@ALIAS"),
    ({"models": ("models:/x@a", "models:/x@b")}, "NAME=URI"),
    ({"models": ()}, "at least one"),
    ({"device": "tpu"}, "auto, cpu, cuda"),
    ({"max_batch_size": 0}, "max_batch_size"),
    ({"timeout_s": 0}, "timeout_s"),
    ({"instances": -1}, "instances"),
    ({"threads": -1}, "threads"),
])
def test_bad_configs_are_refused_with_the_valid_values(changes, message):
    with pytest.raises(ServingError, match=message):
        EngineConfig(**{"models": ("models:/x@champion",), **changes})


def test_an_unknown_alias_fails_to_start_with_a_clear_message(registry):
    with pytest.raises(ServingError, match="not found in the model registry"):
        Engine(config(registry, models=(f"models:/{MODEL}@nosuchalias",))).start()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_autocast_agrees_with_the_cpu(registry):
    images = cxr_images(8, seed=5)
    with Engine(config(registry, device="cpu")) as cpu, Engine(config(registry, device="cuda", precision="auto")) as gpu:
        assert gpu.amp_dtype in (torch.bfloat16, torch.float16)
        np.testing.assert_allclose(gpu.predict(MODEL, images=images).probabilities,
                                   cpu.predict(MODEL, images=images).probabilities, atol=2e-2)


@pytest.mark.parametrize("native, expected", [(True, torch.bfloat16), (False, None)])
def test_auto_precision_on_the_cpu_takes_bf16_only_where_the_cpu_computes_it(monkeypatch, native, expected):
    monkeypatch.setattr(engine_module, "native_bf16_cpu", lambda: native)
    cpu = torch.device("cpu")
    assert engine_module.autocast_dtype(cpu, "auto") is expected
    assert engine_module.autocast_dtype(cpu, "bf16") is torch.bfloat16  # asked for: given, emulated or not
    assert engine_module.autocast_dtype(cpu, "fp32") is None
    with pytest.raises(ServingError, match="fp16' runs on CUDA only"):
        engine_module.autocast_dtype(cpu, "fp16")


def test_cpu_bf16_agrees_with_fp32(registry):
    images = cxr_images(16, seed=6)
    with Engine(config(registry)) as fp32, Engine(config(registry, precision="bf16")) as bf16:
        assert fp32.model(MODEL).precision == "fp32" and bf16.model(MODEL).precision == "bf16"
        exact, reduced = (e.predict(MODEL, images=images) for e in (fp32, bf16))
    assert 0 < np.abs(reduced.probabilities - exact.probabilities).max() < engine_module.PRECISION_TOLERANCE
    assert reduced.decisions == ["tb" if p[1] >= THRESHOLD else "normal" for p in reduced.probabilities]


def test_reduced_precision_that_strays_from_fp32_falls_back_to_fp32(registry, monkeypatch, caplog):
    monkeypatch.setattr(engine_module, "PRECISION_TOLERANCE", 0.0)  # any bf16 rounding now counts as straying
    images = cxr_images(4, seed=7)
    # checked when the version loads, with or without warm-up
    with Engine(config(registry)) as fp32, Engine(config(registry, precision="bf16", warmup=False)) as engine:
        assert engine.model(MODEL).precision == "fp32"
        np.testing.assert_array_equal(engine.predict(MODEL, images=images).probabilities,
                                      fp32.predict(MODEL, images=images).probabilities)
    assert "serving it in fp32" in caplog.text
