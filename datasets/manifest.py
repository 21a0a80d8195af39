"""The manifest: the one data contract between loaders and everything downstream.

A manifest is a table with one row per example:

| column       | meaning                                                            |
|--------------|--------------------------------------------------------------------|
| ``path``     | the image file, relative to the manifest's root (empty for tabular rows) |
| ``label``    | the class name (one of the manifest's ``classes``)                 |
| ``patient_id`` | the grouping key: patient, lesion or slide id (``group_kind`` says which) |
| ``split``    | ``train``, ``val``, ``test`` or empty (not yet split)              |
| ``sha256``   | SHA-256 of the file's bytes (of the row's feature values for tabular rows) |
| anything else | metadata: ``sex``, ``age``, ``site``, ``source``, ``view``, ...   |

It is saved as a CSV file headed by ``#`` lines that hold the data set's name,
task, classes, root, group kind, whether it is synthetic, and the content
digest. The digest is a SHA-256 over the whole table (every column, rows in a
canonical order), so it changes when any file, label, split or metadata value
changes: it is the data set's version.
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pandas as pd

from dxlab.errors import DatasetError

FORMAT = "dxlab-manifest/1"
REQUIRED_COLUMNS = ("path", "label", "patient_id", "split", "sha256")
SPLITS = ("train", "val", "test")
GROUP_KINDS = ("patient", "lesion", "slide", "image")
_HEADER_KEYS = ("format", "dataset", "task", "classes", "group_kind", "synthetic", "root", "digest")


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class Manifest:
    """A validated manifest table plus what describes it.

    ``root`` is the folder that relative ``path`` values are resolved against;
    ``table`` is never modified in place (methods return new manifests).
    """

    table: pd.DataFrame
    dataset: str
    task: str
    classes: tuple[str, ...]
    root: Path | None = None
    group_kind: str = "patient"
    synthetic: bool = False
    _digest: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "table", _normalise(self.table, self.classes, self.dataset))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.group_kind not in GROUP_KINDS:
            raise DatasetError(f"group_kind {self.group_kind!r} is not one of {', '.join(GROUP_KINDS)}")
        object.__setattr__(self, "_digest", _digest(self.table, self.dataset, self.task, self.classes))

    # -- derived views -----------------------------------------------------
    @property
    def digest(self) -> str:
        """The data set's version: ``sha256:<hex>`` over the whole table."""
        return self._digest

    @property
    def metadata_columns(self) -> list[str]:
        return [c for c in self.table.columns if c not in REQUIRED_COLUMNS]

    def __len__(self) -> int:
        return len(self.table)

    def resolve(self, path: str) -> Path:
        """The absolute path of a row's ``path`` value."""
        p = Path(path)
        if p.is_absolute() or self.root is None:
            return p
        return self.root / p

    def paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.table["path"]]

    def label_indices(self) -> list[int]:
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[v] for v in self.table["label"]]

    def subset(self, split: str) -> "Manifest":
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        return self.with_table(self.table[self.table["split"] == split])

    def with_table(self, table: pd.DataFrame, **changes: Any) -> "Manifest":
        return replace(self, table=table.reset_index(drop=True), **changes)

    def summary(self) -> dict[str, Any]:
        """Counts by split and class, for the CLI and the demo."""
        table = self.table
        present = [s for s in (*SPLITS, "") if (table["split"] == s).any()]
        by_split = {s or "unsplit": int((table["split"] == s).sum()) for s in present}
        counts = table.groupby(["split", "label"]).size()
        by_split_class = {(s or "unsplit"): {c: int(counts.get((s, c), 0)) for c in self.classes} for s in present}
        return {
            "dataset": self.dataset,
            "task": self.task,
            "synthetic": self.synthetic,
            "version": self.digest,
            "examples": len(table),
            "groups": int(table["patient_id"].nunique()),
            "group_kind": self.group_kind,
            "classes": list(self.classes),
            "class_counts": {c: int((table["label"] == c).sum()) for c in self.classes},
            "splits": by_split,
            "split_class_counts": by_split_class,
            "metadata_columns": self.metadata_columns,
        }

    # -- files ---------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write the manifest as a CSV file with its header; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        header = {
            "format": FORMAT,
            "dataset": self.dataset,
            "task": self.task,
            "classes": json.dumps(list(self.classes)),
            "group_kind": self.group_kind,
            "synthetic": "true" if self.synthetic else "false",
            "root": "" if self.root is None else str(self.root),
            "digest": self.digest,
        }
        buffer = io.StringIO()
        for key in _HEADER_KEYS:
            buffer.write(f"# {key}: {header[key]}\n")
        self.table.to_csv(buffer, index=False, lineterminator="\n")
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(buffer.getvalue(), encoding="utf-8")
        tmp.replace(path)  # atomic: a reader never sees half a manifest
        return path

    @classmethod
    def load(cls, path: str | Path) -> "Manifest":
        """Read a manifest file; checks its format and that its digest matches."""
        path = Path(path)
        if not path.is_file():
            raise DatasetError("manifest file not found", path)
        text = path.read_text(encoding="utf-8")
        header: dict[str, str] = {}
        lines = text.splitlines(keepends=True)
        n = 0
        while n < len(lines) and lines[n].startswith("# "):
            key, _, value = lines[n][2:].rstrip("\n").partition(": ")
            header[key] = value
            n += 1
        if header.get("format") != FORMAT:
            raise DatasetError(f"not a dxlab manifest (expected a '# format: {FORMAT}' first line)", path)
        missing = [k for k in _HEADER_KEYS if k not in header]
        if missing:
            raise DatasetError(f"manifest header lacks {', '.join(missing)}", path)
        try:
            table = pd.read_csv(io.StringIO("".join(lines[n:])), dtype=str, keep_default_na=False)
            classes = tuple(json.loads(header["classes"]))
        except (ValueError, pd.errors.ParserError) as exc:
            raise DatasetError(f"malformed manifest: {exc}", path) from exc
        try:
            manifest = cls(
                table=_restore_types(table),
                dataset=header["dataset"],
                task=header["task"],
                classes=classes,
                root=Path(header["root"]) if header["root"] else None,
                group_kind=header["group_kind"],
                synthetic=header["synthetic"] == "true",
            )
        except DatasetError as exc:
            raise DatasetError(str(exc), path) from exc
        if manifest.digest != header["digest"]:
            raise DatasetError(
                f"content digest {manifest.digest} does not match the recorded {header['digest']}: the file was edited by hand; rebuild it with 'dxlab data import'",
                path,
            )
        return manifest


