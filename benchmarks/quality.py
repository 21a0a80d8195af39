"""Real-data quality benchmark: dxlab's pipelines on ../shared/data, on this machine's CPU.

Trains and evaluates, each with dxlab's shipped config and the same code path
as `dxlab train` (MLflow store in a temporary DXLAB_HOME):

- TB on `tb_shenzhen_montgomery_128` (NLM loader, patient-level split);
- melanoma vs nevus on `derm_ph2` (CSV importer, image-level groups);
- BreastMNIST on its official splits;
- breast cancer Wisconsin (scikit-learn pipeline).

Prints AUROC with its 95 % bootstrap CI, sensitivity and specificity at the
operating point chosen on validation, accuracy, minutes taken, the target and
the published reference figures (../shared/docs/TARGETS.md).

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--only tb ph2 breastmnist wisconsin] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

TASKS = {
    "tb": {
        "config": "tb_cxr.yaml",
        "target": ("auroc", 0.90),
        "reference": "plain ResNet-18 from scratch here: AUROC ~0.89; Jaeger 2014: 0.87-0.90; WHO TPP sens>=0.90 spec>=0.70",
    },
    "ph2": {
        "config": "derm_melanoma.yaml",
        "target": ("auroc", 0.90),
        "reference": "plain ResNet-18 from scratch here: AUROC ~0.93",
    },
    "breastmnist": {
        "config": "cancer_breast_us.yaml",
        "target": ("auroc", 0.90),
        "reference": "MedMNIST v2 ResNet-18 (28 px): AUROC 0.901, ACC 0.863",
    },
    "wisconsin": {
        "config": "cancer_tabular.yaml",
        "target": ("accuracy", 0.97),
        "reference": "Wisconsin diagnostic, published: 97.5 % accuracy",
    },
}


def _sources(task: str, data: Path, work: Path) -> list[str]:
    """--set overrides pointing each config at the shared sample data."""
    if task == "tb":
        return [f"data.sources=[{{dataset: nlm_tb, root: '{data / 'tb_shenzhen_montgomery_128'}'}}]"]
    if task == "ph2":
        from dxlab.datasets.importers import import_csv

        manifest = import_csv(data / "derm_ph2" / "labels.csv", task="dermatology", image_col="image", label_col="label",
                              classes=["common_nevus", "atypical_nevus", "melanoma"], dataset="ph2")
        path = manifest.save(work / "ph2.manifest.csv")
        return [f"data.sources=[{{manifest: '{path}'}}]"]
    if task == "breastmnist":
        # the MedMNIST loader writes PNGs beside the npz: work on a copy, never in shared data
        folder = work / "breastmnist"
        folder.mkdir()
        shutil.copy(data / "medmnist" / "breastmnist.npz", folder / "breastmnist.npz")
        return [f"data.sources=[{{dataset: breastmnist, root: '{folder}'}}]"]
    return []


def run_task(task: str, data: Path, work: Path, extra: list[str]) -> dict:
    from dxlab.training.config import load_config
    from dxlab.training.run import train

    spec = TASKS[task]
    cfg = load_config(ROOT / "configs" / spec["config"], _sources(task, data, work) + extra)
    start = time.perf_counter()
    result = train(cfg, checkpoint_dir=work / "checkpoints" / task)
    minutes = (time.perf_counter() - start) / 60
    m = result.test_metrics
    metric, target = spec["target"]
    value = m.get(f"test_{metric}")
    return {
        "task": task,
        "config": spec["config"],
        "n_test": result.evaluation.get("n"),
        "auroc": m.get("test_auroc"),
        "auroc_ci": [m.get("test_auroc_ci_low"), m.get("test_auroc_ci_high")],
        "operating_rule": cfg.eval.operating_point,
        "sensitivity": m.get("test_sensitivity"),
        "specificity": m.get("test_specificity"),
        "accuracy": m.get("test_accuracy"),
        "minutes": round(minutes, 2),
        "target": f"{metric} >= {target}",
        "met": value is not None and value >= target,
        "epochs": result.epochs_run,
        "gate": result.gate,
        "reference": spec["reference"],
    }


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override for every task")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    rows = []
    with tempfile.TemporaryDirectory(prefix="dxlab-quality-") as tmp:
        os.environ["DXLAB_HOME"] = tmp
        os.environ.pop("DXLAB_MLFLOW_TRACKING_URI", None)
        for task in args.only:
            print(f"training {task} ...", file=sys.stderr, flush=True)
            rows.append(run_task(task, args.data, Path(tmp), args.overrides))
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ["task", "AUROC (95 % CI)", "rule", "sens", "spec", "acc", "min", "target", "met", "reference"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        ci = r["auroc_ci"]
        print(" | ".join([r["task"], f"{_f(r['auroc'])} ({_f(ci[0])}-{_f(ci[1])})", r["operating_rule"], _f(r["sensitivity"]),
                          _f(r["specificity"]), _f(r["accuracy"]), f"{r['minutes']:.1f}", r["target"],
                          "yes" if r["met"] else "NO", r["reference"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
