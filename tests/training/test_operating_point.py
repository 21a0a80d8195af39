"""Choosing the threshold on validation: rules, their parsing, and targets that cannot be met."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_curve

from dxlab.errors import EvaluationError
from dxlab.training.operating_point import (
    VALID_RULE_FORMS,
    Constraint,
    OperatingPoint,
    OperatingRule,
    choose_operating_point,
    decide,
    parse_rule,
)

# sorted by probability: negatives at 0.1-0.3 and 0.5, positives at 0.4 and 0.6-0.8
Y = [0, 0, 0, 1, 0, 1, 1, 1]
P = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]


def test_youden_by_hand():
    op = choose_operating_point(Y, P, "youden")
    # J = 0.75 both at 0.6 (sens 3/4, spec 1) and at 0.4 (sens 1, spec 3/4): ties go to the higher threshold
    assert (op.threshold, op.sensitivity, op.specificity, op.youden_j) == (0.6, 0.75, 1.0, 0.75)
    assert op.target_met and op.note == ""
    assert (op.n_positive, op.n_negative) == (4, 4)


@pytest.mark.parametrize(
    ("rule", "threshold", "sensitivity", "specificity"),
    [
        ("sensitivity>=0.9", 0.4, 1.0, 0.75),  # all four positives needed; 0.4 is the highest that keeps them
        ("sensitivity>=0.75", 0.6, 0.75, 1.0),  # the highest threshold, not 0.5 or 0.4
        ("sensitivity>=0.5", 0.7, 0.5, 1.0),
        ("specificity>=0.8", 0.6, 0.75, 1.0),  # at 0.5 specificity is 3/4
        ("specificity>=0.7", 0.4, 1.0, 0.75),  # the lowest threshold that keeps 3 of 4 negatives below it
        ("specificity>=0.5", 0.3, 1.0, 0.5),
    ],
)
def test_target_rules_by_hand(rule, threshold, sensitivity, specificity):
    op = choose_operating_point(Y, P, rule)
    assert (op.threshold, op.sensitivity, op.specificity) == (threshold, sensitivity, specificity)
    assert op.target_met and op.rule == rule


def test_rules_agree_with_a_brute_force_search_over_sklearn_roc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.round(np.clip(0.25 * y + rng.random(500) * 0.75, 0, 1), 3)
    fpr, tpr, thr = roc_curve(y, p, drop_intermediate=False)
    fpr, tpr, thr = fpr[1:], tpr[1:], thr[1:]
    spec = 1 - fpr
    assert choose_operating_point(y, p, "sensitivity>=0.9").threshold == thr[tpr >= 0.9].max()
    assert choose_operating_point(y, p, "specificity>=0.8").threshold == thr[spec >= 0.8].min()
    j = tpr - fpr
    assert choose_operating_point(y, p, "youden").threshold == thr[j == j.max()].max()
    op = choose_operating_point(y, np.stack([1 - p, p], axis=1), "sensitivity>=0.9")
    assert op.sensitivity >= 0.9 and op.threshold == thr[tpr >= 0.9].max()


def test_an_unmeetable_pair_of_targets_is_flagged_not_hidden():
    # the WHO TPP for TB: sensitivity >= 0.9 AND specificity >= 0.7; this model cannot do both
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.15 * y + rng.random(400) * 0.85, 0, 1)
    op = choose_operating_point(y, p, "sensitivity>=0.9,specificity>=0.7")
    alone = choose_operating_point(y, p, "sensitivity>=0.9")
    assert op.threshold == alone.threshold  # the first bound picks the threshold
    assert op.sensitivity >= 0.9 and op.specificity < 0.7
    assert op.target_met is False and alone.target_met is True
    assert "specificity>=0.7 is not met" in op.note
    assert json.loads(json.dumps(op.to_dict()))["target_met"] is False


def test_a_meetable_pair_of_targets_passes():
    op = choose_operating_point(Y, P, "sensitivity>=0.9, specificity>=0.7")
    assert op.target_met and op.rule == "sensitivity>=0.9,specificity>=0.7"


def test_an_unmeetable_specificity_is_flagged_with_the_closest_threshold():
    # a negative shares the top probability, so no threshold that flags anyone reaches specificity 1
    op = choose_operating_point([0, 1, 0, 1], [0.9, 0.9, 0.1, 0.2], "specificity>=1")
    assert op.target_met is False
    assert op.threshold == 0.9 and op.specificity == 0.5
    assert "cannot be met" in op.note


def test_a_sensitivity_met_only_by_flagging_everyone_says_so():
    op = choose_operating_point([1, 0, 0, 1], [0.05, 0.5, 0.6, 0.9], "sensitivity>=0.9")
    assert op.threshold == 0.05 and op.specificity == 0.0
    assert "every case positive" in op.note


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("youden", OperatingRule("youden")),
        ("  Youden ", OperatingRule("youden")),
        ("sensitivity>=0.9", OperatingRule("constraint", Constraint("sensitivity", 0.9))),
        ("SPECIFICITY >= .8", OperatingRule("constraint", Constraint("specificity", 0.8))),
        ("sensitivity>=1", OperatingRule("constraint", Constraint("sensitivity", 1.0))),
        (
            "specificity>=0.8,sensitivity>=0.6",
            OperatingRule("constraint", Constraint("specificity", 0.8), Constraint("sensitivity", 0.6)),
        ),
    ],
)
def test_parse_rule(text, expected):
    rule = parse_rule(text)
    assert rule == expected
    assert parse_rule(str(rule)) == rule
    assert parse_rule(rule) is rule


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("youdn", "unknown operating-point rule 'youdn'"),
        ("sens>=0.9", "valid forms: 'youden', 'sensitivity>=X', 'specificity>=X'"),
        ("sensitivity>0.9", "unknown operating-point rule"),
        ("sensitivity>=0.9,specificity>=0.7,youden", "unknown operating-point rule"),
        ("sensitivity>=90", r"write 0.9, not 90"),
        ("specificity>=0", r"must be in \(0, 1\]"),
        ("sensitivity>=0.9,sensitivity>=0.8", "bounds sensitivity twice"),
        (0.9, "must be a string"),
    ],
)
def test_bad_rules_list_the_valid_forms(text, message):
    with pytest.raises(EvaluationError, match=message):
        parse_rule(text)


def test_every_listed_form_parses():
    for form in VALID_RULE_FORMS:
        parse_rule(form.replace("X", "0.9").replace("Y", "0.7"))


def test_decide_applies_the_threshold_inclusively():
    op = choose_operating_point(Y, P, "youden")
    assert isinstance(op, OperatingPoint)
    np.testing.assert_array_equal(decide([0.59, 0.6, 0.61], op), [0, 1, 1])
    np.testing.assert_array_equal(decide([0.2, 0.3], 0.25), [0, 1])
    with pytest.raises(EvaluationError):
        decide([0.2], float("inf"))


def test_choosing_needs_both_classes():
    with pytest.raises(EvaluationError, match="needs every class"):
        choose_operating_point([1, 1, 1], [0.2, 0.5, 0.9], "youden")


def test_an_inconsistent_rule_cannot_be_built():
    with pytest.raises(EvaluationError, match="inconsistent operating rule"):
        OperatingRule("constraint")
    with pytest.raises(EvaluationError, match="inconsistent operating rule"):
        OperatingRule("youden", Constraint("sensitivity", 0.9))
