"""Calibration maps and the novelty score (numpy, no Spark)."""
from __future__ import annotations

import numpy as np
import pytest

from batch_training.metrics import calibration_metrics
from memestream.calibration import Calibrator, fit_calibration, load_calibrators, save_calibrators
from memestream.errors import ModelError
from memestream.novelty import NoveltyModel


def _overconfident(n=2000, seed=0):
    """A model that is right 80 % of the time but claims ~99 %."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    right = rng.random(n) < 0.8
    pred = np.where(right, y, 1 - y)
    conf = rng.uniform(0.97, 0.999, n)
    p1 = np.where(pred == 1, conf, 1 - conf)
    return np.stack([1 - p1, p1], axis=1), y


def test_calibration_fixes_a_deliberately_overconfident_model():
    probs, y = _overconfident()
    folds = np.arange(len(y)) % 5
    cal, scores = fit_calibration(probs, y, folds)
    assert cal.method != "none" and scores[cal.method] < scores["none"]
    before = calibration_metrics(y, probs)
    after = calibration_metrics(y, cal.apply(probs))
    assert before["ece"] > 0.15 and after["ece"] < 0.05
    assert after["brier"] < before["brier"] and after["log_loss"] < before["log_loss"]
    assert np.allclose(cal.apply(probs).sum(axis=1), 1.0)


def test_temperature_keeps_the_label_and_works_for_many_classes():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(500, 4)) * 6
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.where(rng.random(500) < 0.6, probs.argmax(axis=1), rng.integers(0, 4, 500))
    cal, scores = fit_calibration(probs, y, np.arange(500) % 5)
    assert set(scores) == {"none", "temperature"} and cal.method == "temperature" and cal.params["T"] > 1
    assert np.array_equal(cal.apply(probs).argmax(axis=1), probs.argmax(axis=1))


def test_saved_calibration_round_trips(tmp_path):
    probs, y = _overconfident(seed=2)
    cals = {"image": Calibrator("temperature", {"T": 2.5})}
    cals["stacked"], _ = fit_calibration(probs, y, np.arange(len(y)) % 5)
    save_calibrators(tmp_path, cals, {"stacked": {"none": 1.0}})
    back = load_calibrators(tmp_path)
    assert back == cals
    assert np.array_equal(back["stacked"].apply(probs), cals["stacked"].apply(probs))
    (tmp_path / "calibration.json").write_text('{"image": {"method": "magic"}}')
    with pytest.raises(ModelError, match="magic"):
        load_calibrators(tmp_path)


def test_novelty_flags_foreign_points_not_training_like_ones(tmp_path):
    rng = np.random.default_rng(3)
    centers = rng.normal(size=(2, 64)) * 3
    y = rng.integers(0, 2, 400)
    x = centers[y] + rng.normal(size=(400, 64))
    model, oof = NoveltyModel.fit(x, y, np.arange(400) % 5, k=5, quantile=0.99)
    assert (oof > model.threshold).mean() == pytest.approx(0.01, abs=0.01)
    fresh = centers[rng.integers(0, 2, 100)] + rng.normal(size=(100, 64))
    foreign = rng.normal(size=(50, 64)) * 3 + 10 * rng.normal(size=(1, 64))
    s_in, nearest = model.score(fresh)
    s_out, _ = model.score(foreign)
    assert (s_in > model.threshold).mean() <= 0.05
    assert (s_out > model.threshold).mean() >= 0.95
    assert set(np.unique(nearest)) <= {0, 1}
    model.save(tmp_path)
    back = NoveltyModel.load(tmp_path)
    assert back.threshold == model.threshold and np.array_equal(back.score(foreign)[0], model.score(foreign)[0])
    (tmp_path / "novelty.npz").write_bytes(b"broken")
    with pytest.raises(ModelError, match="novelty.npz"):
        NoveltyModel.load(tmp_path)


def test_novelty_on_leading_columns_ignores_the_rest_and_round_trips(tmp_path):
    rng = np.random.default_rng(5)
    head = np.abs(rng.normal(size=(120, 8)))
    y = np.arange(120) % 2
    folds = np.arange(120) % 4
    tail = np.abs(rng.normal(size=(120, 30))) * 10  # loud columns the score must not see
    model, oof = NoveltyModel.fit(np.hstack([head, tail]), y, folds, dims=8)
    plain, plain_oof = NoveltyModel.fit(head, y, folds)
    np.testing.assert_allclose(oof, plain_oof, rtol=1e-5, atol=1e-6)
    probe = np.abs(rng.normal(size=(5, 38)))
    np.testing.assert_allclose(model.score(probe)[0], plain.score(probe[:, :8])[0], rtol=1e-5, atol=1e-6)
    model.save(tmp_path)
    loaded = NoveltyModel.load(tmp_path)
    assert loaded is not None and loaded.dims == 8 and loaded.threshold == model.threshold
    np.testing.assert_allclose(loaded.score(probe)[0], model.score(probe)[0])
