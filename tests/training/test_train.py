"""End-to-end training runs of the -tiny configs, logged to a temporary MLflow store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dxlab.cli import main
from dxlab.errors import ConfigError
from dxlab.training.config import GateConfig, load_config
from dxlab.training.loop import Callback
from dxlab.training.run import choose_device
from dxlab.training.tracking import gate_verdict

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
FAST = ["eval.bootstrap=20"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One tracking store per module (creating an MLflow SQLite schema takes seconds)."""
    path = tmp_path_factory.mktemp("mlflow") / "mlflow.db"
    old = os.environ.get("DXLAB_MLFLOW_TRACKING_URI")
    os.environ["DXLAB_MLFLOW_TRACKING_URI"] = f"sqlite:///{path}"
    yield f"sqlite:///{path}"
    if old is None:
        os.environ.pop("DXLAB_MLFLOW_TRACKING_URI", None)
    else:
        os.environ["DXLAB_MLFLOW_TRACKING_URI"] = old


def _client():
    from dxlab.training.tracking import client

    return client()


def _train(name, *overrides, **kwargs):
    from dxlab.training.run import train

    return train(load_config(CONFIGS / f"{name}.yaml", [*FAST, *overrides]), **kwargs)


TINY = ["tb_cxr-tiny", "dermatology-tiny", "derm_melanoma-tiny", "cancer_breast_us-tiny", "cancer_histology-tiny",
        "cancer_mammography-tiny", "cancer_tabular-tiny"]


