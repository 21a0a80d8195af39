"""The data set registry: one entry per public data set, refusing duplicates.

Each entry says what the set is (task, modality, classes), where it comes from
(official URLs with checksums, licence, citation) and how its official on-disk
layout becomes a :class:`~dxlab.datasets.manifest.Manifest` (its loader).
Loaders register themselves in :mod:`dxlab.datasets.sources`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dxlab.datasets.manifest import Manifest
from dxlab.errors import DatasetError

TASKS = (
    "tb_cxr",
    "dermatology",
    "cancer_breast_us",
    "cancer_mammography",
    "cancer_histology",
    "cancer_tabular",
    "pneumonia_cxr",
)
#: open: downloadable, checksums verified; manual: the user downloads it (a
#: registration page, or no published checksum to verify against); bundled:
#: shipped inside a dependency.
ACCESS = ("open", "manual", "bundled")


@dataclass(frozen=True)
class Source:
    """One downloadable file of a data set, with its published checksum."""

    url: str
    filename: str
    sha256: str | None = None
    md5: str | None = None

    def __post_init__(self) -> None:
        if not (self.sha256 or self.md5):
            raise ValueError(f"source {self.url} needs a sha256 or an official md5")


@dataclass(frozen=True)
class DatasetSpec:
    """What dxlab knows about one public data set."""

    name: str
    title: str
    task: str
    modality: str
    classes: tuple[str, ...]
    licence: str
    citation: str
    homepage: str
    loader: Callable[[Path], Manifest] = field(repr=False)
    access: str = "open"
    #: for manual sets: why dxlab does not download them itself
    access_note: str = ""
    sources: tuple[Source, ...] = ()
    group_kind: str = "patient"
    official_split: bool = False
    description: str = ""
    #: how the files must be laid out under the folder given to the loader
    layout: str = ""

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"data set {self.name!r}: task {self.task!r} is not one of {', '.join(TASKS)}")
        if self.access not in ACCESS:
            raise ValueError(f"data set {self.name!r}: access {self.access!r} is not one of {', '.join(ACCESS)}")
        if self.access == "open" and not self.sources:
            raise ValueError(f"data set {self.name!r} is open but lists no sources to download")
        if self.access == "manual" and not self.access_note:
            raise ValueError(f"data set {self.name!r} is manual but does not say why (access_note)")

    def load(self, root: str | Path) -> Manifest:
        """Run the loader on a folder holding the set in its official layout."""
        root = Path(root).expanduser()
        if self.access != "bundled" and not root.is_dir():
            raise DatasetError(f"folder not found; expected the {self.title} files ({self.layout or 'official layout'})", root)
        return self.loader(root)

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description for ``dxlab data list/info``."""
        return {
            "name": self.name,
            "title": self.title,
            "task": self.task,
            "modality": self.modality,
            "classes": list(self.classes),
            "licence": self.licence,
            "access": self.access,
            "access_note": self.access_note,
            "homepage": self.homepage,
            "citation": self.citation,
            "group_kind": self.group_kind,
            "official_split": self.official_split,
            "layout": self.layout,
            "description": self.description,
            "sources": [
                {"url": s.url, "filename": s.filename, "sha256": s.sha256, "md5": s.md5} for s in self.sources
            ],
        }


_REGISTRY: dict[str, DatasetSpec] = {}


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add a data set to the registry; a second entry with the same name is refused."""
    if spec.name in _REGISTRY:
        raise ValueError(f"data set {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    # the sources register themselves on import; imported here, lazily, so that
    # importing the registry alone stays cheap
    from dxlab.datasets import sources  # noqa: F401


def get_dataset(name: str) -> DatasetSpec:
    """The registry entry called ``name``; an unknown name lists the valid ones."""
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DatasetError(f"unknown data set {name!r}; known data sets: {', '.join(sorted(_REGISTRY))}") from None


def list_datasets(task: str | None = None) -> list[DatasetSpec]:
    """Registered data sets, sorted by name, optionally only those of one task."""
    _ensure_loaded()
    if task is not None and task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    return [s for _, s in sorted(_REGISTRY.items()) if task is None or s.task == task]
