"""One training run, from resolved config to registered model.

config -> run manifest -> data loaders -> training loop (early stopping,
checkpoints, MLflow per-epoch metrics) -> temperature and operating point
fitted on validation -> evaluation on test -> plots, model card, packaged
model -> registered version, ``champion`` or ``challenger`` by the gate.

Under ``torchrun --nproc-per-node N`` the same run trains as PyTorch DDP
(gloo on CPU, NCCL on CUDA); rank 0 alone evaluates and talks to MLflow.
"""

from __future__ import annotations

import logging
import math
import os
import random
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dxlab.datasets import Manifest
from dxlab.datasets.dicom import read_any
from dxlab.errors import ConfigError
from dxlab.models.calibration import apply_temperature, fit_temperature
from dxlab.models.ood import fit_ood, ood_check
from dxlab.models.packaged import PackageInfo, log_packaged_model
from dxlab.models.preprocessing import PreprocessSpec
from dxlab.models.registry import build_model
from dxlab.settings import get_settings
from dxlab.training import tracking
from dxlab.training.card import model_card
from dxlab.training.config import RunConfig
from dxlab.training.data import build_run_manifest
from dxlab.training.loop import Callback, Checkpoint, EarlyStopping, Trainer, load_checkpoint, restore
from dxlab.training.metrics import auroc
from dxlab.training.operating_point import choose_operating_point
from dxlab.training.report import evaluate_predictions, flatten_metrics
from dxlab.training.torchdata import ManifestImages, build_augment

log = logging.getLogger(__name__)

#: training images the out-of-distribution guards are fitted on, at most
OOD_FIT_MAX = 1000


@dataclass
class RunResult:
    run_id: str | None
    model_name: str
    version: str | None
    alias: str | None
    gate: dict[str, Any]
    test_metrics: dict[str, float]
    data_version: str
    epochs_run: int
    checkpoint: str | None = None
    evaluation: dict[str, Any] = field(default_factory=dict, repr=False)


# -- set-up ------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    if torch.backends.cudnn.is_available():
        torch.backends.cudnn.benchmark = False


def choose_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda, but no CUDA device is available; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and "LOCAL_RANK" in os.environ:
        rank, gpus = int(os.environ["LOCAL_RANK"]), torch.cuda.device_count()
        if rank >= gpus:
            raise ConfigError(f"torchrun started process {rank} on this node, which has {gpus} CUDA device(s): start "
                              f"at most {gpus} process(es) per node (--nproc-per-node), or set train.device=cpu")
        return torch.device("cuda", rank)
    return torch.device(name)


