"""Importers for a researcher's own data: a folder per class, or a CSV file.

Both produce the same manifest as the public-set loaders. ``task`` (one of
the registry's tasks) tells downstream code which pipeline the data is for.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from dxlab.datasets.images import IMAGE_SUFFIXES
from dxlab.datasets.manifest import SPLITS, Manifest, build_manifest
from dxlab.datasets.registry import TASKS
from dxlab.datasets.tables import read_table
from dxlab.errors import DatasetError

DICOM_SUFFIXES = (".dcm", ".dicom")


def _check_task(task: str) -> None:
    if task not in TASKS:
        raise DatasetError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")


def import_folder(root: str | Path, *, task: str, dataset: str | None = None) -> Manifest:
    """One sub-folder per class; every image below it (recursively) is an example.

    Each image is its own group (patient id = its path), since a folder layout
    carries no patient ids: use the CSV importer when patients have several images.
    """
    _check_task(task)
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError("folder not found; expected one sub-folder per class", root)
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DatasetError("no class sub-folders found; expected ROOT/<class>/<image files>", root)
    rows = []
    for class_dir in class_dirs:
        for path in sorted(class_dir.rglob("*")):
            if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES + DICOM_SUFFIXES:
                rel = path.relative_to(root).as_posix()
                rows.append({"path": rel, "label": class_dir.name, "patient_id": rel})
    if not rows:
        raise DatasetError(f"no image files ({', '.join(IMAGE_SUFFIXES + DICOM_SUFFIXES)}) in the class folders", root)
    return build_manifest(
        rows,
        dataset=dataset or root.name,
        task=task,
        classes=sorted({r["label"] for r in rows}),
        root=root,
        group_kind="image",
    )


def import_csv(
    csv_path: str | Path,
    *,
    task: str,
    image_col: str = "path",
    label_col: str = "label",
    patient_col: str | None = None,
    split_col: str | None = None,
    metadata_cols: Sequence[str] = (),
    classes: Sequence[str] | None = None,
    root: str | Path | None = None,
    dataset: str | None = None,
) -> Manifest:
    """Build a manifest from a CSV with an image column and a label column.

    Image paths are relative to ``root`` (default: the CSV's folder). Without
    ``patient_col`` every image is its own group. ``classes`` fixes the class
    order (default: sorted label values).
    """
    _check_task(task)
    csv_path = Path(csv_path).expanduser().resolve()
    if csv_path.is_dir():
        raise DatasetError("expected a CSV file, got a folder (use the folder importer for a folder per class)", csv_path)
    wanted = [image_col, label_col, *([patient_col] if patient_col else []), *([split_col] if split_col else []), *metadata_cols]
    table = read_table(csv_path, required=wanted)
    root = Path(root).expanduser().resolve() if root else csv_path.parent
    labels = table[label_col].str.strip()
    empty = labels == ""
    if empty.any():
        raise DatasetError(f"row {int(empty.idxmax()) + 2}: empty value in label column {label_col!r}", csv_path)
    class_list = list(classes) if classes else sorted(labels.unique())
    unknown = sorted(set(labels) - set(class_list))
    if unknown:
        raise DatasetError(f"label column {label_col!r} holds {unknown[:5]}, not among the classes {class_list}", csv_path)
    rows = []
    for i, rec in table.iterrows():
        rel = rec[image_col].strip()
        if not rel:
            raise DatasetError(f"row {i + 2}: empty value in image column {image_col!r}", csv_path)
        if not (root / rel).is_file():
            raise DatasetError(f"row {i + 2}: image {rel!r} (column {image_col!r}) not found under {root}", csv_path)
        row = {"path": rel, "label": labels[i], "patient_id": rec[patient_col].strip() if patient_col else rel}
        if split_col:
            split = rec[split_col].strip().lower()
            split = {"valid": "val", "validation": "val", "training": "train"}.get(split, split)
            if split not in SPLITS:
                raise DatasetError(f"row {i + 2}: split {rec[split_col]!r} in column {split_col!r}; expected one of {', '.join(SPLITS)}", csv_path)
            row["split"] = split
        for col in metadata_cols:
            row[col] = rec[col]
        rows.append(row)
    return build_manifest(
        rows,
        dataset=dataset or csv_path.stem,
        task=task,
        classes=class_list,
        root=root,
        group_kind="patient" if patient_col else "image",
    )
