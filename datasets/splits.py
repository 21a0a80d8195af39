"""Deterministic, stratified, grouped train/val/test splits.

Groups (patients, lesions or slides: the manifest's ``patient_id``) are the
unit that is split, so one group never lands in two splits. Groups are
stratified by their label (a group with several labels counts under its most
frequent one), shuffled with a seeded generator, and cut by the requested
fractions within each stratum, so class proportions are kept in every split.

Official splits are kept: rows that already have a split keep it. When a set
has an official train/test split but no validation split, the validation split
is carved out of the official training groups.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dxlab.datasets.manifest import SPLITS, Manifest
from dxlab.errors import DatasetError

DEFAULT_FRACTIONS = {"train": 0.7, "val": 0.15, "test": 0.15}


def split_manifest(
    manifest: Manifest,
    *,
    val: float = DEFAULT_FRACTIONS["val"],
    test: float = DEFAULT_FRACTIONS["test"],
    seed: int = 0,
    keep_official: bool = True,
) -> Manifest:
    """Return a copy of ``manifest`` whose every row has a split."""
    for name, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise DatasetError(f"{name} fraction {frac} is out of range; expected 0 <= fraction < 1")
    if val + test >= 1.0:
        raise DatasetError(f"val + test fractions ({val} + {test}) leave nothing to train on; expected a sum below 1")
    table = manifest.table.copy()
    if not keep_official:
        table["split"] = ""
    _check_official_groups(table)

    rng = np.random.default_rng(seed)
    official = set(table["split"]) - {""}
    unsplit = table["split"] == ""
    if unsplit.any():
        fractions = {"train": 1.0 - val - test, "val": val, "test": test}
        if "test" in official:
            # the set fixes its test split: cut only train/val from the rest
            fractions = {"train": 1.0 - val, "val": val, "test": 0.0}
        assignment = _assign(table[unsplit], fractions, rng)
        table.loc[unsplit, "split"] = table.loc[unsplit, "patient_id"].map(assignment)
    if "val" not in set(table["split"]) and val > 0 and "train" in official:
        train = table["split"] == "train"
        assignment = _assign(table[train], {"train": 1.0 - val, "val": val, "test": 0.0}, rng)
        table.loc[train, "split"] = table.loc[train, "patient_id"].map(assignment)
    return manifest.with_table(table)


def _check_official_groups(table: pd.DataFrame) -> None:
    """A group must not already straddle splits, nor be half split and half not."""
    per_group = table.groupby("patient_id")["split"].nunique()
    leaking = per_group[per_group > 1]
    if len(leaking):
        raise DatasetError(
            f"group {leaking.index[0]!r} already appears in more than one split "
            f"({sorted(set(table.loc[table['patient_id'] == leaking.index[0], 'split']))}); "
            "rebuild the manifest with keep_official=False or fix its group ids"
        )


def _assign(table: pd.DataFrame, fractions: dict[str, float], rng: np.random.Generator) -> dict[str, str]:
    """Map each group id to a split, stratified by the group's main label."""
    group_label = table.groupby("patient_id")["label"].agg(lambda s: s.value_counts().index[0])
    assignment: dict[str, str] = {}
    # sorted keys: the result depends on the seed only, not on row order
    for _, groups in sorted(group_label.groupby(group_label), key=lambda kv: kv[0]):
        ids = np.array(sorted(groups.index))
        rng.shuffle(ids)
        counts = _counts(len(ids), fractions)
        start = 0
        for split in SPLITS:
            for gid in ids[start:start + counts[split]]:
                assignment[gid] = split
            start += counts[split]
    return assignment


def _counts(n: int, fractions: dict[str, float]) -> dict[str, int]:
    """Largest-remainder rounding of n groups into the splits."""
    raw = {s: n * fractions[s] for s in SPLITS}
    counts = {s: int(np.floor(raw[s])) for s in SPLITS}
    for s in sorted(SPLITS, key=lambda s: raw[s] - counts[s], reverse=True)[: n - sum(counts.values())]:
        counts[s] += 1
    # a non-empty stratum gives at least one group to every split asked for, when it can
    for s in ("test", "val"):
        if fractions[s] > 0 and counts[s] == 0 and counts["train"] > 1:
            counts[s], counts["train"] = 1, counts["train"] - 1
    return counts
