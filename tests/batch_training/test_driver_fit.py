"""The driver-fitted estimators give Spark's own model classes that transform, save and load
like Spark's fits, as stages of a Pipeline or from driver arrays."""
from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import Pipeline, PipelineModel
from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
from pyspark.ml.functions import vector_to_array

from batch_training.driver_fit import DriverLogisticRegression, DriverPCA, DriverStandardScaler
from batch_training.image_models import fit_prep
from memestream.classify import FEATURES, REDUCED, SCALED
from memestream.errors import DataError
from memestream.scorer import features_frame


def _frame(spark, x: np.ndarray, y: np.ndarray):
    return features_frame(spark, x, FEATURES, {"label": y.astype(np.float64)})


def _column(df, name: str) -> np.ndarray:
    return np.array([r[0] for r in df.select(vector_to_array(name)).collect()])


def test_prep_built_on_the_driver_equals_spark_mls_own_fit(spark, tmp_path):
    """fit_prep's StandardScalerModel + PCAModel transform rows like the ones
    Pipeline([StandardScaler, PCA]).fit returns (PCA axes up to sign), and survive save/load."""
    rng = np.random.default_rng(0)
    for n, d, k in ((40, 12, 5), (10, 30, 6)):  # more rows than columns, and fewer (the Gram path)
        x = (rng.normal(size=(n, d)) * rng.uniform(0.5, 3, d) + rng.normal(size=d)).astype(np.float32)
        x[:, 3] = 1.0  # a constant column: zero std, scaled to 0 as Spark does
        df = _frame(spark, x, rng.integers(0, 2, n))
        ref = Pipeline(stages=[StandardScaler(withMean=True, withStd=True, inputCol=FEATURES, outputCol=SCALED),
                               PCA(k=k, inputCol=SCALED, outputCol=REDUCED)]).fit(df)
        scaler, pca, reduced = fit_prep(x, k)
        assert type(scaler) is StandardScalerModel and type(pca) is PCAModel
        ours = PipelineModel(stages=[scaler, pca])
        want, got = _column(ref.transform(df), REDUCED), _column(ours.transform(df), REDUCED)
        sign = np.sign((want * got).sum(axis=0))
        assert np.allclose(want * sign, got, atol=1e-9)
        assert np.allclose(got, reduced, atol=1e-9)  # the rows the classifiers are fitted on
        assert np.allclose(ref.stages[1].explainedVariance.toArray(), pca.explainedVariance.toArray(), atol=1e-12)
        ours.write().overwrite().save(str(tmp_path / f"prep{n}"))
        again = PipelineModel.load(str(tmp_path / f"prep{n}"))
        assert again.stages[0].getWithMean() and again.stages[1].getK() == k
        assert np.array_equal(_column(again.transform(df), REDUCED), got)


def test_driver_estimators_fit_in_a_pipeline_like_from_arrays(spark, tmp_path):
    """Pipeline.fit of the three driver estimators collects the frame and gives the models
    fit_arrays gives; the logistic regression scores like Spark's own L-BFGS fit of the same
    objective and keeps the estimator's params."""
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 120)
    x = (rng.normal(size=(120, 10)) + y[:, None] * 0.8).astype(np.float32)
    df = _frame(spark, x, y)
    params = dict(featuresCol=REDUCED, labelCol="label", regParam=0.05, elasticNetParam=0.0, standardization=False, maxIter=150, tol=1e-9)
    fitted = Pipeline(stages=[
        DriverStandardScaler(inputCol=FEATURES, outputCol=SCALED, withMean=True, withStd=True),
        DriverPCA(k=4, inputCol=SCALED, outputCol=REDUCED),
        DriverLogisticRegression(seed=3, **params),
    ]).fit(df)
    scaler, pca, head = fitted.stages
    assert type(head) is LogisticRegressionModel and head.numClasses == 3 and head.getRegParam() == 0.05 and not head.getStandardization()
    _, z = DriverStandardScaler(inputCol=FEATURES, outputCol=SCALED, withMean=True, withStd=True).fit_arrays(x)
    _, reduced = DriverPCA(k=4, inputCol=SCALED, outputCol=REDUCED).fit_arrays(z)
    direct = DriverLogisticRegression(seed=3, **params).fit_arrays(reduced, y, 3)
    assert np.allclose(head.coefficientMatrix.toArray(), direct.coefficientMatrix.toArray(), atol=1e-12)

    reduced_df = fitted.transform(df).select(REDUCED, "label")
    spark_fit = LogisticRegression(**params).fit(reduced_df)
    ours = _column(fitted.transform(df), "probability")
    theirs = _column(spark_fit.transform(reduced_df), "probability")
    assert np.abs(ours - theirs).max() < 1e-4

    fitted.write().overwrite().save(str(tmp_path / "lr"))
    again = PipelineModel.load(str(tmp_path / "lr"))
    assert np.array_equal(_column(again.transform(df), "probability"), ours)


def test_driver_logistic_regression_refuses_missing_classes(spark):
    x = np.random.default_rng(0).normal(size=(20, 3))
    with pytest.raises(DataError, match="rows of all 3 classes, found classes \\[0, 1\\]"):
        DriverLogisticRegression(featuresCol=REDUCED, regParam=0.1).fit_arrays(x, np.arange(20) % 2, 3)
