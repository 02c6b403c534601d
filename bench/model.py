"""Get a trained model for the benchmark and turn its Spark stages into numpy arrays.

``meme-train`` is used when the batch_training package provides it; otherwise (early in
the project, or with ``--fit-in-bench``) a PipelineModel with the same stage layout
(ImageFeaturizer, StandardScaler, PCA, LogisticRegression) is fitted in-process and
saved as a one-version model store, so ``meme-stream --model`` can load it too.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
import time
from pathlib import Path


from bench.common import LabelledImages
from memestream.errors import ModelError

log = logging.getLogger(__name__)


def meme_train_available() -> bool:
    """True when ``batch_training.train`` (the ``meme-train`` entry point) is importable."""
    try:
        return importlib.util.find_spec("batch_training.train") is not None
    except (ImportError, ValueError):
        return False


def run_meme_train(data: Path, model_dir: Path, extra: list[str] | None = None, timeout: float = 3600) -> subprocess.CompletedProcess:
    """Run ``meme-train`` as a subprocess (same interpreter) and return the finished process."""
    cmd = [sys.executable, "-c", "import sys; from batch_training.train import main; sys.exit(main())",
           "--data", str(data), "--model-dir", str(model_dir), *(extra or [])]
    log.info("running %s", " ".join(cmd[3:]))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)


def fit_in_process(spark, images: LabelledImages, model_dir: Path, feature_set: str, pca_k: int = 32) -> Path:
    """Fit the project's stage layout on ``images`` and save it as version v0001 of a store."""
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.feature import PCA, StandardScaler

    from memestream.classify import FEATURES, PREDICTION, PROBABILITY, RAW_PREDICTION, REDUCED, SCALED
    from memestream.featurizer import ImageFeaturizer
    from memestream.features import get_feature_set
    from memestream.load import read_files

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
    version = "v0001-bench"
    vdir = model_dir / version
    model.write().overwrite().save(str(vdir / "models" / "logreg"))
    manifest = {
        "version": version, "best": "logreg", "classes": classes, "feature_set": feature_set,
        "models": {"logreg": {"path": "models/logreg"}}, "fitted_by": "bench.model.fit_in_process",
        "train_images": len(images), "fit_seconds": round(time.perf_counter() - t0, 2),
    }
    (vdir / "manifest.json").write_text(json.dumps(manifest, indent=2))
    (model_dir / "CURRENT").write_text(version + "\n")
    return model_dir


def load_scoring_model(spark, model_dir: Path):
    """The model the stream scores with (the store's best) and its numpy form; the
    logistic regression when the best one runs only in Spark (a random forest)."""
    from memestream.classify import local_model
    from memestream.modelstore import load_model

    best = load_model(model_dir)
    local = local_model(best)
    if local is not None:
        return best, local
    fallback = load_logreg(spark, model_dir)
    local = local_model(fallback)
    if local is None:
        raise ModelError(f"neither {best.name} nor {fallback.name} in {model_dir} can be applied in numpy")
    return fallback, local


def load_logreg(spark, model_dir: Path):
    """Load the store's logistic-regression pipeline."""
    from memestream.modelstore import load_model, read_manifest, resolve_version_dir

    manifest = read_manifest(resolve_version_dir(model_dir))
    names = list(manifest.get("models", {}))
    which = next((n for n in names if "log" in n.lower()), manifest.get("best"))
    return load_model(model_dir, which=which)
