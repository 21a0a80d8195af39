import numpy as np
import pandas as pd
import pytest

from dxlab.datasets.manifest import Manifest
from dxlab.datasets.splits import split_manifest
from dxlab.errors import DatasetError


def _manifest(n_patients=200, images_per_patient=3, positive_rate=0.3, split=None):
    rng = np.random.default_rng(1)
    rows = []
    for p in range(n_patients):
        label = "tb" if rng.random() < positive_rate else "normal"
        for k in range(rng.integers(1, images_per_patient + 1)):
            rows.append({"path": f"p{p}_{k}.png", "label": label, "patient_id": f"P{p:04d}",
                         "split": "" if split is None else split(p), "sha256": f"{p}-{k}"})
    return Manifest(table=pd.DataFrame(rows), dataset="toy", task="tb_cxr", classes=("normal", "tb"))


def test_no_patient_in_two_splits_and_proportions_kept():
    m = split_manifest(_manifest(), seed=3)
    t = m.table
    assert set(t["split"]) == {"train", "val", "test"}
    assert (t.groupby("patient_id")["split"].nunique() == 1).all()
    groups = t.drop_duplicates("patient_id")
    overall = (groups["label"] == "tb").mean()
    for split, frac in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
        part = groups[groups["split"] == split]
        assert abs(len(part) / len(groups) - frac) < 0.02
        assert abs((part["label"] == "tb").mean() - overall) < 0.03


def test_same_seed_same_split_other_seed_other_split():
    base = _manifest()
    a, b = split_manifest(base, seed=7), split_manifest(base, seed=7)
    assert a.table["split"].tolist() == b.table["split"].tolist()
    assert a.digest == b.digest
    shuffled = base.with_table(base.table.sample(frac=1.0, random_state=0))
    c = split_manifest(shuffled, seed=7).table.set_index("path")["split"]
    assert c.loc[a.table["path"]].tolist() == a.table["split"].tolist(), "row order must not matter"
    assert split_manifest(base, seed=8).table["split"].tolist() != a.table["split"].tolist()


def test_official_test_split_is_kept_and_val_carved_from_train():
    official = _manifest(split=lambda p: "test" if p % 5 == 0 else "train")
    m = split_manifest(official, val=0.2, seed=0)
    t = m.table
    before = official.table.set_index("path")["split"]
    after = t.set_index("path")["split"]
    assert (after[before == "test"] == "test").all()
    assert set(after[before == "train"]) == {"train", "val"}
    assert (t.groupby("patient_id")["split"].nunique() == 1).all()
    assert split_manifest(official, keep_official=False, seed=0).table["split"].tolist() != t["split"].tolist()


def test_bad_fractions_and_leaking_official_groups():
    with pytest.raises(DatasetError, match="leave nothing to train on"):
        split_manifest(_manifest(), val=0.5, test=0.5)
    with pytest.raises(DatasetError, match="out of range"):
        split_manifest(_manifest(), val=-0.1)
    leaking = _manifest(images_per_patient=3)
    t = leaking.table.copy()
    multi = t["patient_id"].value_counts().index[0]
    idx = t.index[t["patient_id"] == multi]
    t.loc[idx, "split"] = ["train"] + ["test"] * (len(idx) - 1)
    with pytest.raises(DatasetError, match="already appears in more than one split"):
        split_manifest(leaking.with_table(t))
