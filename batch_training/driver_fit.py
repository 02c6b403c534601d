"""Spark ML estimators fitted on the driver with numpy / scikit-learn, giving Spark's own models.

Training holds its rows on the driver (a few thousand embeddings), and the grouped CV has
already scored these exact numpy fits. Spark's own fits cost seconds where numpy takes a
fraction of one: ``PCA`` takes the SVD of the d x d covariance in the JVM (1280 x 1280 for
effnet_lite0, pure-Java LAPACK unless the machine has a native one: ~10 s a run), where the
eigenvectors of the n x n Gram matrix give the same axes (up to sign); ``LogisticRegression``
runs a Spark job per L-BFGS iteration (~5 s for 1020 x 256 on 2 cores) for the optimum
scikit-learn reaches on the driver (coefficients equal to 1e-7 on a test problem).

Each estimator here subclasses Spark's, so it takes the same params, and returns Spark's model
class (``StandardScalerModel``, ``PCAModel``, ``LogisticRegressionModel``): the saved pipeline,
its format on disk and the stream's numpy compilation are those of a Spark fit.
:meth:`fit_arrays` is the driver's entry (numpy in; the model and the transformed rows out);
``fit`` on a DataFrame collects the input column and does the same, so the estimators compose
in a ``Pipeline``.

Spark ML has no public way to build a model from arrays: the JVM model is made with its
constructor (``_py2java`` converts the arrays) and the Python params are copied onto it
(``_set``, ``_transfer_params_to_java``). Those private pyspark calls live in this file only.
"""
from __future__ import annotations

from typing import Any, TypeVar

import numpy as np
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.common import _py2java
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.linalg import DenseMatrix, DenseVector
from pyspark.ml.param import Params
from pyspark.sql import DataFrame, SparkSession

from batch_training.selection import fit_logistic, pca_axes, standardize_fit
from memestream.errors import DataError, ModelError

M = TypeVar("M", bound=Params)


def _java(value: Any) -> Any:
    return _py2java(SparkSession.active().sparkContext, value)


def _jvm() -> Any:
    return SparkSession.active().sparkContext._jvm


def _with_params(model: M, estimator: Params, **override: Any) -> M:
    """The estimator's explicitly set params (those the model has) on the model, in Python
    and in its JVM object, as Spark's own ``fit`` leaves them."""
    values = {p.name: estimator.getOrDefault(p) for p in estimator.params if estimator.isSet(p) and model.hasParam(p.name)}
    model._set(**{**values, **override})
    model._transfer_params_to_java()
    return model


def _collect(dataset: DataFrame, *columns: str) -> list[np.ndarray]:
    """Vector (or number) columns of a small frame as driver arrays."""
    rows = dataset.select(*columns).collect()
    out = []
    for i in range(len(columns)):
        values = [r[i] for r in rows]
        out.append(np.array([v.toArray() for v in values]) if values and hasattr(values[0], "toArray") else np.array(values))
    return out


class DriverStandardScaler(StandardScaler):
    """Spark's ``StandardScaler`` (mean and sample standard deviation), fitted with numpy."""

    def fit_arrays(self, features: np.ndarray) -> tuple[StandardScalerModel, np.ndarray]:
        """``(model, the rows as the model transforms them)``."""
        x = features.astype(np.float64)
        mean, scale = standardize_fit(x)
        std = x.std(axis=0, ddof=1)
        java = _jvm().org.apache.spark.ml.feature.StandardScalerModel(self.uid, _java(DenseVector(std)), _java(DenseVector(mean)))
        model = _with_params(StandardScalerModel(java), self)
        shifted = x - mean if self.getWithMean() else x
        return model, shifted * scale if self.getWithStd() else shifted

    def _fit(self, dataset: DataFrame) -> StandardScalerModel:
        return self.fit_arrays(_collect(dataset, self.getInputCol())[0])[0]


class DriverPCA(PCA):
    """Spark's ``PCA`` (top-k axes of the centred rows, explained variance), fitted with numpy;
    ``k`` is clamped to the rows' rank (:func:`batch_training.selection.pca_axes`)."""

    def fit_arrays(self, rows: np.ndarray) -> tuple[PCAModel, np.ndarray]:
        """``(model, the rows' coordinates as the model transforms them)``."""
        basis, ratio = pca_axes(rows, self.getK())
        d, k = basis.shape
        pc = DenseMatrix(d, k, np.asfortranarray(basis).reshape(-1, order="F"))
        java = _jvm().org.apache.spark.ml.feature.PCAModel(self.uid, _java(pc), _java(DenseVector(ratio)))
        return _with_params(PCAModel(java), self, k=k), rows @ basis

    def _fit(self, dataset: DataFrame) -> PCAModel:
        return self.fit_arrays(_collect(dataset, self.getInputCol())[0])[0]


class DriverLogisticRegression(LogisticRegression):
    """Spark's ``LogisticRegression`` with L2 (``regParam``, no re-standardisation: set
    ``standardization=False``), fitted by the solver and objective the grouped CV scored
    (:func:`batch_training.selection.fit_logistic`); never a constant model."""

    def __init__(self, *, seed: int = 42, **params: Any) -> None:
        super().__init__(**params)
        #: the driver solver's seed (a plain attribute: Spark's LogisticRegression has no seed param)
        self.solver_seed = seed

    def fit_arrays(self, features: np.ndarray, labels: np.ndarray, num_classes: int) -> LogisticRegressionModel:
        found = sorted(set(np.asarray(labels).tolist()))
        if found != list(range(num_classes)):
            raise DataError(f"logistic regression needs rows of all {num_classes} classes, found classes {found}")
        fitted = fit_logistic(features, labels, self.getRegParam(), self.solver_seed)
        coef, intercept = np.asarray(fitted.coef_, dtype=np.float64), np.asarray(fitted.intercept_, dtype=np.float64)
        if not np.any(coef):
            # the optimizer gave up at its starting point: a constant model must never be saved as current
            raise ModelError(f"logistic regression did not converge on {len(labels)} rows x {features.shape[1]} PCA components "
                             "(all coefficients 0); try another --pca-k or --reg-params")
        rows, dims = coef.shape  # (1, k) for two classes (binomial), (classes, k) otherwise
        java = _jvm().org.apache.spark.ml.classification.LogisticRegressionModel(
            self.uid, _java(DenseMatrix(rows, dims, coef.reshape(-1), isTransposed=True)), _java(DenseVector(intercept)),
            num_classes, num_classes > 2)
        return _with_params(LogisticRegressionModel(java), self)

    def _fit(self, dataset: DataFrame) -> LogisticRegressionModel:
        x, y = _collect(dataset, self.getFeaturesCol(), self.getLabelCol())
        labels = y.astype(np.int64)
        return self.fit_arrays(x, labels, int(labels.max()) + 1)