def build_manifest(
    rows: Iterable[Mapping[str, Any]],
    *,
    dataset: str,
    task: str,
    classes: Iterable[str],
    root: str | Path,
    group_kind: str = "patient",
    hash_files: bool = True,
) -> Manifest:
    """Make a manifest from loader rows (dicts with at least path, label, patient_id).

    Fills ``split`` (empty when absent) and ``sha256`` (hashing each file, which
    must exist). A folder holding a ``DXLAB_SYNTHETIC`` marker file gives a
    manifest flagged synthetic.
    """
    root = Path(root).resolve()
    records = [dict(r) for r in rows]
    if not records:
        raise DatasetError("no examples found", root)
    for rec in records:
        rec.setdefault("split", "")
        rec["patient_id"] = str(rec.get("patient_id", "") or "")
        if not rec["patient_id"]:
            raise DatasetError(f"example {rec.get('path')!r} has no patient/group id", root)
        if hash_files and rec.get("path"):
            file = root / rec["path"]
            if not file.is_file():
                raise DatasetError(f"listed file {rec['path']!r} is missing", root)
            rec["sha256"] = sha256_file(file)
    table = pd.DataFrame.from_records(records)
    front = [c for c in REQUIRED_COLUMNS if c in table.columns]
    table = table[front + [c for c in table.columns if c not in REQUIRED_COLUMNS]]
    synthetic = (root / SYNTHETIC_MARKER).exists()
    return Manifest(
        table=table,
        dataset=f"synthetic_{dataset}" if synthetic and not dataset.startswith("synthetic_") else dataset,
        task=task,
        classes=tuple(classes),
        root=root,
        group_kind=group_kind,
        synthetic=synthetic,
    )


#: File that marks a folder as written by dxlab's synthetic data generators.
SYNTHETIC_MARKER = "DXLAB_SYNTHETIC"


def _normalise(table: pd.DataFrame, classes: tuple[str, ...], dataset: str) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise DatasetError(f"manifest for {dataset!r} lacks required column(s) {', '.join(missing)}; required: {', '.join(REQUIRED_COLUMNS)}")
    if len(table) == 0:
        raise DatasetError(f"manifest for {dataset!r} has no rows")
    if len(set(classes)) != len(classes) or not classes:
        raise DatasetError(f"classes must be distinct and non-empty, got {list(classes)}")
    table = table.reset_index(drop=True).copy()
    for col in REQUIRED_COLUMNS:
        table[col] = table[col].fillna("").astype(str)
    bad = sorted(set(table["label"]) - set(classes))
    if bad:
        raise DatasetError(f"label(s) {bad[:5]} are not among the classes {list(classes)}")
    bad_split = sorted(set(table["split"]) - set(SPLITS) - {""})
    if bad_split:
        raise DatasetError(f"split value(s) {bad_split} are not one of {', '.join(SPLITS)} (or empty)")
    if (table["patient_id"] == "").any():
        raise DatasetError("some rows have an empty patient_id")
    paths = table.loc[table["path"] != "", "path"]
    dup = paths[paths.duplicated()]
    if len(dup):
        raise DatasetError(f"path {dup.iloc[0]!r} is listed more than once")
    return table


def _restore_types(table: pd.DataFrame) -> pd.DataFrame:
    """Turn numeric metadata columns back into numbers after a string read."""
    for col in table.columns:
        if col in REQUIRED_COLUMNS:
            continue
        converted = pd.to_numeric(table[col].replace("", None), errors="coerce")
        if converted.notna().sum() == (table[col] != "").sum():
            table[col] = converted
    return table


def _canonical(value: Any) -> str:
    """One text form per value, so a number reads the same before and after a CSV round trip."""
    if value is None or (isinstance(value, float) and value != value) or value is pd.NA:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, (int, float)) or hasattr(value, "dtype"):
        number = float(value)
        return str(int(number)) if number.is_integer() else repr(number)
    return str(value)


def _digest(table: pd.DataFrame, dataset: str, task: str, classes: tuple[str, ...]) -> str:
    ordered = table[sorted(table.columns)]
    ordered = ordered.sort_values(by=["path", "patient_id", "sha256"], kind="mergesort")
    canon = ordered.map(_canonical)
    payload = io.StringIO()
    payload.write(json.dumps({"dataset": dataset, "task": task, "classes": list(classes)}, sort_keys=True))
    canon.to_csv(payload, index=False, lineterminator="\n")
    return "sha256:" + hashlib.sha256(payload.getvalue().encode("utf-8")).hexdigest()
