"""The PCA stage training builds (``selection.pca_axes`` inside ``image_models.fit_prep``) with more
dimensions than rows, where Spark's own ``PCA.fit`` returned non-orthonormal axes."""
from __future__ import annotations

import numpy as np

from batch_training.selection import pca_axes
from batch_training.image_models import fit_prep


def test_axes_are_orthonormal_and_maximal_with_more_dims_than_rows():
    rng = np.random.default_rng(3)
    z = rng.normal(size=(40, 120)) * np.linspace(5, 0.1, 120)
    axes, share = pca_axes(z, 16)
    assert axes.shape == (120, 16)
    np.testing.assert_allclose(axes.T @ axes, np.eye(16), atol=1e-9)
    assert np.all(np.diff(share) <= 1e-12) and 0 < share.sum() <= 1.0
    c = z - z.mean(axis=0)
    best = float(((c @ axes[:, 0]) ** 2).sum())
    for _ in range(50):  # no random unit direction carries more variance than the first axis
        v = rng.normal(size=120)
        v /= np.linalg.norm(v)
        assert float(((c @ v) ** 2).sum()) <= best + 1e-9


def test_k_is_clamped_to_the_rank():
    axes, share = pca_axes(np.random.default_rng(0).normal(size=(10, 30)), 64)
    assert axes.shape == (30, 9) and share.shape == (9,)
    np.testing.assert_allclose(axes.T @ axes, np.eye(9), atol=1e-9)


def test_fit_prep_with_more_dims_than_rows_gives_spark_stages_that_project_like_numpy(spark):
    from pyspark.ml import PipelineModel
    from pyspark.ml.linalg import Vectors

    rng = np.random.default_rng(7)
    x = np.abs(rng.normal(size=(30, 80))).astype(np.float32)
    scaler, pca, reduced = fit_prep(x, 8)
    np.testing.assert_allclose(pca.pc.toArray().T @ pca.pc.toArray(), np.eye(8), atol=1e-9)
    df = spark.createDataFrame([(Vectors.dense(r.tolist()),) for r in x], ["features"])
    got = np.array([r[pca.getOutputCol()].toArray() for r in PipelineModel(stages=[scaler, pca]).transform(df).collect()])
    np.testing.assert_allclose(got, reduced, rtol=1e-6, atol=1e-6)
    assert np.all(reduced.std(axis=0) > 1e-3)  # every axis carries variance (Spark's fit left 1e-14)
