"""Metrics on tiny hand-checkable cases."""
from __future__ import annotations

import numpy as np
import pytest

from batch_training.metrics import (average_precision, calibration_metrics, classification_metrics, confusion_matrix, ece_floor, roc_auc,
                                    roc_curve)


def test_roc_auc_perfect_reversed_and_ties():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert roc_auc(y, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert roc_auc(y, np.array([0.5, 0.5, 0.5, 0.5])) == 0.5


def test_roc_auc_hand_computed_and_undefined():
    # pairs (pos, neg): (0.4>0.1) (0.4<0.6) (0.8>0.1) (0.8>0.6) -> 3/4
    assert roc_auc(np.array([0, 1, 0, 1]), np.array([0.1, 0.4, 0.6, 0.8])) == pytest.approx(0.75)
    # one tie between a positive and a negative counts one half: (0.5=0.5)->0.5, (0.9>0.5)->1 => 0.75
    assert roc_auc(np.array([0, 1, 1]), np.array([0.5, 0.5, 0.9])) == pytest.approx(0.75)
    assert roc_auc(np.array([1, 1]), np.array([0.2, 0.3])) is None


def test_roc_curve_endpoints():
    fpr, tpr = roc_curve(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9]))
    assert (fpr[0], tpr[0]) == (0.0, 0.0)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert tpr[2] == 1.0 and fpr[2] == 0.0  # both positives ranked first


def test_average_precision_known_values():
    assert average_precision(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.8, 0.9])) == pytest.approx(1.0)
    # ranking: pos, neg, pos -> precision 1 at recall .5, 2/3 at recall 1 -> (1 + 2/3)/2
    assert average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7])) == pytest.approx((1 + 2 / 3) / 2)


def test_confusion_matrix_rows_true_columns_predicted():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 0]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [1, 0, 0]]


def test_classification_metrics_multiclass():
    classes = ["a", "b", "c"]
    y = [0, 0, 1, 1, 2, 2]
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.5, 0.4, 0.1], [0.1, 0.1, 0.8], [0.1, 0.2, 0.7]])
    m = classification_metrics(y, probs, classes)
    assert m["accuracy"] == pytest.approx(5 / 6)
    assert m["confusion_matrix"] == [[2, 0, 0], [1, 1, 0], [0, 0, 2]]
    assert m["per_class"]["a"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["b"]["recall"] == pytest.approx(0.5)
    assert m["per_class"]["c"]["roc_auc"] == 1.0
    assert m["recall_weighted"] == pytest.approx(m["accuracy"])  # weighted recall equals accuracy
    assert m["auc_average"] == "macro one-vs-rest"
    assert m["roc_auc"] == pytest.approx(np.mean([m["per_class"][c]["roc_auc"] for c in classes]))


def test_classification_metrics_binary_uses_positive_class_and_absent_class():
    m = classification_metrics([0, 1, 1], np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), ["neg", "pos"])
    assert m["roc_auc"] == m["per_class"]["pos"]["roc_auc"] == 1.0
    assert m["accuracy"] == pytest.approx(2 / 3)
    only_one = classification_metrics([0, 0], np.array([[0.9, 0.1], [0.4, 0.6]]), ["neg", "pos"])
    assert only_one["per_class"]["neg"]["roc_auc"] is None and only_one["per_class"]["pos"]["support"] == 0


def test_ece_floor_is_the_noise_of_a_calibrated_model_and_shrinks_with_the_rows():
    """A model right exactly as often as it claims still shows an ECE on a small set: the floor is
    that noise, it falls with more rows, and a miscalibrated model's ECE lies well above it."""
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.75, 1.0, 255)
    small, large = ece_floor(conf), ece_floor(np.tile(conf, 20))
    assert 0.01 < small < 0.06 and large < small / 3
    # a calibrated model's ECE on draws like the floor's lands near it; an overconfident one's far above
    right = rng.random(255) < conf
    probs = np.stack([conf, 1 - conf], axis=1)
    calibrated = calibration_metrics(np.where(right, 0, 1), probs)["ece"]
    overconfident = calibration_metrics(np.where(rng.random(255) < conf - 0.15, 0, 1), probs)["ece"]
    assert calibrated < 3 * small and overconfident > 0.1 > small
    assert ece_floor(np.ones(50)) == 0.0 and ece_floor(np.array([])) == 0.0
    # the metrics every report prints carry it beside the ECE
    assert calibration_metrics(np.where(right, 0, 1), probs)["ece_floor"] == pytest.approx(small, abs=1e-6)
    from batch_training.report import metrics_table

    m = classification_metrics(np.where(right, 0, 1), probs, ["a", "b"])
    assert f"(a calibrated model: {m['ece_floor']:.3f} on 255 rows)" in metrics_table(m)