@pytest.mark.slow
@pytest.mark.parametrize("name", TINY)
def test_tiny_config_trains_and_logs_a_complete_run(store, name, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    result = _train(name, checkpoint_dir=tmp_path)
    cfg = load_config(CONFIGS / f"{name}.yaml")
    c = _client()
    run = c.get_run(result.run_id)
    # params: the flattened resolved config
    assert run.data.params["task"] == cfg.task
    assert run.data.params["registry.model_name"] == cfg.registry.model_name
    # metrics: test metrics with CIs (and per-epoch curves for networks)
    m = run.data.metrics
    assert 0.0 <= m["test_auroc"] <= 1.0 and m["test_auroc_ci_low"] <= m["test_auroc"] <= m["test_auroc_ci_high"]
    assert "test_balanced_accuracy" in m
    if cfg.task != "cancer_tabular":  # out-of-distribution guards fitted on training images
        assert m["ood_threshold"] > 0 and m["test_not_assessable_rate"] <= 0.2
        from dxlab.models.packaged import load_packaged

        packaged = load_packaged(f"models:/{cfg.registry.model_name}/{result.version}")
        assert packaged.info.extra["ood"]["format"] == "dxlab-ood"
    if cfg.task != "cancer_tabular":
        history = c.get_metric_history(result.run_id, "val_auroc")
        assert [h.step for h in history] == list(range(1, result.epochs_run + 1))
        assert c.get_metric_history(result.run_id, "train_loss")
        if name == "tb_cxr-tiny":  # sampled every 0.2 s (set above): a tiny run may end within dxlab's 2 s
            assert any(k.startswith("system/") for k in m), "system metrics are logged"
    # artifacts: beside the tracking database, never in the working directory
    store_dir = Path(store[len("sqlite:///"):]).parent
    assert run.info.artifact_uri.startswith((store_dir / "mlartifacts").as_uri())
    assert not (Path.cwd() / "mlruns").exists()
    files = {a.path for a in c.list_artifacts(result.run_id)}
    assert {"config.yaml", "model_card.md", "evaluation.json", "promotion_gate.json", "plots", "data"} <= files
    plots = {Path(a.path).name for a in c.list_artifacts(result.run_id, "plots")}
    assert {"roc.png", "confusion_matrix.png", "reliability.png"} <= plots or len(plots) >= 3, plots
    card = Path(c.download_artifacts(result.run_id, "model_card.md", str(tmp_path))).read_text()
    assert "Intended use" in card and "Known limits" in card and result.data_version in card
    if cfg.data.synthetic is not None:
        assert "SYNTHETIC DATA" in card
    # the data set as an MLflow dataset input, with the manifest's digest
    inputs = run.inputs.dataset_inputs
    assert len(inputs) == 1 and inputs[0].dataset.digest == result.data_version.split(":")[-1][:16]
    # registered version and alias
    version = c.get_model_version(cfg.registry.model_name, result.version)
    assert version.run_id == result.run_id
    assert str(c.get_model_version_by_alias(cfg.registry.model_name, result.alias).version) == result.version
    assert result.alias in ("champion", "challenger")


def test_gate_verdict_both_ways():
    gate = GateConfig(min_sensitivity=0.9, min_specificity=0.7, auroc_not_below_champion=True)
    ok = gate_verdict(gate, {"sensitivity": 0.92, "specificity": 0.75, "auroc": 0.91}, champion_auroc=0.90)
    assert ok.passed and len(ok.reasons) == 3
    low_spec = gate_verdict(gate, {"sensitivity": 0.95, "specificity": 0.6, "auroc": 0.95}, champion_auroc=None)
    assert not low_spec.passed and "test specificity 0.6000 < required 0.700" in low_spec.reasons
    worse = gate_verdict(gate, {"sensitivity": 0.95, "specificity": 0.8, "auroc": 0.85}, champion_auroc=0.9)
    assert not worse.passed and worse.reasons[-1] == "test auroc 0.8500 < champion's 0.9000"
    missing = gate_verdict(GateConfig(min_accuracy=0.9, auroc_not_below_champion=False), {}, None)
    assert not missing.passed and list(missing.reasons) == ["test accuracy missing < required 0.900"]


@pytest.mark.slow
def test_champion_moves_only_when_the_gate_passes(store, tmp_path):
    name = "dxlab-gate-test"
    first = _train("tb_cxr-tiny", f"registry.model_name={name}", checkpoint_dir=tmp_path / "a")
    assert first.alias == "champion" and first.gate["passed"]
    # an untrained model cannot match the champion's AUROC
    second = _train("tb_cxr-tiny", f"registry.model_name={name}", "optimizer.lr=1e-9", "train.epochs=1",
                    checkpoint_dir=tmp_path / "b")
    assert second.alias == "challenger" and not second.gate["passed"]
    c = _client()
    assert str(c.get_model_version_by_alias(name, "champion").version) == first.version
    assert str(c.get_model_version_by_alias(name, "challenger").version) == second.version
    gate = json.loads(Path(c.download_artifacts(second.run_id, "promotion_gate.json", str(tmp_path))).read_text())
    assert gate["passed"] is False and any("champion's" in r for r in gate["reasons"])
    # a person may still promote, with a reason that is kept on the version
    assert main(["models", "promote", name, second.version, "--reason", "reviewed by the TB board"]) == 0
    v = c.get_model_version(name, second.version)
    assert str(c.get_model_version_by_alias(name, "champion").version) == second.version
    assert v.tags["alias.champion.reason"] == "reviewed by the TB board"
    assert main(["models", "promote", name, "99", "--reason", "x"]) == 2


class _Crash(Callback):
    def on_epoch_end(self, trainer, metrics):
        if trainer.state.epoch == 2:
            raise KeyboardInterrupt("simulated interruption")


@pytest.mark.slow
def test_resume_gives_the_same_result_as_an_uninterrupted_run(store, tmp_path):
    args = ("registry.model_name=dxlab-resume-test", "train.early_stopping=null", "train.epochs=4")
    whole = _train("tb_cxr-tiny", *args, checkpoint_dir=tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _train("tb_cxr-tiny", *args, checkpoint_dir=tmp_path / "split", callbacks=[_Crash()])
    resumed = _train("tb_cxr-tiny", *args, checkpoint_dir=tmp_path / "split", resume=tmp_path / "split" / "last.pt")
    assert resumed.epochs_run == whole.epochs_run == 4
    for key in ("test_auroc", "test_threshold", "test_temperature", "test_sensitivity", "test_ece"):
        assert resumed.test_metrics[key] == pytest.approx(whole.test_metrics[key], abs=1e-6), key
    c = _client()
    history = c.get_metric_history(resumed.run_id, "val_loss")
    assert [h.step for h in history] == [1, 2, 3, 4], "the resumed run continues the same MLflow run"
    # another config cannot resume this checkpoint
    with pytest.raises(Exception, match="another config"):
        _train("tb_cxr-tiny", *args, "train.seed=5", resume=tmp_path / "split" / "last.pt")


@pytest.mark.slow
def test_same_seed_same_run(store, tmp_path):
    a = _train("cancer_breast_us-tiny", "registry.model_name=dxlab-seed-test", "train.epochs=2", checkpoint_dir=tmp_path / "a")
    b = _train("cancer_breast_us-tiny", "registry.model_name=dxlab-seed-test", "train.epochs=2", checkpoint_dir=tmp_path / "b")
    assert a.test_metrics["test_auroc"] == b.test_metrics["test_auroc"]
    assert a.test_metrics["test_temperature"] == pytest.approx(b.test_metrics["test_temperature"], abs=1e-9)


@pytest.mark.slow
def test_ddp_with_two_cpu_processes(store, tmp_path):
    env = {**os.environ, "DXLAB_HOME": str(tmp_path / "home"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "dxlab",
           "train", str(CONFIGS / "tb_cxr-tiny.yaml"), "--set", "train.epochs=2", "--set", "eval.bootstrap=20",
           "--set", "registry.model_name=dxlab-ddp-test", "--set", "train.device=cpu", "--json"]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout[result.stdout.index("{"):])
    assert out["epochs_run"] == 2 and out["version"] == "1"
    c = _client()
    runs = c.search_runs([c.get_experiment_by_name("tb_cxr").experiment_id],
                         filter_string="params.`registry.model_name` = 'dxlab-ddp-test'")
    assert len(runs) == 1, "only rank 0 logs"


@pytest.mark.slow
def test_cli_train_evaluate_and_list(store, tmp_path, capsys):
    code = main(["train", str(CONFIGS / "tb_cxr-tiny.yaml"), "--set", "eval.bootstrap=20", "--set",
                 "registry.model_name=dxlab-cli-test", "--checkpoint-dir", str(tmp_path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0 and out["alias"] == "champion"
    code = main(["models", "list", "--json"])
    listed = {m["name"]: m for m in json.loads(capsys.readouterr().out)}
    assert code == 0 and listed["dxlab-cli-test"]["aliases"] == {"champion": out["version"]}
    manifest = Path(os.environ["DXLAB_HOME"]) / "synthetic" / "tb_cxr-120-48-0" / "manifest.csv"
    code = main(["evaluate", "models:/dxlab-cli-test@champion", "--data", str(manifest), "--bootstrap", "20", "--json"])
    evaluation = json.loads(capsys.readouterr().out)
    assert code == 0 and evaluation["n"] > 0 and 0 <= evaluation["auroc"]["value"] <= 1
    code = main(["train", str(CONFIGS / "tb_cxr-tiny.yaml"), "--set", "train.epoch=3"])
    assert code == 2 and "valid keys" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["auto", "cuda"])
def test_more_torchrun_processes_than_gpus_is_refused(monkeypatch, name):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match="process 1 on this node, which has 1 CUDA device"):
        choose_device(name)
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert choose_device(name) == torch.device("cuda", 0)
