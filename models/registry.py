"""Registries of model builders: networks for images, scikit-learn estimators for tables.

Both use one :class:`Registry`: an entry is a builder function registered by
name; a second entry under the same name is refused; an unknown name, or an
argument the builder does not take, fails with the valid ones listed.

Networks (``build_model``) all take ``in_channels`` (1 or 3), ``num_classes``
(2 or more: binary tasks use two outputs and a softmax) and ``pretrained``.
ImageNet weights come through torchvision's weights API and its cache
(``$TORCH_HOME/hub/checkpoints``). When they are neither cached nor downloadable,
asking for them raises :class:`~dxlab.errors.ModelError` saying how to get them:
a run never falls back to training from scratch without being told to.
With one input channel, the pretrained first convolution is the sum of its RGB
kernels, so a grey image repeated over three channels gives the same features.
"""

from __future__ import annotations

import inspect
import logging
import pickle
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Generic, TypeVar

from dxlab.errors import ModelError

log = logging.getLogger(__name__)

T = TypeVar("T")

#: marks an argument without a default in :attr:`BuilderSpec.arguments`
REQUIRED = "<required>"


@dataclass(frozen=True)
class BuilderSpec:
    """What one registry entry builds and which arguments it takes."""

    name: str
    kind: str
    description: str
    #: argument name -> default value, or :data:`REQUIRED`
    arguments: Mapping[str, Any]
    #: the torchvision weights used when ``pretrained=True`` (None: no pretrained weights)
    weights: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "description": self.description,
                "arguments": dict(self.arguments), "weights": self.weights}


@dataclass(frozen=True)
class _Entry(Generic[T]):
    builder: Callable[..., T]
    spec: BuilderSpec


