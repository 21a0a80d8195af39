"""Metrics against values worked out by hand and against scikit-learn; bootstrap intervals."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from dxlab.errors import DxlabError, EvaluationError
from dxlab.training import metrics as m

# six cases worked by hand: positives score 0.9 and 0.4, negatives 0.7, 0.2, 0.3, 0.1
Y6 = np.array([1, 1, 0, 0, 0, 0])
P6 = np.array([0.9, 0.4, 0.7, 0.2, 0.3, 0.1])


def _binary(n=300, seed=0, signal=0.3, decimals=2):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    p = np.round(np.clip(signal * y + rng.random(n) * (1 - signal), 0, 1), decimals)  # rounding makes ties
    return y, p


def _multiclass(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    z = rng.normal(size=(n, k))
    z[np.arange(n), y] += 1.2
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return y, p


# --------------------------------------------------------------------------- by hand


def test_threshold_metrics_by_hand():
    at = m.threshold_metrics(Y6, P6, 0.5)
    # called positive: 0.9 (TP), 0.7 (FP); missed: 0.4 (FN); the rest TN
    assert (at.tp, at.fp, at.tn, at.fn) == (1, 1, 3, 1)
    assert at.sensitivity.value == pytest.approx(1 / 2)
    assert at.specificity.value == pytest.approx(3 / 4)
    assert at.ppv.value == pytest.approx(1 / 2)
    assert at.npv.value == pytest.approx(3 / 4)
    assert at.accuracy.value == pytest.approx(4 / 6)
    assert at.balanced_accuracy.value == pytest.approx((1 / 2 + 3 / 4) / 2)
    assert at.sensitivity.ci is None


def test_a_probability_equal_to_the_threshold_is_positive():
    at = m.threshold_metrics(Y6, P6, 0.4)
    assert (at.tp, at.fp, at.tn, at.fn) == (2, 1, 3, 0)
    assert at.sensitivity.value == 1.0 and at.npv.value == 1.0 and at.ppv.value == pytest.approx(2 / 3)


def test_auroc_by_hand():
    # 0.9 beats all four negatives, 0.4 beats three of them: 7 of 8 pairs
    assert m.auroc(Y6, P6).value == pytest.approx(7 / 8)
    # a tie between a positive and a negative counts one half
    assert m.auroc([1, 1, 0, 0], [0.8, 0.5, 0.5, 0.2]).value == pytest.approx(3.5 / 4)
    assert m.auroc([1, 0], [0.5, 0.5]).value == 0.5


def test_classification_metrics_by_hand():
    y = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    cls = m.classification_metrics(y, pred, class_names=["a", "b", "c"])
    assert cls.confusion_matrix == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert [cls.recall[c].value for c in "abc"] == pytest.approx([1 / 2, 1, 1 / 2])
    assert [cls.precision[c].value for c in "abc"] == pytest.approx([1 / 2, 2 / 3, 1])
    assert cls.balanced_accuracy.value == pytest.approx(2 / 3)
    assert cls.accuracy.value == pytest.approx(4 / 6)


def test_undefined_ratios_are_nan_and_serialise_as_null():
    # nobody called positive: PPV is 0/0
    at = m.threshold_metrics([1, 0, 0], [0.2, 0.1, 0.3], 0.9)
    assert np.isnan(at.ppv.value) and at.sensitivity.value == 0.0
    assert at.to_dict()["ppv"] == {"value": None}
    json.dumps(at.to_dict(), allow_nan=False)


# --------------------------------------------------------------------------- against scikit-learn


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_binary_metrics_match_sklearn(seed):
    y, p = _binary(seed=seed)
    assert m.auroc(y, p).value == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)
    assert m.average_precision(y, p).value == pytest.approx(skm.average_precision_score(y, p), abs=1e-12)
    # (n, 2) softmax rows mean the same as the positive column
    assert m.auroc(y, np.stack([1 - p, p], axis=1)).value == pytest.approx(skm.roc_auc_score(y, p), abs=1e-12)

    threshold = 0.55
    pred = (p >= threshold).astype(int)
    at = m.threshold_metrics(y, p, threshold)
    tn, fp, fn, tp = skm.confusion_matrix(y, pred).ravel()
    assert (at.tp, at.fp, at.tn, at.fn) == (tp, fp, tn, fn)
    assert at.sensitivity.value == pytest.approx(skm.recall_score(y, pred))
    assert at.specificity.value == pytest.approx(skm.recall_score(y, pred, pos_label=0))
    assert at.ppv.value == pytest.approx(skm.precision_score(y, pred))
    assert at.npv.value == pytest.approx(skm.precision_score(y, pred, pos_label=0))
    assert at.balanced_accuracy.value == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert at.accuracy.value == pytest.approx(skm.accuracy_score(y, pred))


def test_curves_match_sklearn():
    y, p = _binary(seed=3)
    fpr, tpr, thr = m.roc_curve(y, p)
    sk_fpr, sk_tpr, sk_thr = skm.roc_curve(y, p, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)
    np.testing.assert_allclose(thr, sk_thr)
    precision, recall, thresholds = m.precision_recall_curve(y, p)
    sk_precision, sk_recall, sk_thresholds = skm.precision_recall_curve(y, p)
    # scikit-learn lists them lowest threshold first, with a final (1, 0) point
    np.testing.assert_allclose(precision, sk_precision[:-1][::-1])
    np.testing.assert_allclose(recall, sk_recall[:-1][::-1])
    np.testing.assert_allclose(thresholds, sk_thresholds[::-1])


def test_multiclass_metrics_match_sklearn():
    y, p = _multiclass()
    assert m.auroc(y, p).value == pytest.approx(skm.roc_auc_score(y, p, multi_class="ovr", average="macro"), abs=1e-12)
    per_class = m.one_vs_rest_auroc(y, p)
    expected = [skm.roc_auc_score(y == c, p[:, c]) for c in range(4)]
    assert [e.value for e in per_class] == pytest.approx(expected, abs=1e-12)

    pred = p.argmax(axis=1)
    cls = m.classification_metrics(y, pred, class_names=list("abcd"))
    np.testing.assert_array_equal(cls.confusion_matrix, skm.confusion_matrix(y, pred))
    np.testing.assert_array_equal(m.confusion_matrix(y, pred), skm.confusion_matrix(y, pred))
    assert cls.balanced_accuracy.value == pytest.approx(skm.balanced_accuracy_score(y, pred))
    assert [cls.recall[c].value for c in "abcd"] == pytest.approx(skm.recall_score(y, pred, average=None))
    assert [cls.precision[c].value for c in "abcd"] == pytest.approx(skm.precision_score(y, pred, average=None))


def test_balanced_accuracy_ignores_a_class_absent_from_y_true_like_sklearn():
    y, pred = [0, 0, 1, 1], [0, 2, 1, 1]
    cls = m.classification_metrics(y, pred, n_classes=3)
    assert np.isnan(cls.recall["2"].value)
    with pytest.warns(UserWarning):  # scikit-learn warns about the absent class
        expected = skm.balanced_accuracy_score(y, pred)
    assert cls.balanced_accuracy.value == pytest.approx(expected)


def test_weighted_forms_equal_sklearn_on_the_repeated_sample():
    """The bootstrap weighs samples by draw counts: that must equal repeating them."""
    y, p = _binary(n=60, seed=4)
    counts = np.random.default_rng(5).integers(0, 4, size=(3, len(y))).astype(float)
    auc = m._weighted_auroc(counts, y == 1, p)
    ap = m._weighted_average_precision(counts, y == 1, p)
    for row, a, b in zip(counts, auc, ap):
        reps = row.astype(int)
        assert a == pytest.approx(skm.roc_auc_score(np.repeat(y, reps), np.repeat(p, reps)), abs=1e-12)
        assert b == pytest.approx(skm.average_precision_score(np.repeat(y, reps), np.repeat(p, reps)), abs=1e-12)


# --------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_contains_the_estimate_and_is_seeded():
    y, p = _binary(n=200, seed=6)
    first = m.auroc(y, p, n_bootstrap=500, seed=7)
    again = m.auroc(y, p, n_bootstrap=500, seed=7)
    other = m.auroc(y, p, n_bootstrap=500, seed=8)
    ci = first.ci
    assert ci.low < first.value < ci.high
    assert 0.02 < ci.high - ci.low < 0.2
    assert (ci.n_resamples, ci.n_used, ci.level, ci.stratified) == (500, 500, 0.95, True)
    assert first == again
    assert other.ci.low != ci.low
    assert m.auroc(y, p, n_bootstrap=500, seed=7, confidence=0.5).ci.high < ci.high


def test_threshold_and_class_metrics_carry_cis():
    y, p = _binary(n=200, seed=9)
    at = m.threshold_metrics(y, p, 0.5, n_bootstrap=300, seed=1)
    for name in m.THRESHOLD_METRICS:
        est = getattr(at, name)
        assert est.ci.low <= est.value <= est.ci.high, name
    yk, pk = _multiclass(n=200, k=3)
    cls = m.classification_metrics(yk, pk.argmax(axis=1), n_bootstrap=300)
    for est in [cls.balanced_accuracy, *cls.recall.values(), *cls.precision.values()]:
        assert est.ci.low <= est.value <= est.ci.high
    macro = m.auroc(yk, pk, n_bootstrap=300)
    assert macro.ci.low < macro.value < macro.ci.high
    json.dumps(cls.to_dict(), allow_nan=False)
    json.dumps(at.to_dict(), allow_nan=False)


def test_stratified_resamples_keep_every_class_and_plain_ones_report_skips():
    # one positive in eight: a plain resample often has none, so AUROC is undefined there
    y = np.array([1, 0, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.95])
    stratified = m.auroc(y, p, n_bootstrap=200, seed=0)
    assert stratified.ci.n_used == 200
    plain = m.auroc(y, p, n_bootstrap=200, seed=0, stratified=False)
    assert 0 < plain.ci.n_used < 200
    assert plain.ci.stratified is False
    assert plain.to_dict()["ci"]["n_used"] == plain.ci.n_used


def test_ppv_resamples_without_predicted_positives_are_skipped():
    # only one case is called positive; many stratified resamples call none
    y = np.array([1] * 5 + [0] * 5)
    p = np.array([0.9, 0.2, 0.2, 0.2, 0.2, 0.1, 0.1, 0.1, 0.1, 0.1])
    at = m.threshold_metrics(y, p, 0.5, n_bootstrap=200, seed=0)
    assert at.sensitivity.ci.n_used == 200
    assert 0 < at.ppv.ci.n_used < 200


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("y", "p", "message"),
    [
        ([0, 1, 1], [0.2, 0.8], "y_true has 3 samples but probs has 2"),
        ([1, 1, 1], [0.2, 0.8, 0.5], "AUROC needs every class"),
        ([0, 1, 1], [0.2, 1.8, 0.5], "probabilities in [0, 1]"),
        ([0, 1, 1], [-2.0, 3.1, 0.5], "logits?"),
        ([0, 1, 2], [0.2, 0.8, 0.5], "outside the valid range 0..1"),
        ([0, 1, 1], [0.2, np.nan, 0.5], "non-finite"),
        (["a", "b", "b"], [0.2, 0.8, 0.5], "integer class indices"),
        ([0, 1, 1.5], [0.2, 0.8, 0.5], "integer class indices"),
        ([], [], "empty"),
        ([0, 1], [[0.2, 0.2], [0.5, 0.5]], "sum to 1"),
        ([[0, 1]], [0.2, 0.8], "1-D"),
    ],
)
def test_bad_input_is_refused_clearly(y, p, message):
    with pytest.raises(EvaluationError, match=message.replace("[", r"\[").replace("?", r"\?")) as info:
        m.auroc(y, p)
    assert isinstance(info.value, ValueError) and isinstance(info.value, DxlabError)


def test_bad_options_are_refused():
    with pytest.raises(EvaluationError, match="n_bootstrap"):
        m.auroc(Y6, P6, n_bootstrap=-1)
    with pytest.raises(EvaluationError, match="confidence"):
        m.auroc(Y6, P6, n_bootstrap=10, confidence=95)
    with pytest.raises(EvaluationError, match="threshold"):
        m.threshold_metrics(Y6, P6, float("nan"))
    with pytest.raises(EvaluationError, match="binary"):
        m.threshold_metrics([0, 1, 2], np.eye(3), 0.5)
    with pytest.raises(EvaluationError, match="macro one-vs-rest AUROC needs every class.*\\[2\\]"):
        m.auroc([0, 1, 0], np.full((3, 3), 1 / 3))
    with pytest.raises(EvaluationError, match="2 class names given for 3 classes"):
        m.classification_metrics([0, 1, 2], [0, 1, 2], n_classes=3, class_names=["a", "b"])
    with pytest.raises(EvaluationError, match="y_pred has 2"):
        m.confusion_matrix([0, 1, 1], [0, 1])


def test_tiny_float_overshoot_of_probabilities_is_accepted():
    p = np.array([[0.3, 0.7000001], [1.0000001, 0.0]], dtype=np.float32)
    assert m.auroc([1, 0], p).value == 1.0
