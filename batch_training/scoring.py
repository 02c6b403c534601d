"""Step 6: the grouped test split through the models as saved, the way a stream applies them.

Each model is loaded back from its version folder, its featurizer checked against the one
that made the training features, and the test rows scored by :class:`memestream.scorer.Scorer`
(numpy stages, then the text branch with its cascade, OCR-ing the test images it asks for;
Spark ML for a random forest).
"""
from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import numpy as np
from pyspark.sql import SparkSession

from batch_training.config import TrainConfig
from batch_training.image_models import ImageModels
from batch_training.ingest import Ingested
from batch_training.metrics import classification_metrics, roc_curves
from batch_training.progress import SparkProgress
from batch_training.selection import Selection
from memestream.classify import featurizer_of
from memestream.errors import ModelError
from memestream.featurizer import ImageFeaturizer
from memestream.modelstore import ModelVersion
from memestream.scorer import FeatureScores, Scorer


def check_same_featurizer(saved: ImageFeaturizer, trained: ImageFeaturizer, where: Any) -> None:
    """The saved featurizer stage must be configured exactly like the one that made the features."""
    params = ("featureSet", "maxBytes", "maxPixels", "inputCol", "outputCol", "errorCol")
    diff = {p: (saved.getOrDefault(p), trained.getOrDefault(p)) for p in params if saved.getOrDefault(p) != trained.getOrDefault(p)}
    if diff:
        detail = "; ".join(f"{p}: saved {a!r}, trained with {b!r}" for p, (a, b) in diff.items())
        raise ModelError(f"the featurizer saved in {where} differs from the one used for training ({detail})")


def _details(scores: FeatureScores, read_text: bool) -> dict[str, Any]:
    """What the test figures add besides the metrics: OCR and novelty shares, the calibration."""
    info: dict[str, Any] = {}
    if read_text and scores.text is not None:
        info = {"ocr_share": round(float(np.mean([bool(r) for r in scores.text.ocr_ran])), 4),
                "with_text": round(float(np.mean([bool(t and t.strip()) for t in scores.text.ocr_text])), 4)}
    if scores.ood is not None:
        info["ood_flagged_share"] = round(float(scores.ood.mean()), 4)
    if scores.calibration is not None:
        info["calibration"] = scores.calibration
    return info


def score_test_split(spark: SparkSession, cfg: TrainConfig, bundle: ModelVersion, featurizer: ImageFeaturizer, data: Ingested, y: np.ndarray,
                     classes: list[str], chosen: Selection, models: ImageModels,
                     read_texts: Callable[[np.ndarray], None]) -> tuple[dict[str, Any], list[int]]:
    """Score every saved model of the version on the test rows; their metrics go into
    ``models.meta[name]["test"]`` and ``models.results``. Returns the ROC curves per model and
    the test rows whose OCR text a cascade read (``read_texts(rows)`` reads them)."""
    curves: dict[str, Any] = {}
    test_read: list[int] = []
    if not chosen.test.any():
        return curves, test_read
    xt, yt = data.features[chosen.test], y[chosen.test]
    test_rows = np.flatnonzero(chosen.test)

    def texts_for(rows: np.ndarray) -> list[str]:
        read_texts(test_rows[rows])
        test_read.extend(int(i) for i in test_rows[rows])
        return [data.texts[i] or "" for i in test_rows[rows]]

    with_text = data.texts is not None
    for name in models.meta:
        loaded = bundle.load(name)
        check_same_featurizer(featurizer_of(loaded), featurizer, loaded.path)
        scorer = Scorer(loaded, text_mode=cfg.text if with_text else "off")
        progress = SparkProgress(spark, f"scoring {name} on {len(yt)} test images", cfg.progress) if scorer.engine == "spark" else nullcontext()
        with progress:
            scores = scorer.score_features(xt, texts_for if with_text else None,
                                           data.image_stats[chosen.test] if data.image_stats is not None else None)
        metrics = classification_metrics(yt, scores.probs, classes, scores.prediction)
        curves[name] = roc_curves(yt, scores.probs, classes)
        metrics.update(_details(scores, with_text and loaded.text_branch is not None and scorer.text_mode != "off"))
        models.results[name]["test"] = metrics
        models.meta[name]["test"] = metrics
    return curves, test_read
