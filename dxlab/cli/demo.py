"""``dxlab demo``: the main job on embedded defaults.

For now it builds the synthetic demo data sets (one per task that has a
generator), splits them and prints their summaries; later issues extend it
into training, serving and writing predictions into a patient's record.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from dxlab.cli.output import add_json_flag, print_json, print_table

DEMO_SETS = (("tb_cxr", 200), ("dermatology", 140), ("cancer_breast_us", 150), ("cancer_histology", 180),
             ("cancer_mammography", 120))


def register(areas) -> None:
    p = areas.add_parser("demo", help="build the synthetic demo data sets and show their summary")
    p.add_argument("--out", type=Path, help="folder for the demo data (default: DXLAB_HOME/demo)")
    p.add_argument("--seed", type=int, default=0)
    add_json_flag(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from dxlab.datasets.manifest import SYNTHETIC_MARKER
    from dxlab.datasets.synthetic import synthesize
    from dxlab.errors import DatasetError
    from dxlab.settings import get_settings

    out = args.out or get_settings().home / "demo"
    summaries = []
    for task, n in DEMO_SETS:
        folder = out / task
        if folder.exists():
            # only ever replace what an earlier demo wrote
            if not (folder / SYNTHETIC_MARKER).exists():
                raise DatasetError("exists and was not written by 'dxlab demo'; choose another --out", folder)
            shutil.rmtree(folder)
        manifest, path = synthesize(task, folder, n=n, seed=args.seed)
        summaries.append({"manifest": str(path), **manifest.summary()})
    if args.json:
        print_json(summaries)
        return 0
    print(f"SYNTHETIC demo data sets written under {out} (drawn images, no patients):\n")
    rows = []
    for s in summaries:
        splits = s["splits"]
        rows.append([s["dataset"], s["task"], s["examples"], s["groups"], ", ".join(s["classes"]),
                     splits.get("train", 0), splits.get("val", 0), splits.get("test", 0), s["version"][:19]])
    print_table(rows, ["data set", "task", "images", "groups", "classes", "train", "val", "test", "version"])
    print("\nInspect one with: dxlab data summary " + summaries[0]["manifest"])
    return 0
