"""Step 5: the image models, fitted on the whole training part with the chosen PCA k and L2.

Every model is ``[ImageFeaturizer, StandardScaler, PCA, classifier]``. The scaler, the PCA
and the logistic regression are fitted on the driver (:mod:`batch_training.driver_fit`); the
comparison models (random forest, MLP) by Spark ML over the rows' PCA coordinates.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.ml.classification import MultilayerPerceptronClassifier, RandomForestClassifier
from pyspark.ml.feature import PCAModel, StandardScalerModel
from pyspark.sql import SparkSession

from batch_training import selection as sel
from batch_training.config import TrainConfig
from batch_training.dataset import LABEL_INDEX
from batch_training.driver_fit import DriverLogisticRegression, DriverPCA, DriverStandardScaler
from batch_training.ingest import Ingested
from batch_training.progress import SparkProgress, phase
from batch_training.selection import Selection
from memestream.classify import FEATURES, PREDICTION, PROBABILITY, RAW_PREDICTION, REDUCED, SCALED
from memestream.errors import ConfigError
from memestream.featurizer import ImageFeaturizer
from memestream.features import FeatureSet
from memestream.modelstore import ModelVersion
from memestream.image_stats import stats_of_paths
from memestream.novelty import NoveltyModel
from memestream.scorer import features_frame

log = logging.getLogger(__name__)


@dataclass
class ImageModels:
    """Step 5's outcome: each model of ``--models`` as a PipelineModel, with what the manifest says of it."""

    pipelines: dict[str, PipelineModel]
    #: per model: the manifest's entry (path, params, CV, ...), and the metrics of the report
    meta: dict[str, dict[str, Any]]
    results: dict[str, dict[str, Any]]
    #: the novelty reference of the training part, the same for every model of the version
    novelty: NoveltyModel
    #: the training rows' PCA coordinates, as the saved scaler and PCA stages give them
    reduced: np.ndarray
    #: the PCA's explained variance ratio per component
    explained: list[float] = field(default_factory=list)


def classifier(name: str, cfg: TrainConfig, k: int, n_classes: int, reg_param: float):
    """The unfitted classifier stage ``name`` over the PCA coordinates."""
    common = dict(featuresCol=REDUCED, labelCol=LABEL_INDEX, predictionCol=PREDICTION, probabilityCol=PROBABILITY, rawPredictionCol=RAW_PREDICTION)
    if name == "logreg":
        # L2 on the PCA coordinates as they are (no per-component re-standardisation, which
        # would inflate the small, noisy components): the objective the CV searched.
        return DriverLogisticRegression(seed=cfg.seed, maxIter=150, tol=1e-6, regParam=reg_param, elasticNetParam=0.0,
                                        standardization=False, **common)
    if name == "random_forest":
        # cacheNodeIds: each level's job gets the rows' node ids from a cached RDD instead of
        # the whole forest so far in its task (5-9 MB a job at 150 trees); same trees, ~15% faster
        return RandomForestClassifier(numTrees=cfg.num_trees, maxDepth=cfg.max_depth, seed=cfg.seed, cacheNodeIds=True, **common)
    if name == "mlp":
        return MultilayerPerceptronClassifier(layers=[k, cfg.mlp_hidden, n_classes], maxIter=300, blockSize=128, seed=cfg.seed, **common)
    raise ConfigError(f"unknown model {name!r}")


def fit_prep(features: np.ndarray, k: int) -> tuple[StandardScalerModel, PCAModel, np.ndarray]:
    """StandardScaler and PCA(k) of ``features``, fitted on the driver, and the rows' PCA
    coordinates (what the classifiers are fitted on): ``(scaler, pca, reduced)``."""
    scaler, scaled = DriverStandardScaler(inputCol=FEATURES, outputCol=SCALED, withMean=True, withStd=True).fit_arrays(features)
    pca, reduced = DriverPCA(k=k, inputCol=SCALED, outputCol=REDUCED).fit_arrays(scaled)
    return scaler, pca, reduced


