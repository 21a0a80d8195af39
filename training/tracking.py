"""MLflow tracking and the model registry: where training meets serving.

Training logs each run and registers its packaged model; the ``champion``
alias moves only when the task's promotion gate passes, otherwise the new
version gets ``challenger``. Serving loads ``models:/<name>@champion``.
"""

from __future__ import annotations

import getpass
import logging
import os
from pathlib import Path
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from dxlab.errors import DxlabError
from dxlab.settings import get_settings
from dxlab.training.config import GateConfig

log = logging.getLogger(__name__)

CHAMPION, CHALLENGER = "champion", "challenger"


class RegistryError(DxlabError):
    """A registered model, version or alias that does not exist or cannot be changed."""


def configure_mlflow(tracking_uri: str | None = None):
    """Point MLflow at dxlab's tracking store (SQLite under DXLAB_HOME by default)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    settings = get_settings()
    uri = tracking_uri or settings.mlflow_tracking_uri
    if uri.startswith("sqlite:"):
        settings.ensure_home()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    # CPU, memory (and GPU) every 2 s, logged at each sample, so that short runs get system metrics too;
    # MLflow reads these variables of its own, and a value the user set wins
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "2")
    os.environ.setdefault("MLFLOW_SYSTEM_METRICS_SAMPLES_BEFORE_LOGGING", "1")
    return mlflow


def use_experiment(name: str):
    """Make ``name`` the active experiment, creating it when missing.

    With a local SQLite store the artifacts go beside the database
    (``<db folder>/mlartifacts``), never into the working directory, which is
    where MLflow would put them by default.
    """
    import mlflow

    if mlflow.get_experiment_by_name(name) is None:
        uri = mlflow.get_tracking_uri()
        location = None
        if uri.startswith("sqlite:///"):
            location = (Path(uri[len("sqlite:///"):]).parent / "mlartifacts").resolve().as_uri()
        mlflow.create_experiment(name, artifact_location=location)
    return mlflow.set_experiment(name)


def client():
    from mlflow import MlflowClient

    configure_mlflow()
    return MlflowClient()


@dataclass(frozen=True)
class GateVerdict:
    passed: bool
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def as_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "reasons": list(self.reasons)}


def gate_verdict(gate: GateConfig, test: dict[str, float], champion_auroc: float | None) -> GateVerdict:
    """Check test metrics against the gate; every reason is stated, pass or fail."""
    checks = [
        ("sensitivity", gate.min_sensitivity),
        ("specificity", gate.min_specificity),
        ("auroc", gate.min_auroc),
        ("accuracy", gate.min_accuracy),
    ]
    reasons, passed = [], True
    for metric, minimum in checks:
        if minimum is None:
            continue
        value = test.get(metric)
        ok = value is not None and value >= minimum
        passed &= ok
        reasons.append(f"test {metric} {_fmt(value)} {'>=' if ok else '<'} required {minimum:.3f}")
    if gate.auroc_not_below_champion:
        if champion_auroc is None:
            reasons.append("no current champion to compare with")
        else:
            value = test.get("auroc")
            ok = value is not None and value >= champion_auroc
            passed &= ok
            reasons.append(f"test auroc {_fmt(value)} {'>=' if ok else '<'} champion's {champion_auroc:.4f}")
    return GateVerdict(passed=bool(passed), reasons=tuple(reasons))


def _fmt(value: float | None) -> str:
    return "missing" if value is None else f"{value:.4f}"


def champion_auroc(model_name: str) -> float | None:
    """The test AUROC logged by the run of the current champion, if there is one."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        version = c.get_model_version_by_alias(model_name, CHAMPION)
    except MlflowException:
        return None
    run = c.get_run(version.run_id)
    return run.data.metrics.get("test_auroc")


def set_alias(model_name: str, version: str | int, alias: str, reason: str) -> None:
    """Move ``alias`` to ``version`` and record who, when and why on the version."""
    from mlflow.exceptions import MlflowException

    c = client()
    try:
        c.get_model_version(model_name, str(version))
    except MlflowException as exc:
        raise RegistryError(f"model {model_name!r} has no version {version}") from exc
    c.set_registered_model_alias(model_name, alias, str(version))
    stamp = datetime.now(timezone.utc).isoformat(timespec="seconds")
    c.set_model_version_tag(model_name, str(version), f"alias.{alias}.reason", reason)
    c.set_model_version_tag(model_name, str(version), f"alias.{alias}.set_at", stamp)
    c.set_model_version_tag(model_name, str(version), f"alias.{alias}.set_by", _user())
    log.info("%s version %s is now %s: %s", model_name, version, alias, reason)


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return "unknown"


def list_models() -> list[dict[str, Any]]:
    """Registered models with their versions and aliases, for ``dxlab models list``."""
    c = client()
    out = []
    for rm in c.search_registered_models():
        versions = c.search_model_versions(f"name='{rm.name}'")
        aliases = {a: str(v) for a, v in (rm.aliases or {}).items()}
        out.append({
            "name": rm.name,
            "aliases": aliases,
            "versions": [
                {"version": v.version, "run_id": v.run_id, "created": v.creation_timestamp,
                 "aliases": [a for a, num in aliases.items() if str(num) == str(v.version)],
                 "tags": dict(v.tags or {})}
                for v in sorted(versions, key=lambda v: int(v.version))
            ],
        })
    return sorted(out, key=lambda m: m["name"])
