"""The novelty score's views (issue 25): embedding distance and image statistics, each a tail
probability against out-of-fold training scores, merged by their minimum (numpy, no Spark)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from memestream.errors import ModelError
from memestream.image_stats import STAT_NAMES, image_stats, stats_of
from memestream.novelty import NOVELTY_FILE, NoveltyModel, tail_p


def _data(seed: int = 0, n: int = 500):
    """Two classes in a 32-d non-negative embedding, and 6 correlated statistics per row."""
    rng = np.random.default_rng(seed)
    centers = np.abs(rng.normal(size=(2, 32))) * 3
    y = rng.integers(0, 2, n)
    x = np.abs(centers[y] + rng.normal(size=(n, 32)))
    base = rng.normal(size=(n, 1))
    stats = np.hstack([base + 0.3 * rng.normal(size=(n, 3)), rng.gamma(2.0, 1.0, size=(n, 3))])
    return rng, centers, y, x, stats


def test_a_row_typical_in_the_embedding_but_not_in_its_statistics_is_flagged():
    rng, centers, y, x, stats = _data()
    model, oof = NoveltyModel.fit(x, y, np.arange(len(y)) % 5, k=5, quantile=0.98, stats=stats)
    assert model.wants_stats
    assert (oof > model.threshold).mean() == pytest.approx(0.02, abs=0.01)  # the share the quantile promises
    fresh_x = np.abs(centers[rng.integers(0, 2, 300)] + rng.normal(size=(300, 32)))
    base = rng.normal(size=(300, 1))
    fresh_s = np.hstack([base + 0.3 * rng.normal(size=(300, 3)), rng.gamma(2.0, 1.0, size=(300, 3))])
    s_in, _ = model.score(fresh_x, fresh_s)
    assert (s_in > model.threshold).mean() <= 0.05
    # a "page of text": an ordinary embedding, statistics that break the columns' joint pattern
    odd = fresh_s[:20].copy()
    odd[:, 0], odd[:, 1] = 2.5, -2.5
    s_odd, _ = model.score(fresh_x[:20], odd)
    assert (s_odd > model.threshold).mean() >= 0.9
    # the embedding view alone does not see it: the same rows without statistics pass
    s_blind, _ = model.score(fresh_x[:20], None)
    assert (s_blind > model.threshold).mean() <= 0.1


def test_rows_without_statistics_are_scored_by_the_embedding_view():
    _, centers, y, x, stats = _data(1)
    model, _ = NoveltyModel.fit(x, y, np.arange(len(y)) % 5, stats=stats)
    foreign = np.abs(np.random.default_rng(9).normal(size=(4, 32))) * 3 + 8 * (np.arange(32) % 2)
    mixed = stats[:4].copy()
    mixed[1] = np.nan  # the image did not decode for the statistics: embedding view only
    full, _ = model.score(foreign, mixed)
    alone, _ = model.score(foreign, None)
    assert full[1] == alone[1] and np.all(full >= alone)
    assert np.all(alone > model.threshold)  # far in the embedding: flagged without statistics too


def test_tail_p_is_never_zero_and_ordered():
    null = np.sort(np.arange(99.0))
    p = tail_p(null, np.array([-1.0, 50.0, 1e9]))
    assert p[0] == 1.0 and 0 < p[2] < p[1] < 1 and p[2] == pytest.approx(1 / 100)


def test_views_round_trip_and_an_old_format_model_keeps_its_distance(tmp_path):
    _, _, y, x, stats = _data(2, 200)
    model, _ = NoveltyModel.fit(x, y, np.arange(200) % 4, stats=stats)
    model.save(tmp_path)
    back = NoveltyModel.load(tmp_path)
    probe_x, probe_s = x[:7] * 1.5, stats[:7] + 1
    assert back.threshold == model.threshold and back.wants_stats
    np.testing.assert_allclose(back.score(probe_x, probe_s)[0], model.score(probe_x, probe_s)[0], rtol=1e-6)
    # a model saved before the views: reference rows, k and a distance threshold only
    old = tmp_path / "old"
    old.mkdir()
    meta = {"k": 10, "threshold": 0.05, "embedding": "sqrt-cosine", "dims": None}
    np.savez(old / NOVELTY_FILE, reference=model.reference, labels=model.labels, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    legacy = NoveltyModel.load(old)
    assert not legacy.wants_stats and legacy.embed_null is None and legacy.threshold == 0.05
    np.testing.assert_allclose(legacy.score(probe_x, probe_s)[0], legacy.distance(probe_x)[0])  # statistics ignored


def test_a_model_fitted_on_other_statistics_fails_with_one_message(tmp_path):
    _, _, y, x, stats = _data(3, 120)
    NoveltyModel.fit(x, y, np.arange(120) % 3, stats=stats)[0].save(tmp_path)
    with np.load(tmp_path / NOVELTY_FILE) as z:
        arrays = {k: z[k] for k in z.files}
    meta = json.loads(arrays["meta"].tobytes().decode())
    meta["stats_version"] = "0"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / NOVELTY_FILE, **arrays)
    with pytest.raises(ModelError, match="image statistics v0.*retrain"):
        NoveltyModel.load(tmp_path)
    meta["score"] = "something-else"
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / NOVELTY_FILE, **arrays)
    with pytest.raises(ModelError, match="something-else"):
        NoveltyModel.load(tmp_path)


def test_image_stats_tell_a_page_of_text_from_a_shaded_picture():
    rng = np.random.default_rng(4)
    page = np.full((400, 300, 3), 255, np.uint8)
    for y in range(20, 380, 18):
        cv2.putText(page, "lorem ipsum dolor sit amet", (10, y), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    yy, xx = np.mgrid[0:300, 0:300]
    picture = np.dstack([128 + 100 * np.sin(xx / 23), 128 + 100 * np.cos(yy / 31), 128 + 100 * np.sin((xx + yy) / 17)])
    picture = cv2.GaussianBlur(np.clip(picture + rng.normal(0, 20, picture.shape), 0, 255).astype(np.uint8), (5, 5), 0)
    s_page, s_pic = image_stats(page), image_stats(picture)
    names = list(STAT_NAMES)
    assert s_page.shape == (len(STAT_NAMES),) and np.all(np.isfinite(s_page)) and np.all(np.isfinite(s_pic))
    assert s_page[names.index("near_white_share")] > 0.5 > s_pic[names.index("near_white_share")]
    assert s_page[names.index("colour_count")] < s_pic[names.index("colour_count")]
    assert s_page[names.index("two_tone_cells")] > s_pic[names.index("two_tone_cells")]
    assert s_page[names.index("text_row_period")] > 0.3 > s_pic[names.index("text_row_period")]  # lines of text repeat
    table = np.full((300, 300, 3), 255, np.uint8)
    for k in range(0, 300, 30):
        cv2.line(table, (0, k), (299, k), (0, 0, 0), 1)
        cv2.line(table, (k, 0), (k, 299), (0, 0, 0), 1)
    s_table = image_stats(table)
    assert s_table[names.index("horizontal_edge_share")] > 0.3 > s_pic[names.index("horizontal_edge_share")]
    assert s_table[names.index("vertical_edge_share")] > 0.3 > s_pic[names.index("vertical_edge_share")]
    gray = stats_of([cv2.cvtColor(page, cv2.COLOR_BGR2GRAY), None])
    assert np.allclose(gray[0], s_page, atol=1e-5) and np.all(np.isnan(gray[1]))
