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

For TB and PH2, TARGETS.md also names a plain baseline that dxlab's pipeline
must beat on the same data: a torchvision ResNet-18 trained from scratch with
a plain PyTorch loop, on all the data that is not test (dxlab's train plus
validation splits: 80 % for TB, 75 % for PH2), 20 epochs, light affine
augmentation. The benchmark
trains it on dxlab's own split, with its own image loading (Pillow and
torchvision, not dxlab's), and reports its test AUROC beside dxlab's.

Trained from scratch on a few hundred images, a model's test AUROC moves by
several hundredths with the seed alone, so every task runs once per
``--seeds`` seed (``train.seed``; the split's seed stays fixed), the plain
baseline too: the table gives the first seed's run in full, the mean and
range over the seeds, and judges the target and the baseline on the means.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data] [--only tb ph2 breastmnist wisconsin]
        [--seeds 0 1 2] [--no-baseline] [--json]
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
        "baseline": True,
    },
    "ph2": {
        "config": "derm_melanoma.yaml",
        "target": ("auroc", 0.90),
        "reference": "plain ResNet-18 from scratch here: AUROC ~0.93",
        "baseline": True,
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


def plain_baseline(manifest, channels: int, size: int, seed: int, epochs: int = 20, batch_size: int = 32) -> float:
    """TARGETS.md's plain baseline on ``manifest``'s split; returns its test AUROC.

    torchvision ResNet-18 from scratch (first convolution for ``channels``), Adam
    1e-3, cross-entropy, ``epochs`` epochs over train + validation with light
    affine augmentation (5 degrees, 5 % shift, 5 % zoom); images read with
    Pillow, resized to ``size`` and scaled to [-1, 1]. Nothing of dxlab's
    training, preprocessing or models is used: only the split.
    """
    import numpy as np
    import torch
    import torchvision
    from PIL import Image
    from sklearn.metrics import roc_auc_score
    from torchvision.transforms import v2

    mode = "L" if channels == 1 else "RGB"

    def load(split_names: tuple[str, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        rows = manifest.table[manifest.table["split"].isin(split_names)]
        images = []
        for path in rows["path"]:
            with Image.open(manifest.resolve(path)) as img:
                images.append(v2.functional.to_image(img.convert(mode).resize((size, size), Image.BILINEAR)))
        x = torch.stack(images).float() / 127.5 - 1.0
        y = torch.tensor([manifest.classes.index(label) for label in rows["label"]])
        return x, y

    x_train, y_train = load(("train", "val"))
    x_test, y_test = load(("test",))
    torch.manual_seed(seed)
    net = torchvision.models.resnet18(weights=None, num_classes=len(manifest.classes))
    if channels != 3:
        net.conv1 = torch.nn.Conv2d(channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    augment = v2.RandomAffine(degrees=5, translate=(0.05, 0.05), scale=(0.95, 1.05))
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    for _ in range(epochs):
        net.train()
        order = torch.randperm(len(y_train))
        for start in range(0, len(order), batch_size):
            idx = order[start:start + batch_size]
            batch = torch.stack([augment(x) for x in x_train[idx]])
            loss = torch.nn.functional.cross_entropy(net(batch), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    net.eval()
    with torch.no_grad():
        scores = torch.cat([net(x_test[i:i + 64]).softmax(1)[:, 1] for i in range(0, len(x_test), 64)])
    return float(roc_auc_score(np.asarray(y_test), scores.numpy()))


def run_baseline(task: str, sources: list[str], seeds: list[int]) -> dict:
    """The plain baseline on the split dxlab's config makes (see :func:`plain_baseline`)."""
    from dxlab.training.config import load_config
    from dxlab.training.data import build_run_manifest

    cfg = load_config(ROOT / "configs" / TASKS[task]["config"], sources)
    manifest = build_run_manifest(cfg.task, cfg.data)
    start = time.perf_counter()
    aurocs = [plain_baseline(manifest, cfg.image.channels, cfg.image.size, seed) for seed in seeds]
    return {"seeds": seeds, "aurocs": [round(a, 4) for a in aurocs], "mean": _mean(aurocs),
            "minutes": round((time.perf_counter() - start) / 60, 2)}


def run_task(task: str, work: Path, overrides: list[str]) -> dict:
    from dxlab.training.config import load_config
    from dxlab.training.run import train

    spec = TASKS[task]
    cfg = load_config(ROOT / "configs" / spec["config"], overrides)
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
        "value": value,
        "epochs": result.epochs_run,
        "gate": result.gate,
        "reference": spec["reference"],
    }


def summarize(task: str, runs: list[dict], seeds: list[int]) -> dict:
    """One row: the first seed's run in full, the target metric and AUROC of every seed, met on their mean."""
    metric, target = TASKS[task]["target"]
    values = [r.pop("value") for r in runs]
    aurocs = [r["auroc"] for r in runs]
    row = {**runs[0], "seeds": seeds, "auroc_by_seed": aurocs, f"{metric}_by_seed": values,
           "minutes": round(sum(r["minutes"] for r in runs) / len(runs), 2)}
    row["auroc_mean"] = _mean(aurocs)
    row[f"{metric}_mean"] = _mean(values)
    row["met"] = row[f"{metric}_mean"] is not None and row[f"{metric}_mean"] >= target
    return row


def _mean(values: list[float | None]) -> float | None:
    return None if None in values else sum(values) / len(values)


def _spread(values: list[float | None]) -> str:
    if None in values:
        return "-"
    return f"{_mean(values):.3f} ({min(values):.3f}-{max(values):.3f})"


def _f(x) -> str:
    return "-" if x is None else f"{x:.3f}"


def run_all(args: argparse.Namespace) -> list[dict]:
    """Every task of ``args.only``, each seed, and the plain baselines, in a temporary MLflow store."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="dxlab-quality-") as tmp:
        os.environ["DXLAB_HOME"] = tmp
        os.environ.pop("DXLAB_MLFLOW_TRACKING_URI", None)
        for task in args.only:
            sources = _sources(task, args.data, Path(tmp))  # once: every seed's run and the baseline share them
            runs = []
            for seed in args.seeds:
                print(f"training {task} (seed {seed}) ...", file=sys.stderr, flush=True)
                runs.append(run_task(task, Path(tmp), sources + args.overrides + [f"train.seed={seed}"]))
            row = summarize(task, runs, args.seeds)
            if args.baseline and TASKS[task].get("baseline"):
                print(f"plain baseline for {task} ...", file=sys.stderr, flush=True)
                row["plain_baseline"] = run_baseline(task, sources, args.seeds)
                row["beats_baseline"] = row["auroc_mean"] is not None and row["auroc_mean"] > row["plain_baseline"]["mean"]
            rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--only", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="extra config override for every task")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="train.seed of each run (the split stays fixed), for dxlab and the plain baseline alike: "
                             "from scratch, test AUROC moves with the seed")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false", help="skip the plain baseline")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    if not args.data.is_dir():
        print(f"shared data not found at {args.data}; pass --data", file=sys.stderr)
        return 2
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from dxlab.errors import DxlabError

    try:
        rows = run_all(args)
    except DxlabError as exc:  # a bad --set, missing data or weights: the message says what and where
        print(f"quality benchmark stopped: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = [f"task (seeds {' '.join(map(str, args.seeds))})", f"AUROC, seed {args.seeds[0]} (95 % CI)",
              "AUROC mean (range)", "rule", "sens", "spec", "acc", "min per run", "target (on the mean)", "met",
              "plain baseline AUROC, same split", "beats it", "reference"]
    print(" | ".join(header))
    print(" | ".join("---" for _ in header))
    for r in rows:
        ci = r["auroc_ci"]
        print(" | ".join([r["task"], f"{_f(r['auroc'])} ({_f(ci[0])}-{_f(ci[1])})", _spread(r["auroc_by_seed"]),
                          r["operating_rule"], _f(r["sensitivity"]),
                          _f(r["specificity"]), _f(r["accuracy"]), f"{r['minutes']:.1f}", r["target"],
                          "yes" if r["met"] else "NO", _spread(r["plain_baseline"]["aurocs"]) if "plain_baseline" in r else "-",
                          {True: "yes", False: "NO", None: "-"}[r.get("beats_baseline")], r["reference"]]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
