"""The numpy copy of a pipeline's model stages must score exactly like Spark ML does."""
from __future__ import annotations

import numpy as np
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier, RandomForestClassifier
from pyspark.ml.feature import PCA, StandardScaler
from pyspark.ml.functions import array_to_vector, vector_to_array

from memestream.inference import NotCompilable, compile_stages


def _frame(spark, n_classes: int, n: int = 90, dim: int = 12, seed: int = 5):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n_classes, n)
    x = rng.normal(size=(n, dim)) + labels[:, None] * 0.7
    x[:, 3] = 2.5  # a constant column: std 0, which the scaler maps to 0
    rows = [(row.astype(float).tolist(), float(lab)) for row, lab in zip(x, labels)]
    df = spark.createDataFrame(rows, "f array<double>, label double").select(array_to_vector("f").alias("features"), "label")
    return df, x


def _stages(head):
    return [
        StandardScaler(inputCol="features", outputCol="scaled", withMean=True, withStd=True),
        PCA(k=5, inputCol="scaled", outputCol="pca"),
        head,
    ]


def _compare(df, x, fitted, n_classes):
    spark_out = fitted.transform(df).select(vector_to_array("probability").alias("p"), "prediction").collect()
    expected_p = np.array([r["p"] for r in spark_out])
    expected_y = np.array([int(r["prediction"]) for r in spark_out])
    local = compile_stages(fitted.stages, "features", n_classes)
    probs, pred = local.predict(x)
    np.testing.assert_allclose(probs, expected_p, rtol=0, atol=1e-9)
    assert (pred == expected_y).all()
    return probs


@pytest.mark.parametrize("n_classes,family", [(3, "multinomial"), (2, "binomial"), (2, "multinomial")])
def test_logistic_regression_matches_spark(spark, n_classes, family):
    df, x = _frame(spark, n_classes)
    head = LogisticRegression(featuresCol="pca", labelCol="label", family=family, regParam=0.01, maxIter=50)
    fitted = Pipeline(stages=_stages(head)).fit(df)
    probs = _compare(df, x, fitted, n_classes)
    assert probs.shape == (len(x), n_classes)


def test_binomial_threshold_is_honoured(spark):
    df, x = _frame(spark, 2)
    head = LogisticRegression(featuresCol="pca", labelCol="label", family="binomial", threshold=0.8)
    _compare(df, x, Pipeline(stages=_stages(head)).fit(df), 2)


def test_multilayer_perceptron_matches_spark(spark):
    df, x = _frame(spark, 3)
    head = MultilayerPerceptronClassifier(featuresCol="pca", labelCol="label", layers=[5, 7, 4, 3], maxIter=60, seed=3)
    _compare(df, x, Pipeline(stages=_stages(head)).fit(df), 3)


def test_random_forest_and_miswired_stages_are_refused(spark):
    df, _ = _frame(spark, 2)
    rf = Pipeline(stages=_stages(RandomForestClassifier(featuresCol="pca", labelCol="label", numTrees=3))).fit(df)
    with pytest.raises(NotCompilable, match="RandomForestClassificationModel"):
        compile_stages(rf.stages, "features", 2)
    lr = Pipeline(stages=_stages(LogisticRegression(featuresCol="pca", labelCol="label"))).fit(df)
    with pytest.raises(NotCompilable, match="reads 'features', expected 'other'"):
        compile_stages(lr.stages, "other", 2)
    with pytest.raises(NotCompilable, match="no classifier"):
        compile_stages(lr.stages[:2], "features", 2)
