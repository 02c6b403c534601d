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


def test_neighbour_cv_scores_each_row_from_the_other_folds_only():
    rng = np.random.default_rng(5)
    y = np.repeat([0, 1], 30)
    x = rng.normal(0, 0.3, (60, 12)) + np.where(y[:, None] == 0, 1.0, -1.0) * (np.arange(12) < 8)
    # one mislabelled-looking row: a class-1 label sitting in class 0's cluster, alone in its fold
    x[0] = x[1]
    y = y.copy()
    y[0] = 1
    folds = np.arange(60) % 5
    folds[0] = 4
    folds[1] = 3  # its twin is in another fold
    out = sel.neighbour_cv(x, y, folds, 2, pca_k=5, neighbours=5, temperature=0.1)
    assert out.shape == (60, 2) and np.allclose(out.sum(axis=1), 1)
    # row 0 never votes for itself: its neighbourhood (class 0) decides
    assert out[0, 0] > 0.9
    assert (out[1:].argmax(axis=1) == y[1:]).mean() > 0.9


def test_text_cv_learns_from_the_extra_documents_but_scores_ocr_text_only():
    y = np.repeat([0, 1], 40)
    words = {0: ["villager island nook", "turnip bells nook"], 1: ["slayer demons rip", "chainsaw demons hell"]}
    # OCR text: the class words only on the even rows; titles: the class words on every row
    texts = [words[c][i % 2] if i % 2 == 0 else "" for i, c in enumerate(y)]
    titles = [words[c][(i + 1) % 2] + " post" for i, c in enumerate(y)]
    folds = np.arange(80) % 4
    plain = sel.text_cv(texts, y, folds, 2, cs=(10.0,))
    extra = sel.text_cv(texts, y, folds, 2, cs=(10.0,), extra=titles)
    assert np.mean(extra.scores["C=10"]) >= np.mean(plain.scores["C=10"])
    # rows without OCR text get their fold model's empty-text output: their title is never read
    empty = [i for i, t in enumerate(texts) if not t]
    for f in (1, 3):  # the odd rows (no OCR text) sit in these folds
        rows = [i for i in empty if folds[i] == f]
        assert len(rows) == 20 and np.allclose(extra.oof_logp[rows], extra.oof_logp[rows[0]])
    with_text = [i for i, t in enumerate(texts) if t]
    assert (extra.oof_logp[with_text].argmax(axis=1) == y[with_text]).mean() == 1.0


def _fake_ingest(n=160, seed=7, titles=True):
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, 16)) + np.where(y[:, None] == 1, 0.6, -0.6) * (np.arange(16) < 4)
    words = ("nook villager turnip", "slayer demon chainsaw")
    return SimpleNamespace(
        features=x.astype(np.float32),
        dhash=[int(v) for v in rng.integers(0, 2**62, n)],
        sha256=[f"{i:064x}" for i in range(n)],
        texts=[words[c] if i % 3 else "" for i, c in enumerate(y)],
        titles=[f"my {words[c].split()[i % 3]} post" for i, c in enumerate(y)] if titles else None,
    ), y


@pytest.mark.parametrize("with_titles", [True, False])
def test_select_reads_the_text_only_the_affordable_cascades_reach_when_titles_help(with_titles):
    from batch_training.config import TrainConfig
    from batch_training.selection import select

    data, y = _fake_ingest(titles=with_titles)
    cfg = TrainConfig(data="unused", model_dir="unused", pca_ks=(8,), neighbours=5, cascades=(0.99, 0.9, 0.8), ocr_budget=0.35)
    read: list[int] = []
    out = select(cfg, data, y, 2, read_texts=lambda rows: read.extend(int(r) for r in rows))
    view = out.image_view
    assert view is not None and view.shape == (int((~out.test).sum()), 2)
    assert not np.allclose(view, out.image.oof_probs)  # the vote moved the probabilities
    top = view.max(axis=1)
    shares = {c: float((top < c).mean()) for c in cfg.cascades}
    if with_titles:
        assert out.train_titles is not None and len(out.train_titles) == len(top)
        reach = max([c for c in cfg.cascades if shares[c] <= cfg.ocr_budget] or [min(cfg.cascades, key=shares.get)])
        assert reach < 0.99  # the data makes the budget bite
    else:
        assert out.train_titles is None
        reach = 0.99
    rows = np.flatnonzero(~out.test)
    assert sorted(read) == sorted(rows[top < reach].tolist())
    assert out.cascade.cascade <= reach and all(r["cascade"] <= reach for r in out.cascade.table)
