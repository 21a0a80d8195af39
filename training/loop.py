"""The training loop: a short skeleton; early stopping, checkpoints and
tracking attach to it as callbacks (STYLE.md rule 5).
"""

from __future__ import annotations

import copy
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass
class LoopState:
    """What the loop knows between epochs; saved in checkpoints."""

    epoch: int = 0  # epochs completed
    best_metric: float = float("-inf")
    best_epoch: int = -1
    bad_epochs: int = 0
    stop: bool = False
    history: list[dict[str, float]] = field(default_factory=list)


class Callback:
    """Hooks the loop calls; override what you need."""

    def on_epoch_end(self, trainer: "Trainer", metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: "Trainer") -> None: ...


@dataclass
class Trainer:
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler | None
    train_loader: torch.utils.data.DataLoader
    validate: Callable[[torch.nn.Module], dict[str, float]]
    loss_fn: torch.nn.Module
    device: torch.device
    epochs: int
    amp: bool = False
    channels_last: bool = False
    callbacks: Sequence[Callback] = ()
    state: LoopState = field(default_factory=LoopState)
    #: best weights so far (restored at the end when early stopping tracks a metric)
    best_weights: dict[str, torch.Tensor] | None = None

    def fit(self) -> LoopState:
        for epoch in range(self.state.epoch, self.epochs):
            _set_epoch(self.train_loader, epoch)
            metrics = {"train_loss": self.train_one_epoch(), **self.validate(self.model)}
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            if self.scheduler is not None:
                self.scheduler.step()
            self.state.epoch = epoch + 1
            self.state.history.append({"epoch": epoch + 1, **metrics})
            for cb in self.callbacks:
                cb.on_epoch_end(self, metrics)
            if self.state.stop:
                break
        for cb in self.callbacks:
            cb.on_train_end(self)
        return self.state

    def train_one_epoch(self) -> float:
        self.model.train()
        use_amp = self.amp and self.device.type == "cuda"
        total, count = 0.0, 0
        for x, y in self.train_loader:
            x = x.to(self.device, non_blocking=True)
            if self.channels_last and self.device.type == "cuda":
                x = x.contiguous(memory_format=torch.channels_last)
            y = y.to(self.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=use_amp):
                loss = self.loss_fn(self.model(x), y)
            loss.backward()
            self.optimizer.step()
            total += float(loss.detach()) * len(y)
            count += len(y)
        return total / max(count, 1)


def _set_epoch(loader: torch.utils.data.DataLoader, epoch: int) -> None:
    for obj in (loader.sampler, loader.dataset, getattr(loader, "batch_sampler", None)):
        if hasattr(obj, "set_epoch"):
            obj.set_epoch(epoch)


class EarlyStopping(Callback):
    """Stop when ``metric`` has not improved by ``min_delta`` for ``patience`` epochs (unless ``stop``
    is False); keep the best weights and, with ``restore``, end the run with them."""

    def __init__(self, metric: str = "val_auroc", patience: int = 5, min_delta: float = 0.0, stop: bool = True,
                 restore: bool = True) -> None:
        self.metric, self.patience, self.min_delta, self.enabled = metric, patience, min_delta, stop
        self.restore = restore

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        value = metrics.get(self.metric, float("nan"))
        state = trainer.state
        if np.isfinite(value) and value > state.best_metric + self.min_delta:
            state.best_metric, state.best_epoch, state.bad_epochs = float(value), state.epoch, 0
            trainer.best_weights = copy.deepcopy(_unwrap(trainer.model).state_dict())
        else:
            state.bad_epochs += 1
            if self.enabled and state.bad_epochs >= self.patience:
                log.info("early stopping at epoch %d (best %s %.4f at epoch %d)", state.epoch, self.metric,
                         state.best_metric, state.best_epoch)
                state.stop = True

    def on_train_end(self, trainer: Trainer) -> None:
        if self.restore and trainer.best_weights is not None:
            _unwrap(trainer.model).load_state_dict(trainer.best_weights)


class Checkpoint(Callback):
    """Save everything needed to resume after every epoch (atomically)."""

    def __init__(self, path: str | Path, config_yaml: str, run_id: Callable[[], str | None] = lambda: None) -> None:
        self.path, self.config_yaml, self.run_id = Path(path), config_yaml, run_id

    def on_epoch_end(self, trainer: Trainer, metrics: dict[str, float]) -> None:
        save_checkpoint(self.path, trainer, self.config_yaml, mlflow_run_id=self.run_id())


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return model.module if hasattr(model, "module") else model


def rng_state() -> dict[str, Any]:
    """Every RNG's state, as tensors and plain values (loadable with ``weights_only=True``)."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
        "python": [version, list(internal), gauss_next],
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: Path, trainer: Trainer, config_yaml: str, mlflow_run_id: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": "dxlab-checkpoint/1",
        "config": config_yaml,
        "mlflow_run_id": mlflow_run_id,
        "model": _unwrap(trainer.model).state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "scheduler": trainer.scheduler.state_dict() if trainer.scheduler else None,
        "state": asdict(trainer.state),
        "best_weights": trainer.best_weights,
        "rng": rng_state(),
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    from dxlab.errors import ConfigError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: checkpoint not found")
    try:
        # weights_only: a checkpoint from elsewhere cannot run code when loaded
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for a corrupt file
        raise ConfigError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != "dxlab-checkpoint/1":
        raise ConfigError(f"{path}: not a dxlab checkpoint")
    return payload


def restore(trainer: Trainer, payload: dict[str, Any]) -> None:
    """Put a trainer back where a checkpoint left it (weights, optimizer, schedule, RNG)."""
    _unwrap(trainer.model).load_state_dict(payload["model"])
    trainer.optimizer.load_state_dict(payload["optimizer"])
    if trainer.scheduler is not None and payload["scheduler"] is not None:
        trainer.scheduler.load_state_dict(payload["scheduler"])
    trainer.state = LoopState(**payload["state"])
    trainer.best_weights = payload["best_weights"]
    set_rng_state(payload["rng"])
