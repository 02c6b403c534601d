"""The exact PCA stage: orthonormal axes, Spark's transform equals the numpy projection, saved and loaded."""
from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import PipelineModel
from pyspark.ml.linalg import Vectors

from batch_training.pca import check_axes, pca_axes, pca_model
from memestream.errors import ModelError


def test_axes_are_orthonormal_and_ordered_with_more_dims_than_rows():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 120)) * np.linspace(5, 0.1, 120)  # d > n, decaying variance
    axes, share = pca_axes(z, 16)
    assert axes.shape == (120, 16)
    np.testing.assert_allclose(axes.T @ axes, np.eye(16), atol=1e-9)
    assert np.all(np.diff(share) <= 1e-12) and 0 < share.sum() <= 1.0
    # the first axis captures at least as much variance as any other unit direction tried
    c = z - z.mean(axis=0)
    best = float(((c @ axes[:, 0]) ** 2).sum())
    for _ in range(50):
        v = rng.normal(size=120)
        v /= np.linalg.norm(v)
        assert float(((c @ v) ** 2).sum()) <= best + 1e-9


def test_k_is_clamped_to_the_rank():
    axes, share = pca_axes(np.random.default_rng(0).normal(size=(10, 30)), 64)
    assert axes.shape == (30, 9) and share.shape == (9,)


def test_non_orthonormal_axes_are_refused():
    with pytest.raises(ModelError, match="not orthonormal"):
        check_axes(np.ones((5, 2)))


def test_spark_stage_projects_like_numpy_and_round_trips(spark, tmp_path):
    rng = np.random.default_rng(7)
    z = rng.normal(size=(30, 50))
    axes, share = pca_axes(z, 5)
    model = pca_model(spark, axes, share, "scaled", "reduced")
    df = spark.createDataFrame([(Vectors.dense(row.tolist()),) for row in z], ["scaled"])
    got = np.array([r.reduced.toArray() for r in model.transform(df).collect()])
    np.testing.assert_allclose(got, z @ axes, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(model.explainedVariance.toArray(), share)
    assert model.getK() == 5
    PipelineModel(stages=[model]).write().overwrite().save(str(tmp_path / "p"))
    loaded = PipelineModel.load(str(tmp_path / "p")).stages[0]
    np.testing.assert_allclose(loaded.pc.toArray(), axes)
    again = np.array([r.reduced.toArray() for r in loaded.transform(df).collect()])
    np.testing.assert_allclose(again, got)
