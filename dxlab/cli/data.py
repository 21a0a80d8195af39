"""``dxlab data ...``: list, describe, import, fetch, synthesise and split data sets."""

from __future__ import annotations

import argparse
from pathlib import Path

from dxlab.cli.output import add_json_flag, print_json, print_mapping, print_table


def register(areas) -> None:
    data = areas.add_parser("data", help="data sets: list, import, fetch, synthesise, split")
    cmds = data.add_subparsers(dest="command", metavar="SUBCOMMAND", required=True)

    p = cmds.add_parser("list", help="list the registered public data sets")
    p.add_argument("--task", help="only data sets of this task")
    add_json_flag(p)
    p.set_defaults(func=cmd_list)

    p = cmds.add_parser("info", help="describe one registered data set")
    p.add_argument("name")
    add_json_flag(p)
    p.set_defaults(func=cmd_info)

    p = cmds.add_parser(
        "import",
        help="build a manifest from files on disk",
        description="Build a manifest from a registered data set's official layout (NAME is its registry name), "
        "or from your own data: NAME 'folder' (PATH has one sub-folder per class), 'csv' (PATH is a CSV file) or "
        "'dicom' (PATH is a folder of DICOM files, labelled by --labels; patient ids become keyed pseudonyms).",
    )
    p.add_argument("name", metavar="NAME", help="registry name, or 'folder', 'csv' or 'dicom'")
    p.add_argument("path", type=Path, metavar="PATH")
    p.add_argument("--out", type=Path, required=True, metavar="MANIFEST", help="manifest file to write")
    own = p.add_argument_group("your own data ('folder', 'csv' and 'dicom')")
    own.add_argument("--task", help="task the data is for (e.g. tb_cxr, dermatology)")
    own.add_argument("--dataset", help="data set name to record (default: the folder or CSV name)")
    own.add_argument("--image-col", default="path", help="CSV column with image paths (default: path)")
    own.add_argument("--label-col", default="label", help="CSV column with labels (default: label)")
    own.add_argument("--patient-col", help="CSV column with patient/lesion/slide ids (default: each image its own group)")
    own.add_argument("--split-col", help="CSV column with an official split (train/val/test)")
    own.add_argument("--meta-col", action="append", default=[], metavar="COL", help="CSV metadata column to keep (repeatable)")
    own.add_argument("--classes", help="comma-separated class order (default: sorted labels)")
    own.add_argument("--root", type=Path, help="folder image paths are relative to (default: the CSV's folder)")
    own.add_argument("--labels", type=Path, metavar="CSV", help="'dicom': CSV of labels, keyed by --key-col")
    own.add_argument("--key-col", default="file", choices=("file", "SOPInstanceUID", "StudyInstanceUID"),
                     help="'dicom': what the labels CSV is keyed by, and its column name (default: file, a path relative to PATH)")
    own.add_argument("--key-file", type=Path, metavar="FILE",
                     help="'dicom': de-identification key for the patient pseudonyms (default: DXLAB_DEID_KEY_FILE)")
    _add_split_args(p, optional=True)
    add_json_flag(p)
    p.set_defaults(func=cmd_import)

    p = cmds.add_parser("fetch", help="download a data set from its official source (checksums verified)")
    p.add_argument("name")
    p.add_argument("--dest", type=Path, help="folder to download into (default: DXLAB_DATA_ROOT/NAME)")
    add_json_flag(p)
    p.set_defaults(func=cmd_fetch)

    p = cmds.add_parser("synth", help="write a synthetic data set for tests, teaching and the demo",
                        formatter_class=_SynthHelpFormatter)
    p.add_argument("task", help="a task with a synthetic generator")  # the formatter lists them
    p.add_argument("--n", type=int, default=200, help="number of images (default: 200)")
    p.add_argument("--out", type=Path, required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--size", type=int, help="image side in pixels (default: per task)")
    add_json_flag(p)
    p.set_defaults(func=cmd_synth)

    p = cmds.add_parser("split", help="assign train/val/test splits, grouped by patient and stratified by label")
    p.add_argument("manifest", type=Path, metavar="MANIFEST")
    p.add_argument("--out", type=Path, required=True, metavar="MANIFEST")
    _add_split_args(p, optional=False)
    add_json_flag(p)
    p.set_defaults(func=cmd_split)

    p = cmds.add_parser("summary", help="summarise a manifest: counts per split and class, version")
    p.add_argument("manifest", type=Path, metavar="MANIFEST")
    add_json_flag(p)
    p.set_defaults(func=cmd_summary)


def _add_split_args(p: argparse.ArgumentParser, *, optional: bool) -> None:
    g = p.add_argument_group("splitting")
    if optional:
        g.add_argument("--split", action="store_true", help="also assign splits (as 'dxlab data split' does)")
    g.add_argument("--val", type=float, default=0.15, help="validation fraction of groups (default: 0.15)")
    g.add_argument("--test", type=float, default=0.15, help="test fraction of groups (default: 0.15)")
    g.add_argument("--seed", type=int, default=0, help="split seed (default: 0)")
    g.add_argument("--ignore-official", action="store_true", help="re-split sets that come with an official split")


def _split(manifest, args):
    from dxlab.datasets.splits import split_manifest

    return split_manifest(manifest, val=args.val, test=args.test, seed=args.seed, keep_official=not args.ignore_official)


def _show_summary(manifest, path: Path | None, as_json: bool) -> None:
    summary = manifest.summary()
    if path is not None:
        summary = {"manifest": str(path), **summary}
    if as_json:
        print_json(summary)
        return
    title = f"{manifest.dataset} ({manifest.task})" + ("  [SYNTHETIC]" if manifest.synthetic else "")
    print(title)
    print_mapping({k: v for k, v in summary.items() if k not in ("dataset", "task", "split_class_counts")})
    splits = summary["split_class_counts"]
    rows = [[s, *(counts[c] for c in manifest.classes), sum(counts.values())] for s, counts in splits.items()]
    print()
    print_table(rows, ["split", *manifest.classes, "total"])


def _class_list(text: str | None) -> list[str] | None:
    return [c.strip() for c in text.split(",")] if text else None


def cmd_list(args) -> int:
    from dxlab.datasets import list_datasets

    specs = list_datasets(task=args.task)
    if args.json:
        print_json([s.describe() for s in specs])
    else:
        print_table([[s.name, s.task, s.access, len(s.classes), s.licence[:40]] for s in specs],
                    ["name", "task", "access", "classes", "licence"])
    return 0


def cmd_info(args) -> int:
    from dxlab.datasets import get_dataset

    info = get_dataset(args.name).describe()
    if args.json:
        print_json(info)
    else:
        print_mapping(info)
    return 0


def cmd_import(args) -> int:
    from dxlab.datasets import get_dataset
    from dxlab.datasets.importers import import_csv, import_dicom, import_folder
    from dxlab.errors import DatasetError

    own = args.name in ("folder", "csv", "dicom")
    if own and not args.task:
        raise DatasetError(f"'dxlab data import {args.name}' needs --task (the task the data is for)")
    if args.name == "dicom" and not args.labels:
        raise DatasetError("'dxlab data import dicom' needs --labels (a CSV of labels keyed by --key-col)")
    if args.name == "folder":
        manifest = import_folder(args.path, task=args.task, dataset=args.dataset)
    elif args.name == "dicom":
        manifest = import_dicom(
            args.path,
            labels=args.labels,
            task=args.task,
            key_col=args.key_col,
            label_col=args.label_col,
            classes=_class_list(args.classes),
            dataset=args.dataset,
            key_file=args.key_file,
        )
    elif args.name == "csv":
        manifest = import_csv(
            args.path,
            task=args.task,
            image_col=args.image_col,
            label_col=args.label_col,
            patient_col=args.patient_col,
            split_col=args.split_col,
            metadata_cols=args.meta_col,
            classes=_class_list(args.classes),
            root=args.root,
            dataset=args.dataset,
        )
    else:
        manifest = get_dataset(args.name).load(args.path)
    if args.split:
        manifest = _split(manifest, args)
    manifest.save(args.out)
    _show_summary(manifest, args.out, args.json)
    return 0


def cmd_fetch(args) -> int:
    from dxlab.datasets.download import fetch

    manifest, folder = fetch(args.name, args.dest)
    _show_summary(manifest, folder / "manifest.csv", args.json)
    return 0


class _SynthHelpFormatter(argparse.HelpFormatter):
    """Lists the synthetic generators in ``synth --help`` only when it is shown, so building the parser stays light."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.dest == "task":
            from dxlab.datasets.synthetic import GENERATORS

            return f"one of {', '.join(GENERATORS)}"
        return super()._get_help_string(action)


def cmd_synth(args) -> int:
    from dxlab.datasets.synthetic import synthesize

    manifest, path = synthesize(args.task, args.out, n=args.n, seed=args.seed, size=args.size)
    _show_summary(manifest, path, args.json)
    return 0


def cmd_split(args) -> int:
    from dxlab.datasets.manifest import Manifest

    manifest = _split(Manifest.load(args.manifest), args)
    manifest.save(args.out)
    _show_summary(manifest, args.out, args.json)
    return 0


def cmd_summary(args) -> int:
    from dxlab.datasets.manifest import Manifest

    _show_summary(Manifest.load(args.manifest), args.manifest, args.json)
    return 0
