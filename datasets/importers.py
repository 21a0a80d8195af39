"""Importers for a researcher's own data: a folder per class, a CSV file, or a DICOM folder with a labels CSV.

All produce the same manifest as the public-set loaders. ``task`` (one of
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


#: What a DICOM labels CSV may be keyed by.
DICOM_KEY_COLUMNS = ("file", "SOPInstanceUID", "StudyInstanceUID")


def import_dicom(
    root: str | Path,
    *,
    labels: str | Path,
    task: str,
    key_col: str = "file",
    label_col: str = "label",
    classes: Sequence[str] | None = None,
    dataset: str | None = None,
    key_file: str | Path | None = None,
) -> Manifest:
    """Build a manifest from a folder of DICOM files and a CSV of labels.

    ``key_col`` names how the CSV finds its images, and is also the CSV column
    that holds the key: ``file`` (a path relative to ``root``, or a bare file
    name when that name is unique), ``SOPInstanceUID`` (one image) or
    ``StudyInstanceUID`` (every image of the study gets the label). Every file
    below ``root`` is sniffed; files that are not DICOM, and DICOM files
    without pixel data, are left out, as are images without a label (logged).
    A label row that matches no image is an error.

    ``patient_id`` is the keyed pseudonym of the DICOM PatientID (the one
    ``dxlab deid`` writes, from the same key file), so the manifest never holds
    a real PatientID; a file without PatientID is grouped by its study (as
    ``dxlab deid`` does).
    Metadata columns: modality, body_part, view, laterality, sex, age.
    """
    import logging

    from dxlab.datasets.deid import Deidentifier, load_key, patient_basis
    from dxlab.datasets.dicom import read_dicom_meta
    from dxlab.datasets.tables import sex_from_text

    log = logging.getLogger(__name__)
    _check_task(task)
    if key_col not in DICOM_KEY_COLUMNS:
        raise DatasetError(f"unknown key column {key_col!r}; expected one of {', '.join(DICOM_KEY_COLUMNS)}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise DatasetError("DICOM folder not found", root)
    labels = Path(labels).expanduser().resolve()
    table = read_table(labels, required=[key_col, label_col])
    wanted: dict[str, str] = {}
    for i, rec in table.iterrows():
        key = rec[key_col].strip().replace("\\", "/").removeprefix("./")
        label = rec[label_col].strip()
        if not key or not label:
            raise DatasetError(f"row {i + 2}: empty value in column {key_col if not key else label_col!r}", labels)
        if wanted.setdefault(key, label) != label:
            raise DatasetError(f"row {i + 2}: {key_col} {key!r} is labelled both {wanted[key]!r} and {label!r}", labels)

    images = []  # (relative path, meta)
    not_dicom = no_pixels = 0
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if not path.is_file() or path == labels or any(part.startswith(".") for part in rel.parts):
            continue
        try:
            meta = read_dicom_meta(path)
        except DatasetError:
            not_dicom += 1
            continue
        if not meta.has_pixels:
            no_pixels += 1
            continue
        images.append((rel.as_posix(), meta))
    if not images:
        raise DatasetError(f"no DICOM images found below the folder ({not_dicom} other files, {no_pixels} DICOM files without pixel data)", root)
    if no_pixels:
        log.info("%s: %d DICOM files without pixel data (reports, presentation states) left out", root, no_pixels)

    names: dict[str, list[str]] = {}
    for rel, _ in images:
        names.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)

    def key_of(rel: str, meta) -> str:
        if key_col == "SOPInstanceUID":
            return meta.sop_uid
        if key_col == "StudyInstanceUID":
            return meta.study_uid
        if rel in wanted:
            return rel
        name = rel.rsplit("/", 1)[-1]
        return name if len(names[name]) == 1 else rel

    pseudonymise = Deidentifier(load_key(key_file)).pseudonym
    rows, used, unlabelled = [], set(), 0
    for rel, meta in images:
        key = key_of(rel, meta)
        if key not in wanted:
            unlabelled += 1
            continue
        used.add(key)
        group = patient_basis(meta.patient_id, meta.study_uid) or f"file:{rel}"
        rows.append({
            "path": rel,
            "label": wanted[key],
            "patient_id": pseudonymise(group),
            "modality": meta.modality,
            "body_part": meta.body_part,
            "view": meta.view_position,
            "laterality": meta.laterality,
            "sex": sex_from_text(meta.sex),
            "age": meta.age,
        })
    missing = [k for k in wanted if k not in used]
    if missing:
        raise DatasetError(
            f"{len(missing)} of {len(wanted)} label rows match no DICOM image below {root} by {key_col} "
            f"(first: {', '.join(repr(m) for m in missing[:5])})",
            labels,
        )
    if unlabelled:
        log.warning("%s: %d DICOM images have no row in %s and are left out", root, unlabelled, labels.name)
    class_list = list(classes) if classes else sorted({r["label"] for r in rows})
    unknown = sorted({r["label"] for r in rows} - set(class_list))
    if unknown:
        raise DatasetError(f"label column {label_col!r} holds {unknown[:5]}, not among the classes {class_list}", labels)
    return build_manifest(rows, dataset=dataset or root.name, task=task, classes=class_list, root=root, group_kind="patient")
