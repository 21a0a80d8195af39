"""Run configs: YAML in, a typed, validated, frozen config out.

A run is a pure function of its resolved config (STYLE.md rule 3). YAML gives
the values, ``--set key=value`` overrides them, pydantic validates them, and
the frozen result is logged beside the run's outputs. No Python is ever
evaluated from a config file: YAML is read with ``yaml.safe_load``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dxlab.errors import ConfigError


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class SyntheticData(_Frozen):
    """Draw the data instead of loading it (the ``-tiny`` configs)."""

    n: int = Field(200, ge=10)
    size: int | None = Field(None, ge=16, le=1024)
    seed: int = 0


class SplitConfig(_Frozen):
    val: float = Field(0.15, ge=0.0, lt=1.0)
    test: float = Field(0.15, ge=0.0, lt=1.0)
    seed: int = 0
    keep_official: bool = True


class DataSource(_Frozen):
    """One data set: a registry name with the folder holding it, or a prepared manifest."""

    dataset: str | None = None
    root: str | None = None
    manifest: str | None = None
    #: skip this source, with a log line, when its folder is absent (e.g. TBX11K "where present")
    optional: bool = False
    #: merge this source's labels into the run's classes before sources are merged
    relabel: dict[str, str] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_kind(self) -> "DataSource":
        if bool(self.dataset) == bool(self.manifest):
            raise ValueError("give exactly one of 'dataset' (a registry name) or 'manifest' (a manifest file)")
        return self


class DataConfig(_Frozen):
    sources: tuple[DataSource, ...] = ()
    synthetic: SyntheticData | None = None
    split: SplitConfig = SplitConfig()
    #: keep only these classes, in this order (e.g. melanoma vs nevus); others dropped
    classes: tuple[str, ...] | None = None
    #: merge labels before training, e.g. {common_nevus: nevus, atypical_nevus: nevus}
    relabel: dict[str, str] = Field(default_factory=dict)
    #: the positive class for binary metrics (default: the last class)
    positive_class: str | None = None

    @model_validator(mode="after")
    def _some_data(self) -> "DataConfig":
        if not self.sources and self.synthetic is None:
            raise ValueError("data needs 'sources' (data sets or manifests) or 'synthetic'")
        return self


class ModelConfig(_Frozen):
    name: str
    args: dict[str, Any] = Field(default_factory=dict)


class ImageConfig(_Frozen):
    size: int = Field(128, ge=8, le=2048)
    channels: Literal[1, 3] = 1
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.25,)


class AugmentConfig(_Frozen):
    """MONAI augmentations applied to training images only."""

    flip_horizontal: float = Field(0.0, ge=0.0, le=1.0)
    rotate_degrees: float = Field(0.0, ge=0.0, le=180.0)
    zoom: float = Field(0.0, ge=0.0, lt=1.0)
    translate: float = Field(0.0, ge=0.0, lt=0.5)
    intensity: float = Field(0.0, ge=0.0, lt=1.0)
    contrast: float = Field(0.0, ge=0.0, lt=1.0)
    probability: float = Field(0.5, ge=0.0, le=1.0)


class OptimizerConfig(_Frozen):
    name: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)


class ScheduleConfig(_Frozen):
    name: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    step_size: int = Field(10, ge=1)
    gamma: float = Field(0.1, gt=0, le=1)


class EarlyStopping(_Frozen):
    patience: int = Field(5, ge=1)
    min_delta: float = Field(0.0, ge=0)


class TrainConfig(_Frozen):
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(32, ge=1)
    amp: bool = True
    channels_last: bool = True
    seed: int = 0
    num_workers: int = Field(0, ge=0)
    early_stopping: EarlyStopping | None = EarlyStopping()
    #: end with the weights of the epoch with the best validation AUROC (else: of the last epoch; on
    #: a validation split of a few dozen images the "best" epoch is mostly noise)
    restore_best: bool = True
    class_balance: Literal["none", "weights", "sampler"] = "weights"
    cache_images: bool = True
    device: Literal["auto", "cpu", "cuda"] = "auto"


class EvalConfig(_Frozen):
    operating_point: str = "youden"
    bootstrap: int = Field(1000, ge=0)
    subgroups: tuple[str, ...] = ()
    age_bands: tuple[float, ...] = (0, 18, 40, 60, 200)
    ci: float = Field(0.95, gt=0.5, lt=1.0)


class GateConfig(_Frozen):
    """When the ``champion`` alias may move to a new version."""

    min_sensitivity: float | None = Field(None, ge=0, le=1)
    min_specificity: float | None = Field(None, ge=0, le=1)
    min_auroc: float | None = Field(None, ge=0, le=1)
    min_accuracy: float | None = Field(None, ge=0, le=1)
    auroc_not_below_champion: bool = True


class RegisterConfig(_Frozen):
    model_name: str
    gate: GateConfig = GateConfig()


class RunConfig(_Frozen):
    task: str
    name: str
    data: DataConfig
    model: ModelConfig
    image: ImageConfig = ImageConfig()
    augment: AugmentConfig = AugmentConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    registry: RegisterConfig
    description: str = ""

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from dxlab.datasets.registry import TASKS

        if value not in TASKS:
            raise ValueError(f"unknown task {value!r}; expected one of {', '.join(TASKS)}")
        return value

    def flat(self) -> dict[str, Any]:
        """The resolved config as ``section.key`` -> value, for MLflow params."""
        return _flatten(self.model_dump(mode="json"))

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    if isinstance(obj, dict) and obj:
        for key, value in obj.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = obj
    return out


def valid_keys(model: type[BaseModel] = RunConfig, prefix: str = "") -> list[str]:
    """Every settable dotted key of the config (for error messages)."""
    keys = []
    for name, field in model.model_fields.items():
        sub = _submodel(field.annotation)
        if sub is not None:
            keys.extend(valid_keys(sub, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _fields_at(loc: tuple) -> list[str]:
    """The keys of the config section at ``loc`` (list indices pass into the items' section)."""
    model: type[BaseModel] = RunConfig
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(str(part))
        sub = None if field is None else _submodel(field.annotation, items=True)
        if sub is None:
            return []
        model = sub
    return list(model.model_fields)


def _submodel(annotation: Any, *, items: bool = False) -> type[BaseModel] | None:
    """The section model of a field: ``Section`` or ``Section | None``; with ``items``, also the
    item model of ``tuple[Section, ...]``."""
    import types
    import typing

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if items and typing.get_origin(annotation) is tuple:
        args = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        return _submodel(args[0]) if len(args) == 1 else None
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        models = [a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)]
        return models[0] if models else None
    return None


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not KEY=VALUE (e.g. train.epochs=3)")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"override {text!r}: value is not valid YAML: {exc}") from exc
    return key.strip().split("."), value


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Set dotted keys in the raw YAML dict; an unknown key lists the valid ones."""
    keys = set(valid_keys())
    # a whole section may be set too (e.g. train.early_stopping=null)
    keys |= {".".join(k.split(".")[:i]) for k in keys for i in range(1, k.count(".") + 1)}
    for text in overrides:
        path, value = parse_override(text)
        dotted = ".".join(path)
        # free-form dicts (model.args, data.relabel) take any sub-key
        free = dotted.startswith(("model.args.", "data.relabel."))
        if dotted not in keys and not free:
            near = [k for k in sorted(keys) if k.startswith(path[0])] or sorted(keys)
            raise ConfigError(f"unknown config key {dotted!r}; valid keys: {', '.join(near)}")
        node = raw
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot set {dotted!r}: {part!r} is not a section")
        node[path[-1]] = value
    return raw


def load_config(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set`` overrides, validate and freeze it."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(raw).__name__}")
    raw = apply_overrides(raw, list(overrides))
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{path}: invalid config:\n{_explain(exc)}") from exc


def _explain(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "extra_forbidden":
            parent = ".".join(str(p) for p in err["loc"][:-1])
            valid = [f"{parent}.{name}" if parent else name for name in _fields_at(err["loc"][:-1])]
            lines.append(f"  {where}: unknown key; valid keys here: {', '.join(valid)}")
        else:
            lines.append(f"  {where}: {err['msg']} (got {err.get('input')!r})")
    return "\n".join(lines)
