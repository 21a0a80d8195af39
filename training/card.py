"""The model card: intended use, data and version, metrics with CIs, operating
point, subgroup results and known limits, in markdown."""

from __future__ import annotations

from typing import Any

from dxlab.datasets import Manifest
from dxlab.training.config import RunConfig

INTENDED_USE = {
    "tb_cxr": "Triage of adult frontal chest X-rays for pulmonary tuberculosis, to prioritise cases for a clinician's read and confirmatory testing (WHO TPP for TB triage: sensitivity >= 90 %, specificity >= 70 %).",
    "dermatology": "Decision support for dermoscopy images of skin lesions, flagging lesions (melanoma first) for a dermatologist's review.",
    "cancer_breast_us": "Decision support for breast ultrasound, flagging images suspicious for malignancy for a radiologist's review.",
    "cancer_mammography": "Decision support for screening mammograms, flagging suspicious images for a radiologist's review.",
    "cancer_histology": "Research tool for classifying colorectal H&E tissue patches; not for diagnosis.",
    "cancer_tabular": "Research and teaching on fine-needle-aspirate features; not for diagnosis.",
    "pneumonia_cxr": "Research on paediatric chest X-rays for pneumonia; not for diagnosis.",
}


def _ci(est: dict[str, Any] | None) -> str:
    if not est or est.get("value") is None:
        return "n/a"
    ci = est.get("ci")
    if ci and ci.get("low") is not None:
        return f"{est['value']:.3f} (95 % CI {ci['low']:.3f}-{ci['high']:.3f})"
    return f"{est['value']:.3f}"


def model_card(cfg: RunConfig, manifest: Manifest, evaluation: dict[str, Any], *, temperature: float,
               verdict: dict[str, Any] | None, run_id: str | None) -> str:
    counts = manifest.summary()["split_class_counts"]
    lines = [
        f"# Model card: {cfg.registry.model_name}",
        "",
        f"*Run* `{run_id or '-'}`; config `{cfg.name}`; architecture `{cfg.model.name}`; input {cfg.image.channels} channel(s) at {cfg.image.size} px.",
        "",
    ]
    if manifest.synthetic:
        lines += ["> **SYNTHETIC DATA.** This model was trained and tested on drawn images. Its figures say nothing about clinical performance; never use it on patients.", ""]
    lines += [
        "## Intended use",
        INTENDED_USE.get(cfg.task, "Research use."),
        "Decision support only: a clinician makes the decision. Not a certified medical device.",
        "",
        "## Data",
        f"- Data set: `{manifest.dataset}`; version `{manifest.digest}`.",
        f"- Grouping: by {manifest.group_kind} (`patient_id`), so no {manifest.group_kind} is in two splits.",
        "- Examples per split and class:",
        "",
        "| split | " + " | ".join(manifest.classes) + " |",
        "|---|" + "---|" * len(manifest.classes),
    ]
    for split, by_class in counts.items():
        lines.append(f"| {split} | " + " | ".join(str(by_class[c]) for c in manifest.classes) + " |")
    lines += ["", "## Test metrics (95 % bootstrap CIs)", f"- AUROC: {_ci(evaluation.get('auroc'))}"]
    at = evaluation.get("at_operating_point")
    if at:
        for key in ("sensitivity", "specificity", "ppv", "npv", "balanced_accuracy"):
            lines.append(f"- {key.replace('_', ' ')}: {_ci(at.get(key))}")
    cls = evaluation.get("classification", {})
    lines.append(f"- accuracy: {_ci(cls.get('accuracy'))}; balanced accuracy: {_ci(cls.get('balanced_accuracy'))}")
    recall = cls.get("recall") or {}
    if recall:
        lines.append("- recall per class: " + "; ".join(f"{k} {_ci(v)}" for k, v in recall.items()))
    op = evaluation.get("operating_point", {})
    lines += ["", "## Operating point",
              f"- Rule `{op.get('rule', cfg.eval.operating_point)}`, chosen on validation; threshold {op.get('threshold', 'n/a')} on the calibrated probability.",
              f"- Calibration: temperature scaling fitted on validation, T = {temperature:.3f}."]
    if op.get("note"):
        lines.append(f"- Note: {op['note']}")
    if evaluation.get("rule_on_test"):
        lines.append(f"- On test: {evaluation['rule_on_test']}")
    subgroups = evaluation.get("subgroups") or {}
    if subgroups:
        lines += ["", "## Subgroups (test)"]
        for col, report in subgroups.items():
            lines.append(f"### {col}")
            lines.append("| group | n | AUROC | sensitivity | specificity |")
            lines.append("|---|---|---|---|---|")
            for g in report.get("groups", []):
                at = g.get("at_threshold") or {}
                lines.append(f"| {g.get('value')} | {g.get('n')} | {_ci(g.get('auroc'))} | {_ci(at.get('sensitivity'))} | {_ci(at.get('specificity'))} |")
            for s in report.get("skipped", []):
                lines.append(f"| {s.get('value')} | {s.get('n')} | skipped: {s.get('reason')} | | |")
    if verdict is not None:
        lines += ["", "## Promotion gate", f"- Passed: {'yes' if verdict['passed'] else 'no'}"]
        lines += [f"- {r}" for r in verdict["reasons"]]
    lines += [
        "",
        "## Known limits",
        "- Trained on public data from other populations; performance in Viet Nam's facilities must be checked on local data before any use.",
        "- Small test sets give wide confidence intervals; read the intervals, not the point estimates.",
        f"- Input must match the training data (modality, view, {cfg.image.channels} channel(s)); other images give meaningless outputs.",
    ]
    if manifest.group_kind == "image":
        lines.append("- The data set publishes no patient ids: images of one patient may be in two splits, which can flatter the test figures.")
    return "\n".join(lines) + "\n"
