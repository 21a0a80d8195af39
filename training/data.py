"""From a run config's ``data`` section to one split manifest.

Sources are registry data sets (loaded from their folder, by default
``DXLAB_DATA_ROOT/<name>``), prepared manifest files, or a synthetic set drawn
into ``DXLAB_HOME/synthetic/<task>-<n>-<size>-<seed>`` (reused when present).
Several sources are merged into one manifest (their rows keep a ``source_set``
column), labels are merged or filtered as the config says, and groups are
split by :func:`dxlab.datasets.split_manifest`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dxlab.datasets import Manifest, get_dataset, split_manifest
from dxlab.datasets.manifest import SYNTHETIC_MARKER
from dxlab.datasets.synthetic import synthesize
from dxlab.errors import ConfigError
from dxlab.settings import get_settings
from dxlab.training.config import DataConfig, DataSource

log = logging.getLogger(__name__)


def _load_source(source: DataSource) -> Manifest | None:
    if source.manifest:
        manifest = Manifest.load(source.manifest)
    else:
        spec = get_dataset(source.dataset)
        root = Path(source.root).expanduser() if source.root else get_settings().data_root / spec.name
        if source.optional and spec.access != "bundled" and not root.is_dir():
            log.info("optional data set %s not found at %s: skipped", spec.name, root)
            return None
        manifest = spec.load(root)
    return _apply_relabel(manifest, source.relabel, "data.sources[].relabel")


def _apply_relabel(manifest: Manifest, relabel: dict[str, str], where: str) -> Manifest:
    if not relabel:
        return manifest
    classes = list(manifest.classes)
    unknown = sorted(set(relabel) - set(classes))
    if unknown:
        raise ConfigError(f"{where} names {unknown}, not classes of {manifest.dataset} ({classes})")
    table = manifest.table.copy()
    table["label"] = table["label"].map(lambda v: relabel.get(v, v))
    merged = tuple(dict.fromkeys(relabel.get(c, c) for c in classes))
    return manifest.with_table(table, classes=merged)


def _synthetic(task: str, cfg: DataConfig) -> Manifest:
    syn = cfg.synthetic
    folder = get_settings().home / "synthetic" / f"{task}-{syn.n}-{syn.size or 'default'}-{syn.seed}"
    if (folder / "manifest.csv").is_file() and (folder / SYNTHETIC_MARKER).is_file():
        return Manifest.load(folder / "manifest.csv")
    if folder.exists():  # a half-written folder from an interrupted run
        import shutil

        shutil.rmtree(folder)
    manifest, _ = synthesize(task, folder, n=syn.n, seed=syn.seed, size=syn.size)
    return manifest


def _merge(manifests: list[Manifest], task: str) -> Manifest:
    if len(manifests) == 1:
        return manifests[0]
    for m in manifests:
        if m.task != task:
            raise ConfigError(f"data set {m.dataset} is for task {m.task!r}, not {task!r}")
    classes = list(dict.fromkeys(c for m in manifests for c in m.classes))
    names = [m.dataset for m in manifests]
    tables = []
    for i, m in enumerate(manifests):
        t = m.table.copy()
        # one root for all: make paths absolute, and keep group ids apart between sets
        name = m.dataset if names.count(m.dataset) == 1 else f"{m.dataset}#{i + 1}"
        t["path"] = [str(m.resolve(p)) if p else "" for p in t["path"]]
        t["patient_id"] = name + ":" + t["patient_id"]
        t["source_set"] = name
        tables.append(t)
    return Manifest(
        table=pd.concat(tables, ignore_index=True),
        dataset="+".join(m.dataset for m in manifests),
        task=task,
        classes=tuple(classes),
        root=None,
        group_kind=manifests[0].group_kind,
        synthetic=any(m.synthetic for m in manifests),
    )


def _relabel(manifest: Manifest, cfg: DataConfig) -> Manifest:
    manifest = _apply_relabel(manifest, cfg.relabel, "data.relabel")
    table = manifest.table.copy()
    classes = list(manifest.classes)
    if cfg.classes:
        unknown = sorted(set(cfg.classes) - set(classes))
        if unknown:
            raise ConfigError(f"data.classes names {unknown}, not classes of {manifest.dataset} ({classes})")
        table = table[table["label"].isin(cfg.classes)]
        classes = list(cfg.classes)
    if table.empty:
        raise ConfigError(f"no examples of {manifest.dataset} are left after data.relabel/data.classes")
    return manifest.with_table(table, classes=tuple(classes))


def build_run_manifest(task: str, cfg: DataConfig) -> Manifest:
    """The split manifest a run trains and evaluates on."""
    manifests = [m for m in (_load_source(s) for s in cfg.sources) if m is not None]
    if cfg.synthetic is not None:
        manifests.append(_synthetic(task, cfg))
    if not manifests:
        raise ConfigError("none of the configured data sources is present (all optional and missing)")
    manifest = _relabel(_merge(manifests, task), cfg)
    if cfg.positive_class and cfg.positive_class not in manifest.classes:
        raise ConfigError(f"data.positive_class {cfg.positive_class!r} is not one of {list(manifest.classes)}")
    if cfg.positive_class and len(manifest.classes) == 2:
        # binary metrics read the last class as positive
        negative = next(c for c in manifest.classes if c != cfg.positive_class)
        manifest = manifest.with_table(manifest.table, classes=(negative, cfg.positive_class))
    sp = cfg.split
    manifest = split_manifest(manifest, val=sp.val, test=sp.test, seed=sp.seed, keep_official=sp.keep_official)
    missing = [s for s in ("train", "val", "test") if not (manifest.table["split"] == s).any()]
    if missing:
        raise ConfigError(f"split leaves {missing} empty for {manifest.dataset}; adjust data.split fractions")
    return manifest