@dataclass(frozen=True)
class Distributed:
    rank: int = 0
    world_size: int = 1

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> Distributed:
    """Join the process group that torchrun describes in the environment (or none)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size())


class EpochSampler(torch.utils.data.Sampler[int]):
    """Shuffles (or samples with class weights) as a pure function of (seed, epoch),
    so a resumed run sees the same order; splits indices between DDP ranks."""

    def __init__(self, n: int, seed: int, weights: Sequence[float] | None = None, dist: Distributed = Distributed()):
        self.n, self.seed, self.epoch, self.dist = n, seed, 0, dist
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)
        self.per_rank = math.ceil(n / dist.world_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        total = self.per_rank * self.dist.world_size
        if self.weights is None:
            order = torch.randperm(self.n, generator=g).tolist()
            order += order[: total - self.n]  # pad so every rank gets as many
        else:
            order = torch.multinomial(self.weights, total, replacement=True, generator=g).tolist()
        return iter(order[self.dist.rank:total:self.dist.world_size])

    def __len__(self) -> int:
        return self.per_rank


def class_weights(labels: Sequence[int], n_classes: int) -> torch.Tensor:
    counts = np.bincount(np.asarray(labels), minlength=n_classes).astype(float)
    if (counts == 0).any():
        raise ConfigError(f"the training split lacks a class (counts {counts.astype(int).tolist()})")
    return torch.tensor(counts.sum() / (n_classes * counts), dtype=torch.float32)


def make_optimizer(cfg: RunConfig, params) -> torch.optim.Optimizer:
    o = cfg.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(params, lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    cls = torch.optim.AdamW if o.name == "adamw" else torch.optim.Adam
    return cls(params, lr=o.lr, weight_decay=o.weight_decay)


def make_scheduler(cfg: RunConfig, optimizer) -> torch.optim.lr_scheduler.LRScheduler | None:
    s, epochs = cfg.schedule, cfg.train.epochs
    if s.name == "constant" and not s.warmup_epochs:
        return None

    def factor(epoch: int) -> float:
        if epoch < s.warmup_epochs:
            return (epoch + 1) / (s.warmup_epochs + 1)
        if s.name == "cosine":
            span = max(epochs - s.warmup_epochs, 1)
            return 0.5 * (1 + math.cos(math.pi * (epoch - s.warmup_epochs) / span))
        if s.name == "step":
            return s.gamma ** ((epoch - s.warmup_epochs) // s.step_size)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def preprocess_spec(cfg: RunConfig) -> PreprocessSpec:
    return PreprocessSpec(image_size=cfg.image.size, channels=cfg.image.channels, mean=cfg.image.mean, std=cfg.image.std)


@torch.no_grad()
def predict_logits(model: torch.nn.Module, loader, device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    model.eval()
    logits, labels = [], []
    for x, y in loader:
        logits.append(model(x.to(device)).float().cpu())
        labels.append(torch.as_tensor(y))
    return torch.cat(logits).numpy(), torch.cat(labels).numpy()


def _positive_scores(probs: np.ndarray) -> np.ndarray:
    return probs[:, 1] if probs.shape[1] == 2 else probs


class MlflowEpochLogger(Callback):
    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        import mlflow

        finite = {k: float(v) for k, v in metrics.items() if v is not None and np.isfinite(v)}
        mlflow.log_metrics(finite, step=trainer.state.epoch)


# -- the run -----------------------------------------------------------------------
def train(
    cfg: RunConfig,
    *,
    resume: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> RunResult:
    """Train, evaluate, log and register one run of ``cfg``."""
    seed_everything(cfg.train.seed)
    if cfg.task == "cancer_tabular":
        from dxlab.training.tabular import train_tabular

        return train_tabular(cfg, build_run_manifest(cfg.task, cfg.data))
    device = choose_device(cfg.train.device)
    dist = init_distributed(device)
    if dist.enabled and not dist.main:
        torch.distributed.barrier()  # rank 0 writes any synthetic data or decoded caches first
    manifest = build_run_manifest(cfg.task, cfg.data)
    if dist.enabled and dist.main:
        torch.distributed.barrier()
    payload = load_checkpoint(resume) if resume else None
    if payload is not None and payload["config"] != cfg.to_yaml():
        raise ConfigError(f"{resume}: the checkpoint was made with another config; resume with the same config and overrides")
    ckpt_path = Path(checkpoint_dir or get_settings().home / "checkpoints" / cfg.name) / "last.pt"

    spec = preprocess_spec(cfg)
    n_classes = len(manifest.classes)
    train_set = ManifestImages(manifest.subset("train"), spec, augment=build_augment(cfg.augment, cfg.image.size), seed=cfg.train.seed,
                               cache=cfg.train.cache_images, reader=read_any)
    val_set = ManifestImages(manifest.subset("val"), spec, cache=cfg.train.cache_images, reader=read_any)
    test_set = ManifestImages(manifest.subset("test"), spec, cache=False, reader=read_any)
    weights = class_weights(train_set.labels, n_classes)
    sampler_weights = weights[train_set.labels].tolist() if cfg.train.class_balance == "sampler" else None
    loader_args = {"batch_size": cfg.train.batch_size, "num_workers": cfg.train.num_workers,
                   "persistent_workers": cfg.train.num_workers > 0, "pin_memory": device.type == "cuda"}
    train_loader = torch.utils.data.DataLoader(
        train_set, sampler=EpochSampler(len(train_set), cfg.train.seed, sampler_weights, dist), **loader_args)
    val_loader = torch.utils.data.DataLoader(val_set, shuffle=False, **loader_args)

    model = build_model(cfg.model.name, in_channels=cfg.image.channels, num_classes=n_classes, **cfg.model.args).to(device)
    if cfg.train.channels_last and device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if dist.enabled:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    loss_fn = torch.nn.CrossEntropyLoss(weight=weights.to(device) if cfg.train.class_balance == "weights" else None)
    optimizer = make_optimizer(cfg, model.parameters())
    scheduler = make_scheduler(cfg, optimizer)

    def validate(m: torch.nn.Module) -> dict[str, float]:
        logits, y = predict_logits(m, val_loader, device)
        loss = float(torch.nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(y)))
        probs = torch.from_numpy(logits).softmax(1).numpy()
        try:
            value = auroc(y, _positive_scores(probs)).value
        except ValueError:  # a validation split without both classes
            value = float("nan")
        return {"val_loss": loss, "val_auroc": value}

    es = cfg.train.early_stopping
    stopper = EarlyStopping("val_auroc", patience=es.patience if es else 1, min_delta=es.min_delta if es else 0.0,
                            stop=es is not None, restore=cfg.train.restore_best)
    cbs: list[Callback] = [stopper]
    if dist.main:
        cbs += [Checkpoint(ckpt_path, cfg.to_yaml(), lambda: tracking_run_id[0]), MlflowEpochLogger()]
    cbs += list(callbacks)
    trainer = Trainer(model=model, optimizer=optimizer, scheduler=scheduler, train_loader=train_loader, validate=validate,
                      loss_fn=loss_fn, device=device, epochs=cfg.train.epochs, amp=cfg.train.amp,
                      channels_last=cfg.train.channels_last, callbacks=cbs)
    if payload is not None:
        restore(trainer, payload)

    mlflow = tracking.configure_mlflow()
    tracking_run_id = [payload.get("mlflow_run_id") if payload else None]
    if not dist.main:
        trainer.fit()
        torch.distributed.barrier()
        return RunResult(None, cfg.registry.model_name, None, None, {}, {}, manifest.digest, trainer.state.epoch)

    tracking.use_experiment(cfg.task)
    with mlflow.start_run(run_id=tracking_run_id[0], run_name=None if tracking_run_id[0] else cfg.name,
                          log_system_metrics=True) as run:
        tracking_run_id[0] = run.info.run_id
        if payload is None:
            _log_inputs(mlflow, cfg, manifest)
        trainer.fit()
        net = model.module if dist.enabled else model
        result = _finish(mlflow, cfg, manifest, net, train_set, val_loader, test_set, loader_args, device, spec,
                         run.info.run_id)
        result.epochs_run = trainer.state.epoch
        result.checkpoint = str(ckpt_path)
    if dist.enabled:
        torch.distributed.barrier()
    return result


def _log_inputs(mlflow, cfg: RunConfig, manifest: Manifest) -> None:
    mlflow.log_params(cfg.flat())
    mlflow.log_text(cfg.to_yaml(), "config.yaml")
    mlflow.set_tags({"dxlab.task": cfg.task, "dxlab.data_version": manifest.digest,
                     "dxlab.synthetic": str(manifest.synthetic).lower(), "dxlab.config": cfg.name})
    with tempfile.TemporaryDirectory() as tmp:
        path = manifest.save(Path(tmp) / "manifest.csv")
        mlflow.log_artifact(str(path), "data")
    with warnings.catch_warnings():
        # MLflow registers two local-file source kinds and warns that it picked one
        warnings.filterwarnings("ignore", message="The specified dataset source can be interpreted in multiple ways")
        dataset = mlflow.data.from_pandas(manifest.table, source=str(manifest.root or "(merged sources)"),
                                          targets="label", name=manifest.dataset,
                                          digest=manifest.digest.split(":")[-1][:16])
    mlflow.log_input(dataset, context="training")


def fit_ood_guards(net: torch.nn.Module, train_set: ManifestImages, seed: int) -> dict[str, Any]:
    """Out-of-distribution guards fitted on (at most OOD_FIT_MAX) training images, unaugmented."""
    rng = np.random.default_rng(seed)
    n = len(train_set)
    chosen = sorted(rng.choice(n, size=min(n, OOD_FIT_MAX), replace=False).tolist())
    raw = [train_set.reader(train_set.paths[i]) for i in chosen]
    batch = torch.stack([train_set.base(i) for i in chosen])
    return fit_ood(net.cpu().eval(), raw, batch, seed=seed)


def _finish(mlflow, cfg: RunConfig, manifest: Manifest, net: torch.nn.Module, train_set: ManifestImages, val_loader,
            test_set, loader_args, device: torch.device, spec: PreprocessSpec, run_id: str) -> RunResult:
    """Calibrate on validation, fit the OOD guards on training images, predict test, then conclude."""
    classes = list(manifest.classes)
    val_logits, y_val = predict_logits(net, val_loader, device)
    temperature = fit_temperature(val_logits, y_val).temperature
    test_loader = torch.utils.data.DataLoader(test_set, shuffle=False, **loader_args)
    test_logits, y_test = predict_logits(net, test_loader, device)
    ood = fit_ood_guards(net, train_set, cfg.train.seed)
    flagged = 0
    for start in range(0, len(test_set), 64):  # in chunks: decoded images can be large
        idx = range(start, min(start + 64, len(test_set)))
        reasons = ood_check(net, ood, [test_set.reader(test_set.paths[i]) for i in idx],
                            torch.stack([test_set.base(i) for i in idx]))
        flagged += sum(r is not None for r in reasons)
    # held-out images of the training distribution should almost all be assessable
    mlflow.log_metrics({"ood_threshold": ood["detector"]["threshold"],
                        "test_not_assessable_rate": flagged / max(len(test_set), 1)})

    def log_model(point, card: str):
        info = PackageInfo(
            architecture=cfg.model.name,
            architecture_args={"in_channels": cfg.image.channels, "num_classes": len(classes),
                               **_without_pretrained(cfg.model.args)},
            preprocessing=spec,
            labels=tuple(classes),
            thresholds={classes[1]: float(point.threshold)} if point is not None else {},
            operating_rule=cfg.eval.operating_point if point is not None else "argmax",
            temperature=temperature,
            data_version=manifest.digest,
            run_id=run_id,
            extra={"ood": ood},
        )
        return log_packaged_model(net.cpu(), info, model_card=card, registered_model_name=cfg.registry.model_name)

    return conclude(mlflow, cfg, manifest, run_id, y_val, apply_temperature(val_logits, temperature), y_test,
                    apply_temperature(test_logits, temperature), temperature, log_model)


def conclude(mlflow, cfg: RunConfig, manifest: Manifest, run_id: str, y_val: np.ndarray, val_probs: np.ndarray,
             y_test: np.ndarray, test_probs: np.ndarray, temperature: float, log_model) -> RunResult:
    """Operating point on validation, evaluation on test, plots, card, packaged model, registry and gate.

    ``log_model(point, card)`` logs and registers the model; it returns MLflow's ModelInfo.
    """
    classes = list(manifest.classes)
    point = choose_operating_point(y_val, val_probs[:, 1], cfg.eval.operating_point) if len(classes) == 2 else None
    test_table = manifest.subset("test").table
    subgroups = [c for c in cfg.eval.subgroups if c in test_table.columns]
    missing = sorted(set(cfg.eval.subgroups) - set(subgroups))
    if missing:
        log.warning("subgroup column(s) %s are not in %s: skipped", missing, manifest.dataset)
    with tempfile.TemporaryDirectory() as tmp:
        evaluation = evaluate_predictions(
            y_test, test_probs, classes, operating_point=point, metadata=test_table, subgroup_columns=subgroups,
            bands={"age": list(cfg.eval.age_bands)} if "age" in subgroups else None, n_bootstrap=cfg.eval.bootstrap,
            confidence=cfg.eval.ci, seed=cfg.train.seed, plots_dir=Path(tmp) / "plots")
        mlflow.log_artifacts(str(Path(tmp) / "plots"), "plots")
    evaluation.pop("plots", None)
    test_metrics = flatten_metrics(evaluation)
    test_metrics["test_temperature"] = temperature
    mlflow.log_metrics({k: v for k, v in test_metrics.items() if v is not None and np.isfinite(v)})
    mlflow.log_dict(evaluation, "evaluation.json")

    verdict = tracking.gate_verdict(cfg.registry.gate, _gate_inputs(evaluation),
                                    tracking.champion_auroc(cfg.registry.model_name))
    mlflow.log_dict(verdict.as_dict(), "promotion_gate.json")
    mlflow.set_tags({"dxlab.gate": "passed" if verdict.passed else "failed"})
    card = model_card(cfg, manifest, evaluation, temperature=temperature, verdict=verdict.as_dict(), run_id=run_id)
    mlflow.log_text(card, "model_card.md")
    version = str(log_model(point, card).registered_model_version)
    alias = tracking.CHAMPION if verdict.passed else tracking.CHALLENGER
    tracking.set_alias(cfg.registry.model_name, version, alias, "promotion gate: " + "; ".join(verdict.reasons))
    return RunResult(run_id=run_id, model_name=cfg.registry.model_name, version=version, alias=alias,
                     gate=verdict.as_dict(), test_metrics=test_metrics, data_version=manifest.digest, epochs_run=0,
                     evaluation=evaluation)


def _without_pretrained(args: dict[str, Any]) -> dict[str, Any]:
    # the packaged weights replace any pretrained ones: rebuilding must not download
    return {k: v for k, v in args.items() if k != "pretrained"}


def _gate_inputs(evaluation: dict[str, Any]) -> dict[str, float]:
    def value(est):
        return None if not est else est.get("value")

    at = evaluation.get("at_operating_point") or {}
    return {
        "auroc": value(evaluation.get("auroc")),
        "sensitivity": value(at.get("sensitivity")),
        "specificity": value(at.get("specificity")),
        "accuracy": value(evaluation.get("classification", {}).get("accuracy")),
    }
