"""The pipeline's PCA stage, fitted exactly.

Spark ML's ``PCA.fit`` goes wrong when an embedding has more dimensions than there are
training images (1904-d embeddings, ~1000 memes): on the doom-crossing training split it
returned axes that are not orthonormal, most of them spanning almost nothing (projected
variance 1e-14), and the logistic regression after it then failed to converge ("LBFGS:
Line search zoom failed") and was saved as a constant model. So the axes are computed
here with the same exact numpy routine the grouped CV uses (``selection._pca_basis``), and
put into a genuine Spark ``PCAModel``: the saved pipeline keeps its stages, and the fitted
model is the one cross-validation measured.
"""
from __future__ import annotations

import numpy as np

from memestream.errors import ModelError


def pca_axes(z: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` principal axes (d, k) of standardized rows ``z`` and each axis's share of
    the total variance (what Spark reports as ``explainedVariance``)."""
    from batch_training.selection import _pca_basis

    z = np.asarray(z, dtype=np.float64)
    k = min(k, z.shape[0] - 1, z.shape[1])
    basis = _pca_basis(z, k)
    centered = z - z.mean(axis=0)
    total = float((centered**2).sum())
    projected = centered @ basis
    explained = (projected**2).sum(axis=0) / total if total > 0 else np.zeros(k)
    # deterministic signs: the largest-magnitude loading of each axis is positive
    signs = np.sign(basis[np.abs(basis).argmax(axis=0), np.arange(basis.shape[1])])
    return basis * np.where(signs == 0, 1.0, signs), explained


def check_axes(basis: np.ndarray, tol: float = 1e-6) -> None:
    """Refuse axes that are not orthonormal (what Spark's own fit produced)."""
    err = float(np.abs(basis.T @ basis - np.eye(basis.shape[1])).max())
    if not np.isfinite(err) or err > tol:
        raise ModelError(f"PCA axes are not orthonormal (max |V'V - I| = {err:.3g}, expected < {tol:g})")


def pca_model(spark, basis: np.ndarray, explained: np.ndarray, input_col: str, output_col: str):
    """A Spark ``PCAModel`` with these axes (projection ``x @ basis``, as Spark's transform does)."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCAModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    check_axes(basis)
    d, k = basis.shape
    sc = spark.sparkContext
    jpc = _py2java(sc, DenseMatrix(d, k, np.asarray(basis, dtype=np.float64).ravel(order="F").tolist()))
    jev = _py2java(sc, DenseVector(np.asarray(explained, dtype=np.float64).tolist()))
    uid = sc._jvm.org.apache.spark.ml.util.Identifiable.randomUID("pca")
    model = PCAModel(sc._jvm.org.apache.spark.ml.feature.PCAModel(uid, jpc, jev))
    model._set(k=k, inputCol=input_col, outputCol=output_col)
    return model
