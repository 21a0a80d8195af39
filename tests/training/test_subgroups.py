"""Subgroup metrics: each group's numbers are the metrics of its rows; small or one-class groups are skipped with a reason."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dxlab.errors import EvaluationError
from dxlab.training.metrics import auroc, classification_metrics, threshold_metrics
from dxlab.training.subgroups import MISSING, OUT_OF_RANGE, band_labels, subgroup_metrics


def _data(n=240, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.clip(0.3 * y + rng.random(n) * 0.7, 0, 1)
    meta = pd.DataFrame({
        "sex": rng.choice(["F", "M"], n),
        "age": rng.uniform(1, 95, n),
        "site": np.where(np.arange(n) < 5, "tiny", "shenzhen"),
    })
    meta.loc[meta.index[-20:], "site"] = "all_negative"
    y[-20:] = 0
    return y, p, meta


def test_each_group_holds_the_metrics_of_its_rows():
    y, p, meta = _data()
    reports = subgroup_metrics(y, p, meta, ["sex"], threshold=0.5, class_names=["normal", "tb"])
    sex = reports["sex"]
    assert [g.value for g in sex.groups] == ["F", "M"] and sex.skipped == []
    for group in sex.groups:
        rows = (meta["sex"] == group.value).to_numpy()
        assert group.n == rows.sum()
        assert group.n_by_class == {"normal": int((y[rows] == 0).sum()), "tb": int((y[rows] == 1).sum())}
        assert group.auroc.value == auroc(y[rows], p[rows]).value
        assert group.at_threshold == threshold_metrics(y[rows], p[rows], 0.5)
        assert group.classification is None


def test_small_and_single_class_groups_are_skipped_with_a_reason():
    y, p, meta = _data()
    site = subgroup_metrics(y, p, meta, ["site"], min_size=10)["site"]
    assert [g.value for g in site.groups] == ["shenzhen"]
    reasons = {s.value: s.reason for s in site.skipped}
    assert reasons["tiny"] == "5 cases, fewer than min_size=10"
    assert "only one class" in reasons["all_negative"] and "(0)" in reasons["all_negative"]
    assert {s.value: s.n for s in site.skipped} == {"all_negative": 20, "tiny": 5}


def test_age_is_banded_by_default_and_bands_are_configurable():
    y, p, meta = _data()
    age = subgroup_metrics(y, p, meta, ["age"])["age"]
    assert age.bands == [0, 18, 40, 60, 200]
    assert [g.value for g in age.groups] == ["[0,18)", "[18,40)", "[40,60)", "[60,200)"]
    assert sum(g.n for g in age.groups) + sum(s.n for s in age.skipped) == len(y)
    custom = subgroup_metrics(y, p, meta, ["age"], bands={"age": [0, 50, 120]})["age"]
    assert [g.value for g in custom.groups] == ["[0,50)", "[50,120)"]


def test_band_labels_mark_missing_and_out_of_range_values():
    labels = band_labels([0, 17.9, 18, 59.5, 60, 200, -1, np.nan, None], [0, 18, 60, 200])
    assert labels.tolist() == ["[0,18)", "[0,18)", "[18,60)", "[18,60)", "[60,200)", OUT_OF_RANGE, OUT_OF_RANGE, MISSING, MISSING]
    with pytest.raises(EvaluationError, match="increasing"):
        band_labels([1], [10, 5])


def test_missing_values_form_their_own_group():
    y, p, meta = _data()
    meta["sex"] = meta["sex"].astype(object)
    meta.loc[meta.index[:60], "sex"] = None
    values = [g.value for g in subgroup_metrics(y, p, meta, ["sex"])["sex"].groups]
    assert MISSING in values


def test_multiclass_groups_get_class_metrics_and_a_note_when_a_class_is_absent():
    rng = np.random.default_rng(2)
    n = 120
    y = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 3))
    z[np.arange(n), y] += 1.0
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    group = np.where(np.arange(n) < 60, "a", "b")
    y[(group == "b") & (y == 2)] = 1  # group b has no class 2
    report = subgroup_metrics(y, p, {"site": group}, ["site"], class_names=["x", "y", "z"])["site"]
    a, b = report.groups
    assert a.auroc.value == auroc(y[:60], p[:60]).value and a.note == ""
    assert a.classification == classification_metrics(y[:60], p[:60].argmax(axis=1), class_names=["x", "y", "z"])
    assert b.auroc is None and "['z'] absent" in b.note
    assert b.at_threshold is None
    json.dumps({k: r.to_dict() for k, r in {"site": report}.items()}, allow_nan=False)


def test_bootstrap_cis_in_groups():
    y, p, meta = _data()
    sex = subgroup_metrics(y, p, meta, ["sex"], threshold=0.5, n_bootstrap=100, seed=3)["sex"]
    for g in sex.groups:
        assert g.auroc.ci.n_used == 100 and g.at_threshold.sensitivity.ci is not None
    json.dumps(sex.to_dict(), allow_nan=False)


def test_bad_subgroup_requests_are_refused():
    y, p, meta = _data()
    with pytest.raises(EvaluationError, match=r"'ethnicity' is not in the metadata; available columns: \['age', 'sex', 'site'\]"):
        subgroup_metrics(y, p, meta, ["ethnicity"])
    with pytest.raises(EvaluationError, match="metadata has 10 rows but there are 240"):
        subgroup_metrics(y, p, meta.head(10), ["sex"])
    with pytest.raises(EvaluationError, match="give bands"):
        subgroup_metrics(y, p, meta.rename(columns={"age": "weight"}), ["weight"])
    with pytest.raises(EvaluationError, match="bands given for"):
        subgroup_metrics(y, p, meta, ["sex"], bands={"age": [0, 50, 100]})
    with pytest.raises(EvaluationError, match="min_size"):
        subgroup_metrics(y, p, meta, ["sex"], min_size=1)
