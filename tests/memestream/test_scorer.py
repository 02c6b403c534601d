"""The one scorer: its engine choice, what it keeps, and the same probabilities for images and
for rows already featurized (training's test split)."""
from __future__ import annotations

from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from pyspark.sql import functions as F

from memestream import scorer as scorer_module
from memestream.classify import featurizer_of
from memestream.errors import ConfigError
from memestream.features import featurize_inputs, get_feature_set
from memestream.image_stats import stats_of
from memestream.modelstore import LoadedModel, load_model
from memestream.scorer import LABELLED, Scorer


def _paths(spark, sample_dataset, n: int = 6):
    files = sorted(Path(sample_dataset).rglob("*.png"))[:n]
    return spark.createDataFrame([(str(p),) for p in files], ["path"]), [str(p) for p in files]


def _features(model: LoadedModel, paths: list[str]) -> np.ndarray:
    return _features_and_stats(model, paths)[0]


def _features_and_stats(model: LoadedModel, paths: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Embeddings and the novelty score's image statistics, as the in-worker scorer computes them."""
    feat = featurizer_of(model)
    out = featurize_inputs(paths, get_feature_set(feat.getFeatureSet()), from_path=True, max_bytes=feat.getMaxBytes(),
                           max_pixels=feat.getMaxPixels(), asset=feat.getAssetPath(), keep_images=True)
    assert out.ok.all()
    return out.matrix, stats_of(out.images)


def test_scorer_builds_its_udf_once_and_keeps_it_on_itself(spark, trained_model_dir, sample_dataset, monkeypatch):
    model = load_model(trained_model_dir, which="logreg")
    built = []
    real = scorer_module.F.arrow_udf
    monkeypatch.setattr(scorer_module.F, "arrow_udf", lambda *a, **k: built.append(a) or real(*a, **k))
    scorer = Scorer(model, "auto", text_mode="off")
    assert scorer.engine == "python"
    paths, _ = _paths(spark, sample_dataset)
    first = scorer.score(paths).collect()
    second = scorer.score(paths.withColumn("extra", F.lit(1))).collect()  # another frame layout, same UDF
    assert len(built) == 1
    assert [r["label"] for r in first] == [r["label"] for r in second] and all(r["extra"] == 1 for r in second)
    assert list(first[0].asDict()) == ["path", *LABELLED]
    assert set(vars(model)) == {f.name for f in fields(LoadedModel)}  # nothing cached on the model object


@pytest.mark.parametrize("which", ["logreg", "random_forest"])
def test_featurized_rows_score_like_the_images(spark, trained_model_dir, sample_dataset, which):
    """Training's test scoring (score_features) reports the probabilities meme-evaluate and the
    stream get for the same images, on either engine."""
    model = load_model(trained_model_dir, which=which)
    scorer = Scorer(model, text_mode="off")
    assert scorer.engine == ("python" if which == "logreg" else "spark")
    paths, files = _paths(spark, sample_dataset)
    by_path = {r["path"]: r for r in scorer.score(paths).collect()}
    features, stats = _features_and_stats(model, files)
    got = scorer.score_features(features, stats=stats)
    want = np.array([by_path[p]["probability_vector"] for p in files])
    np.testing.assert_allclose(got.probs, want, rtol=0, atol=1e-9)
    assert got.probs.argmax(axis=1).tolist() == [model.classes.index(by_path[p]["label"]) for p in files]
    np.testing.assert_allclose(got.novelty, [by_path[p]["novelty"] for p in files], rtol=0, atol=1e-6)
    assert model.novelty.wants_stats  # both views, on either engine (the JVM one decodes the bytes again)


def test_scorer_options_are_checked_when_built(spark, trained_model_dir):
    model = load_model(trained_model_dir, which="logreg")
    with pytest.raises(ConfigError, match="--scoring must be one of auto, python, spark"):
        Scorer(model, "gpu")
    with pytest.raises(ConfigError, match="--text"):
        Scorer(model, text_mode="sometimes")
    frame = spark.createDataFrame([("file:/x.png", b"")], "path string, content binary")
    with pytest.raises(ConfigError, match="already has one"):
        Scorer(model, input="path").score(frame)
    stacked = Scorer(load_model(trained_model_dir, which="stacked"), text_mode="cascade")
    with pytest.raises(ValueError, match="pass texts"):
        stacked.score_features(np.zeros((1, 4), dtype=np.float32))