def params_of(stage) -> dict[str, Any]:
    """Explicitly set params of a fitted stage, JSON-safe."""
    out: dict[str, Any] = {}
    for param, value in stage.extractParamMap().items():
        if stage.isSet(param):
            out[param.name] = value if isinstance(value, (int, float, str, bool, type(None))) else (list(value) if isinstance(value, (list, tuple)) else str(value))
    return out


def novelty_stats(data: Ingested, featurizer: ImageFeaturizer, fs: FeatureSet) -> np.ndarray:
    """The rows' image statistics for the novelty score's pixel view, computed once per run."""
    if data.image_stats is None:
        started = time.monotonic()
        data.image_stats = stats_of_paths(data.path, fs, featurizer.getMaxBytes(), featurizer.getMaxPixels())
        log.info("image statistics of %d rows for the novelty score (%.1f s)", len(data.path), time.monotonic() - started)
        missing = int((~np.isfinite(data.image_stats).all(axis=1)).sum())
        if missing:
            log.warning("%d of %d images did not decode again for the novelty score's statistics: they count as typical",
                        missing, len(data.path))
    return data.image_stats


def fit_image_models(spark: SparkSession, cfg: TrainConfig, featurizer: ImageFeaturizer, fs: FeatureSet, data: Ingested, y: np.ndarray,
                     chosen: Selection, n_classes: int, bundle: ModelVersion) -> ImageModels:
    """Fit each model of ``cfg.models`` on the training part and save all but ``logreg``
    (which is saved with its calibration and text branch, :mod:`batch_training.shipped`)."""
    tr = ~chosen.test
    k, reg = chosen.image.pca_k, chosen.image.reg_param
    with phase(spark, f"scaler + PCA(k={k}) on {int(tr.sum())} rows", cfg.progress):
        scaler_model, pca_model, reduced_np = fit_prep(data.features[tr], k)
    reduced = None  # the rows as a Spark frame, for the models Spark fits (forest, MLP)
    stats = novelty_stats(data, featurizer, fs)
    out = ImageModels({}, {}, {}, NoveltyModel.fit(data.features[tr], y[tr], chosen.folds, dims=fs.novelty_dims,
                                                   files=[r for r, t in zip(data.rel_path, tr) if t], stats=stats[tr])[0], reduced_np,
                      [float(v) for v in pca_model.explainedVariance.toArray()])
    for name in cfg.models:
        fit_started = time.monotonic()
        estimator = classifier(name, cfg, k, n_classes, reg)
        with SparkProgress(spark, f"fitting {name}", cfg.progress):
            if isinstance(estimator, DriverLogisticRegression):
                fitted = estimator.fit_arrays(reduced_np, y[tr], n_classes)
            else:
                if reduced is None:
                    # One partition, lineage cut: every iteration is a Spark job, and a frame made
                    # from driver arrays would ship all its rows inside each job's task (5 MB a time).
                    labels = {LABEL_INDEX: y[tr].astype(np.float64)}
                    reduced = features_frame(spark, reduced_np, REDUCED, labels).coalesce(1).localCheckpoint()
                # a forest's per-level jobs are real work: split the rows over the cores
                parallel = spark.sparkContext.defaultParallelism
                rows = reduced.repartition(parallel) if name == "random_forest" and parallel > 1 else reduced
                fitted = estimator.fit(rows)
        out.pipelines[name] = PipelineModel(stages=[featurizer, scaler_model, pca_model, fitted])
        cv = sel.fold_summary(chosen.image.fold_accuracy) if name == "logreg" else None
        out.results[name] = {"cv": cv}
        out.meta[name] = {"path": f"models/{name}", "params": params_of(fitted), "fit_seconds": round(time.monotonic() - fit_started, 1), "cv": cv,
                          "fit_rows": int(tr.sum())}
    for name in cfg.models:  # the same novelty reference for every model of the version
        if name != "logreg":  # logreg (and stacked on it) are written with their calibration and text branch
            bundle.save_model(name, out.pipelines[name], novelty=out.novelty)
    return out
