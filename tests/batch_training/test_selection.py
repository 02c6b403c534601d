"""Grouped split, grouped folds and the CV choices (numpy/scikit-learn, no Spark)."""
from __future__ import annotations

import numpy as np
import pytest

from batch_training import selection as sel


def _grouped_data(seed=0, groups=60, per_group=(1, 4)):
    rng = np.random.default_rng(seed)
    g, y = [], []
    for i in range(groups):
        size = int(rng.integers(*per_group))
        g += [i] * size
        y += [i % 2] * size
    return np.array(g), np.array(y)


def test_grouped_split_never_separates_a_group_and_keeps_classes():
    groups, y = _grouped_data()
    test = sel.grouped_split(groups, y, 0.2, seed=3)
    for g in np.unique(groups):
        assert len(set(test[groups == g])) == 1, f"group {g} straddles the split"
    for cls in (0, 1):
        share = test[y == cls].mean()
        assert 0.1 <= share <= 0.3
    assert not np.array_equal(test, sel.grouped_split(groups, y, 0.2, seed=4))  # the seed matters
    assert np.array_equal(test, sel.grouped_split(groups, y, 0.2, seed=3))  # and is repeatable


def test_grouped_folds_keep_groups_whole():
    groups, y = _grouped_data(1)
    folds = sel.grouped_folds(groups, y, 5, seed=0)
    assert set(folds) == set(range(5))
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1


def test_image_cv_picks_a_working_config_and_reports_every_fold():
    rng = np.random.default_rng(2)
    y = np.repeat([0, 1, 2], 40)
    x = rng.normal(size=(120, 30)) + np.eye(3)[y] @ rng.normal(size=(3, 30)) * 2.5
    folds = np.arange(120) % 4
    cv = sel.image_cv(x, y, folds, 3, pca_ks=(2, 10), reg_params=(0.01, 10.0))
    assert cv.reg_param == 0.01  # a crushing penalty cannot win
    assert len(cv.fold_accuracy) == 4 and np.mean(cv.fold_accuracy) > 0.9
    assert cv.oof_probs.shape == (120, 3) and np.allclose(cv.oof_probs.sum(axis=1), 1.0)


def test_cascade_cv_prefers_fewer_ocr_calls_at_equal_accuracy():
    rng = np.random.default_rng(3)
    n = 200
    y = rng.integers(0, 2, n)
    # image branch: confident and right on half, unsure (coin flip) on the rest
    sure = np.arange(n) < n // 2
    p1 = np.where(sure, np.where(y == 1, 0.995, 0.005), rng.uniform(0.4, 0.6, n))
    image = np.stack([1 - p1, p1], axis=1)
    # text branch: right wherever there is text
    text_logp = np.log(np.where(np.eye(2)[y] > 0, 0.9, 0.1))
    has = np.ones(n, dtype=bool)
    folds = np.arange(n) % 5
    out = sel.cascade_cv(image, text_logp, has, y, folds, cascades=(1.01, 0.99, 0.52))
    by = {r["cascade"]: r for r in out.table}
    assert by[1.01]["ocr_share"] == 1.0 and by[0.99]["ocr_share"] == pytest.approx(0.5)
    assert by[0.99]["accuracy"] >= by[1.01]["accuracy"] - 0.003
    assert out.cascade == 0.99  # same accuracy as always-OCR, half the OCR calls
    assert by[0.52]["accuracy"] < by[0.99]["accuracy"]  # too few OCR calls loses the unsure half
    # an OCR budget below 50 % rules out the more accurate 0.99: the cheaper threshold is chosen
    capped = sel.cascade_cv(image, text_logp, has, y, folds, cascades=(1.01, 0.99, 0.52), ocr_budget=0.3)
    assert capped.cascade == 0.52 and capped.oof_probs is not None
    # a budget nothing fits falls back to the cheapest threshold rather than failing
    assert sel.cascade_cv(image, text_logp, has, y, folds, cascades=(1.01, 0.99), ocr_budget=0.1).cascade == 0.99


def test_fold_summary():
    s = sel.fold_summary([0.9, 0.8, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["folds"] == [0.9, 0.8, 1.0]