@dataclass
class Registry(Generic[T]):
    """Builders of one kind ("model", "estimator") by name; duplicates are refused.

    ``check`` validates the arguments common to every entry before the builder runs.
    """

    kind: str
    check: Callable[[str, dict[str, Any]], None] | None = None
    _entries: dict[str, _Entry[T]] = field(default_factory=dict, repr=False)

    def register(self, name: str, *, description: str, weights: str | None = None) -> Callable[[Callable[..., T]], Callable[..., T]]:
        """Decorator that adds a builder under ``name``; a taken name is refused."""

        def add(builder: Callable[..., T]) -> Callable[..., T]:
            if name in self._entries:
                raise ModelError(f"{self.kind} {name!r} is already registered; pick another name")
            arguments = {}
            for param in inspect.signature(builder).parameters.values():
                if param.kind is not inspect.Parameter.KEYWORD_ONLY:
                    raise ModelError(f"{self.kind} builder {name!r}: argument {param.name!r} must be keyword-only")
                arguments[param.name] = REQUIRED if param.default is inspect.Parameter.empty else param.default
            spec = BuilderSpec(name=name, kind=self.kind, description=description,
                               arguments=MappingProxyType(arguments), weights=weights)
            self._entries[name] = _Entry(builder, spec)
            return builder

        return add

    def names(self) -> list[str]:
        return sorted(self._entries)

    def spec(self, name: str) -> BuilderSpec:
        return self._entry(name).spec

    def build(self, name: str, **args: Any) -> T:
        """Build entry ``name``; unknown or missing arguments are refused with the valid ones."""
        entry = self._entry(name)
        valid = entry.spec.arguments
        unknown = sorted(set(args) - set(valid))
        if unknown:
            raise ModelError(f"{self.kind} {name!r} takes no argument {', '.join(map(repr, unknown))}; "
                             f"valid arguments: {', '.join(valid)}")
        missing = [a for a, default in valid.items() if default is REQUIRED and a not in args]
        if missing:
            raise ModelError(f"{self.kind} {name!r} needs argument {', '.join(map(repr, missing))}; "
                             f"valid arguments: {', '.join(valid)}")
        if self.check is not None:
            self.check(name, args)
        return entry.builder(**args)

    def _entry(self, name: str) -> _Entry[T]:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ModelError(f"unknown {self.kind} {name!r}; known {self.kind}s: {', '.join(self.names())}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._entries)


# --------------------------------------------------------------------------- networks


def _check_network_args(name: str, args: dict[str, Any]) -> None:
    in_channels, num_classes, pretrained = args.get("in_channels"), args.get("num_classes"), args.get("pretrained", False)
    if isinstance(in_channels, bool) or in_channels not in (1, 3):
        raise ModelError(f"model {name!r}: in_channels={in_channels!r}; expected 1 or 3")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ModelError(f"model {name!r}: num_classes={num_classes!r}; expected an integer >= 2 "
                         "(a binary task has two outputs)")
    if not isinstance(pretrained, bool):
        raise ModelError(f"model {name!r}: pretrained={pretrained!r}; expected true or false")


def _check_dropout(name: str, dropout: Any) -> float:
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
        raise ModelError(f"model {name!r}: dropout={dropout!r}; expected a number in [0, 1)")
    return float(dropout)


MODELS: Registry[Any] = Registry("model", check=_check_network_args)


def register_model(name: str, *, description: str, weights: str | None = None):
    """Decorator adding a network builder (keyword-only ``in_channels``, ``num_classes``,
    ``pretrained`` and its own arguments) to the model registry."""
    return MODELS.register(name, description=description, weights=weights)


def list_models() -> list[str]:
    """Names of the registered network builders, sorted."""
    return MODELS.names()


def model_spec(name: str) -> BuilderSpec:
    """The description and valid arguments of network builder ``name``."""
    return MODELS.spec(name)


def build_model(name: str, **args: Any):
    """Build network ``name`` (a ``torch.nn.Module`` returning logits ``(N, num_classes)``)."""
    return MODELS.build(name, **args)


def _weights(enum_name: str, member: str = "IMAGENET1K_V1"):
    import torchvision.models as tvm

    return getattr(getattr(tvm, enum_name), member)


def _imagenet_state_dict(builder: str, weights) -> dict[str, Any]:
    """The ImageNet state dict of ``weights``, from torch hub's cache or downloaded into it."""
    import torch.hub

    cache = f"{torch.hub.get_dir()}/checkpoints"
    filename = weights.url.rsplit("/", 1)[-1]
    try:
        return weights.get_state_dict(progress=False, check_hash=True, weights_only=True)
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:  # URLError is an OSError
        raise ModelError(
            f"model {builder!r}: pretrained=True needs the ImageNet weights {weights!r}, which are not in the "
            f"torch hub cache ({cache}/{filename}) and could not be fetched ({type(exc).__name__}: {exc}). "
            f"Run once with internet access, or download {weights.url} and copy it to {cache}/ "
            "(set TORCH_HOME to use another cache folder); or set pretrained=false to train from scratch."
        ) from exc


def _load_pretrained(builder: str, model, weights, *, first_conv: str, head: str,
                     rename: Callable[[str], str] | None = None) -> None:
    """Load ImageNet weights into ``model``, except its new head; adapt the first conv to 1 channel."""
    state = _imagenet_state_dict(builder, weights)
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    own = model.state_dict()
    state = {k: v for k, v in state.items() if not k.startswith(head)}
    conv = state[first_conv]
    if own[first_conv].shape[1] == 1 and conv.shape[1] == 3:
        state[first_conv] = conv.sum(dim=1, keepdim=True)
    missing, unexpected = model.load_state_dict(state, strict=False)
    # the head is new; old checkpoints lack BatchNorm's num_batches_tracked counters
    missing = [k for k in missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ModelError(f"model {builder!r}: the weights {weights!r} do not fit the network "
                         f"(missing {missing[:5]}, unexpected {unexpected[:5]})")
    log.info("model %s: loaded ImageNet weights %r", builder, weights)


def _one_channel_conv(conv):
    """A copy of the first convolution that takes one input channel (fresh weights)."""
    import torch.nn as nn

    return nn.Conv2d(1, conv.out_channels, kernel_size=conv.kernel_size, stride=conv.stride,
                     padding=conv.padding, dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None)


@register_model("densenet121", weights="DenseNet121_Weights.IMAGENET1K_V1",
                description="MONAI DenseNet-121 (2-D); ImageNet weights from torchvision")
def densenet121(*, in_channels: int, num_classes: int, pretrained: bool = False, dropout: float = 0.0):
    from monai.networks.nets import DenseNet121

    model = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=num_classes,
                        dropout_prob=_check_dropout("densenet121", dropout))
    if pretrained:
        # torchvision's file names dense layers 'denselayer1.norm.1' (old) or
        # 'denselayer1.norm1'; MONAI's are 'denselayer1.layers.norm1'
        pattern = re.compile(r"^(.*denselayer\d+)\.(norm|relu|conv)\.?([12])\.(.+)$")

        def rename(key: str) -> str:
            key = pattern.sub(r"\1.layers.\2\3.\4", key)
            return key.replace("classifier.", "class_layers.out.", 1) if key.startswith("classifier.") else key

        _load_pretrained("densenet121", model, _weights("DenseNet121_Weights"), first_conv="features.conv0.weight",
                         head="class_layers.out.", rename=rename)
    return model


#: ResNet stems: ImageNet's (7x7 stride-2 convolution, then max-pooling: /4) or a small-image one
#: (3x3 stride-1 convolution, no pooling), as ResNets for 28-32 px images use (CIFAR, MedMNIST v2)
RESNET_STEMS = ("imagenet", "small")


def _resnet(name: str, in_channels: int, num_classes: int, pretrained: bool, weights: str, stem: str):
    import torch.nn as nn
    import torchvision.models as tvm

    if stem not in RESNET_STEMS:
        raise ModelError(f"model {name!r}: stem={stem!r}; expected one of {', '.join(RESNET_STEMS)}")
    if pretrained and stem != "imagenet":
        raise ModelError(f"model {name!r}: the ImageNet weights need stem='imagenet'; stem={stem!r} trains from scratch "
                         "(set pretrained=false)")
    model = getattr(tvm, name)(weights=None, num_classes=num_classes)
    if stem == "small":
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
        model.maxpool = nn.Identity()
    elif in_channels == 1:
        model.conv1 = _one_channel_conv(model.conv1)
    if pretrained:
        _load_pretrained(name, model, _weights(weights), first_conv="conv1.weight", head="fc.")
    return model


@register_model("resnet18", weights="ResNet18_Weights.IMAGENET1K_V1", description="torchvision ResNet-18")
def resnet18(*, in_channels: int, num_classes: int, pretrained: bool = False, stem: str = "imagenet"):
    return _resnet("resnet18", in_channels, num_classes, pretrained, "ResNet18_Weights", stem)


@register_model("resnet50", weights="ResNet50_Weights.IMAGENET1K_V1", description="torchvision ResNet-50")
def resnet50(*, in_channels: int, num_classes: int, pretrained: bool = False, stem: str = "imagenet"):
    return _resnet("resnet50", in_channels, num_classes, pretrained, "ResNet50_Weights", stem)


@register_model("efficientnet_b0", weights="EfficientNet_B0_Weights.IMAGENET1K_V1",
                description="torchvision EfficientNet-B0")
def efficientnet_b0(*, in_channels: int, num_classes: int, pretrained: bool = False, dropout: float = 0.2):
    import torchvision.models as tvm

    model = tvm.efficientnet_b0(weights=None, num_classes=num_classes, dropout=_check_dropout("efficientnet_b0", dropout))
    if in_channels == 1:
        model.features[0][0] = _one_channel_conv(model.features[0][0])
    if pretrained:
        _load_pretrained("efficientnet_b0", model, _weights("EfficientNet_B0_Weights"),
                         first_conv="features.0.0.weight", head="classifier.")
    return model


@register_model("small_cnn", description="a small CNN for 28-pixel inputs (MedMNIST scale); any size works")
def small_cnn(*, in_channels: int, num_classes: int, pretrained: bool = False, width: int = 32, dropout: float = 0.0):
    import torch.nn as nn

    if pretrained:
        raise ModelError("model 'small_cnn' has no pretrained weights; set pretrained=false")
    if isinstance(width, bool) or not isinstance(width, int) or width < 1:
        raise ModelError(f"model 'small_cnn': width={width!r}; expected a positive integer")
    dropout = _check_dropout("small_cnn", dropout)

    def block(cin: int, cout: int) -> list:
        return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

    w = width
    return nn.Sequential(
        *block(in_channels, w), *block(w, w), nn.MaxPool2d(2),          # 28 -> 14
        *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),        # 14 -> 7
        *block(2 * w, 4 * w),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(4 * w, num_classes),
    )


