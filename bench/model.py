"""Get a trained model for the benchmark and its in-worker (numpy) scorer.

``meme-train`` trains it; with ``--fit-in-bench`` a PipelineModel with the same stage layout
(ImageFeaturizer, StandardScaler, PCA, LogisticRegression) is fitted in-process instead and
saved as a one-version model store (:class:`memestream.modelstore.ModelVersion`), so
``meme-stream --model`` can load it too.
"""
from __future__ import annotations

import importlib.util
import logging
import time
from pathlib import Path

from pyspark.ml import Pipeline
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import PCA, StandardScaler

from bench.common import LabelledImages
from memestream.classify import FEATURES, PREDICTION, PROBABILITY, RAW_PREDICTION, REDUCED, SCALED
from memestream.errors import ModelError
from memestream.features import get_feature_set
from memestream.featurizer import ImageFeaturizer
from memestream.load import read_files
from memestream.modelstore import LoadedModel, ModelVersion, load_model, read_manifest, resolve_version_dir
from memestream.scorer import Scorer
from memestream.stacking import DEFAULT_TEXT_MODE

log = logging.getLogger(__name__)


def meme_train_available() -> bool:
    """True when ``batch_training.train`` (the ``meme-train`` entry point) is importable."""
    try:
        return importlib.util.find_spec("batch_training.train") is not None
    except (ImportError, ValueError):
        return False


def fit_in_process(spark, images: LabelledImages, model_dir: Path, feature_set: str, pca_k: int = 32) -> Path:
    """Fit the project's stage layout on ``images`` with Spark ML and save it as version
    v0001 of a store (the same bundle meme-train writes, without its CV or text branch)."""
    classes = images.classes
    rows = [(str(p), float(classes.index(lab))) for p, lab in zip(images.files, images.labels)]
    df = read_files(spark.createDataFrame(rows, "path string, label double"))
    dim = get_feature_set(feature_set).dim
    pipeline = Pipeline(stages=[
        ImageFeaturizer(inputCol="content", outputCol=FEATURES, featureSet=feature_set),
        StandardScaler(inputCol=FEATURES, outputCol=SCALED, withMean=True, withStd=True),
        PCA(k=min(pca_k, dim), inputCol=SCALED, outputCol=REDUCED),
        LogisticRegression(featuresCol=REDUCED, labelCol="label", predictionCol=PREDICTION, probabilityCol=PROBABILITY,
                           rawPredictionCol=RAW_PREDICTION, maxIter=100, regParam=0.01),
    ])
    t0 = time.perf_counter()
    model = pipeline.fit(df)
    bundle = ModelVersion.create(model_dir, "v0001-bench")
    path = bundle.save_model("logreg", model)
    bundle.write_manifest({
        "version": bundle.name, "best": "logreg", "classes": classes, "feature_set": feature_set,
        "models": {"logreg": {"path": path}}, "fitted_by": "bench.model.fit_in_process",
        "train_images": len(images), "fit_seconds": round(time.perf_counter() - t0, 2),
    })
    bundle.mark_current()
    return model_dir


def load_scoring_model(spark, model_dir: Path, text_mode: str = DEFAULT_TEXT_MODE) -> Scorer:
    """The in-worker (numpy) scorer of the model the stream scores with (the store's best);
    the logistic regression's when the best one runs only in Spark (a random forest)."""
    best = load_model(model_dir)
    scorer = Scorer(best, text_mode=text_mode if best.text_branch is not None else "off")
    if scorer.engine == "python":
        return scorer
    fallback = load_logreg(spark, model_dir)
    scorer = Scorer(fallback, text_mode=text_mode if fallback.text_branch is not None else "off")
    if scorer.engine != "python":
        raise ModelError(f"neither {best.name} nor {fallback.name} in {model_dir} can be applied in numpy")
    return scorer


def load_logreg(spark, model_dir: Path) -> LoadedModel:
    """Load the store's logistic-regression pipeline."""
    manifest = read_manifest(resolve_version_dir(model_dir))
    names = list(manifest.get("models", {}))
    which = next((n for n in names if "log" in n.lower()), manifest.get("best"))
    return load_model(model_dir, which=which)