# --------------------------------------------------------------------------- estimators


ESTIMATORS: Registry[Any] = Registry("estimator")


def register_estimator(name: str, *, description: str):
    """Decorator adding a scikit-learn estimator builder to the estimator registry."""
    return ESTIMATORS.register(name, description=description)


def list_estimators() -> list[str]:
    """Names of the registered scikit-learn estimators, sorted."""
    return ESTIMATORS.names()


def estimator_spec(name: str) -> BuilderSpec:
    """The description and valid arguments of estimator ``name``."""
    return ESTIMATORS.spec(name)


def build_estimator(name: str, **args: Any):
    """Build estimator ``name``: an unfitted scikit-learn ``Pipeline`` with ``predict_proba``."""
    return ESTIMATORS.build(name, **args)


@register_estimator("logistic_regression", description="standardised features, L2 logistic regression")
def logistic_regression(*, C: float = 1.0, class_weight: str | None = None, max_iter: int = 1000, random_state: int = 0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline([("scale", StandardScaler()),
                     ("model", LogisticRegression(C=C, class_weight=class_weight, max_iter=max_iter, random_state=random_state))])


@register_estimator("random_forest", description="random forest (no scaling: trees do not need it)")
def random_forest(*, n_estimators: int = 300, max_depth: int | None = None, min_samples_leaf: int = 1,
                  class_weight: str | None = None, n_jobs: int | None = None, random_state: int = 0):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([("model", RandomForestClassifier(n_estimators=n_estimators, max_depth=max_depth,
                                                      min_samples_leaf=min_samples_leaf, class_weight=class_weight,
                                                      n_jobs=n_jobs, random_state=random_state))])


@register_estimator("gradient_boosting", description="gradient-boosted trees (no scaling: trees do not need it)")
def gradient_boosting(*, n_estimators: int = 200, learning_rate: float = 0.1, max_depth: int = 3,
                      subsample: float = 1.0, random_state: int = 0):
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline

    return Pipeline([("model", GradientBoostingClassifier(n_estimators=n_estimators, learning_rate=learning_rate,
                                                          max_depth=max_depth, subsample=subsample,
                                                          random_state=random_state))])
