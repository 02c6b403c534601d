"""The models a version ships for streams: ``logreg`` and ``stacked`` (the same image pipeline
plus the OCR text branch), with their calibration maps, and their final fit on every row.

The text branch is a text model on the OCR text (plus post titles when given), a stacker
on out-of-fold predictions and, when on, a neighbour vote over the training rows' PCA
coordinates (:mod:`memestream.stacking`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np
from pyspark.ml import PipelineModel
from pyspark.sql import SparkSession

from batch_training import selection as sel
from batch_training.config import STACKED, TrainConfig
from batch_training.image_models import ImageModels, classifier, fit_prep, novelty_stats, params_of
from batch_training.ingest import Ingested
from batch_training.metrics import calibration_metrics
from batch_training.progress import phase
from batch_training.selection import Selection
from memestream.calibration import Calibrator, fit_calibration
from memestream.featurizer import ImageFeaturizer
from memestream.features import FeatureSet
from memestream.modelstore import TEXT_BRANCH_DIR, ModelVersion
from memestream.neighbours import DEFAULT_TEMPERATURE, NeighbourVote
from memestream.novelty import NoveltyModel
from memestream.stacking import TextBranch
from memestream.ocr import OCR_VERSION
from memestream.stacking import Stacker
from memestream.text_model import TextModel

log = logging.getLogger(__name__)

#: A model's calibration as saved: ``({output: map}, {output: CV log loss})``.
Calibration = tuple[dict[str, Calibrator], dict[str, Any]]


@dataclass
class Shipped:
    """What the shipped models add to the image pipeline, fitted on the training part."""

    #: per shipped model, its calibration as saved
    calibrators: dict[str, Calibration] = field(default_factory=dict)
    #: the manifest's ``calibration_cv_log_loss`` and ``cv_calibration``
    calibration: dict[str, Any] = field(default_factory=dict)
    cv_calibration: dict[str, Any] = field(default_factory=dict)
    branch: TextBranch | None = None


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("ece", "brier", "log_loss", "coverage")}


def text_model(cfg: TrainConfig, texts: Sequence[str], titles: Sequence[str] | None, labels: np.ndarray, n_classes: int, C: float) -> TextModel:
    """The text branch's classifier: one document per row's OCR text, plus one per post title when given."""
    docs, doc_labels = list(texts), labels
    if titles is not None:
        docs, doc_labels = docs + list(titles), np.concatenate([labels, labels])
    return TextModel.fit(docs, doc_labels, n_classes, C=C, seed=cfg.seed)


def neighbour_vote(cfg: TrainConfig, reduced: np.ndarray, labels: np.ndarray, n_classes: int) -> NeighbourVote | None:
    if not cfg.neighbours:
        return None
    return NeighbourVote.fit(reduced, labels, n_classes, cfg.neighbours, DEFAULT_TEMPERATURE)


def fit_text_branch(cfg: TrainConfig, y: np.ndarray, chosen: Selection, n_classes: int, reduced: np.ndarray) -> TextBranch:
    """Text model (OCR texts, plus post titles when given), stacker on out-of-fold
    predictions and, when on, the neighbour vote over the training rows' PCA coordinates
    (``reduced``: as the saved scaler/PCA stages give them)."""
    tr = ~chosen.test
    model = text_model(cfg, chosen.train_texts, chosen.train_titles, y[tr], n_classes, chosen.text.C)
    view = chosen.image_view  # set by select() whenever the text branch is on
    image_logp = np.log(np.clip(view, 1e-12, 1.0))
    has = np.array([bool(t.strip()) for t in chosen.train_texts]) & (view.max(axis=1) < chosen.cascade.cascade)
    stacker = Stacker.fit(image_logp, chosen.text.oof_logp, has.astype(np.float64), y[tr], C=chosen.cascade.stacker_c)
    return TextBranch(model, stacker, float(chosen.cascade.cascade), OCR_VERSION, neighbour_vote(cfg, reduced, y[tr], n_classes))


def fit_shipped(cfg: TrainConfig, y: np.ndarray, chosen: Selection, n_classes: int, models: ImageModels, bundle: ModelVersion) -> Shipped:
    """Calibration maps (on the training part's out-of-fold predictions) and, with the text
    branch on, the ``stacked`` model; both written next to ``logreg``'s pipeline. Adds
    ``stacked`` to ``models`` (pipelines, manifest entries, results)."""
    out = Shipped()
    if "logreg" not in cfg.models:
        return out
    tr = ~chosen.test
    image_cal, out.calibration["image"] = fit_calibration(chosen.image.oof_probs, y[tr], chosen.folds)
    out.cv_calibration["logreg"] = _summary(calibration_metrics(y[tr], image_cal.apply(chosen.image.oof_probs)))
    out.calibrators["logreg"] = ({"image": image_cal}, {"image": out.calibration["image"]})
    models.meta["logreg"]["calibration"] = image_cal.method
    if chosen.cascade is not None:
        branch = out.branch = fit_text_branch(cfg, y, chosen, n_classes, models.reduced)
        stacked_cal, out.calibration["stacked"] = fit_calibration(chosen.cascade.oof_probs, y[tr], chosen.folds)
        out.cv_calibration[STACKED] = _summary(calibration_metrics(y[tr], stacked_cal.apply(chosen.cascade.oof_probs)))
        # the stacked model's output without OCR (--text off) is its image view: LR blended with the vote
        view_cal, view_scores = image_cal, out.calibration["image"]
        if branch.neighbours is not None:
            view_cal, view_scores = fit_calibration(chosen.image_view, y[tr], chosen.folds)
        out.calibrators[STACKED] = ({"image": view_cal, "stacked": stacked_cal}, {"image": view_scores, "stacked": out.calibration["stacked"]})
        models.pipelines[STACKED] = models.pipelines["logreg"]
        cv = sel.fold_summary(next(r for r in chosen.cascade.table if r["cascade"] == chosen.cascade.cascade)["fold_accuracy"])
        models.results[STACKED] = {"cv": cv}
        models.meta[STACKED] = {
            "path": f"models/{STACKED}", "image_branch": "logreg", "text_branch": f"models/{STACKED}/{TEXT_BRANCH_DIR}",
            "cascade": branch.cascade, "text_C": chosen.text.C, "cv": cv, "calibration": stacked_cal.method,
            "ocr_training_images": chosen.ocr_training_images,
            "neighbours": cfg.neighbours,
            "title_documents": sum(1 for t in chosen.train_titles if t) if chosen.train_titles is not None else 0,
            "fit_rows": int(tr.sum()),
        }
    write_shipped(bundle, models.pipelines["logreg"], models.novelty, out.calibrators, out.branch)
    return out


def write_shipped(bundle: ModelVersion, pipeline: PipelineModel, novelty: NoveltyModel, calibrators: dict[str, Calibration],
                  branch: TextBranch | None) -> list[str]:
    """(Re)write ``models/logreg`` and, with a text branch, ``models/stacked`` (a copy of it
    plus the branch and its own calibration). One writer for the training-part fit and the
    final fit, so both leave the same files. Returns the names."""
    bundle.save_model("logreg", pipeline, novelty=novelty, calibration=calibrators.get("logreg"))
    if branch is None:
        return ["logreg"]
    bundle.save_model(STACKED, copy_of="logreg", text_branch=branch, calibration=calibrators[STACKED])
    return ["logreg", STACKED]


def final_fit(spark: SparkSession, cfg: TrainConfig, bundle: ModelVersion, featurizer: ImageFeaturizer, fs: FeatureSet, data: Ingested,
              y: np.ndarray, chosen: Selection, n_classes: int, shipped: Shipped, test_read: Sequence[int]) -> tuple[PipelineModel, dict[str, Any]]:
    """Step 7: refit the shipped image branch (scaler, PCA, logistic regression), the text
    model, the neighbour vote and the novelty reference on every labelled row, with the
    settings the grouped CV chose, and rewrite ``models/logreg`` (and ``models/stacked``).

    Why: the grouped test split has done its job once it is scored; a model that has also
    learned from those memes labels new ones better (on a held-back fifth of doom-crossing,
    0.924 -> 0.932 over five split seeds, lower on none; docs/benchmarks.md). The stacker and the
    calibration maps stay those fitted on the training part's out-of-fold predictions: they
    map a few scores, and refitting them from a second CV over all rows changed nothing.
    ``test_read``: the test rows whose OCR text the cascade read while the test was scored."""
    started = time.monotonic()
    n, k, reg = len(y), chosen.image.pca_k, chosen.image.reg_param
    with phase(spark, f"final fit on all {n} rows: scaler + PCA(k={k}) + logistic regression", cfg.progress):
        scaler_model, pca_model, reduced_np = fit_prep(data.features, k)
        fitted = classifier("logreg", cfg, k, n_classes, reg).fit_arrays(reduced_np, y, n_classes)
    pipeline = PipelineModel(stages=[featurizer, scaler_model, pca_model, fitted])
    folds = sel.grouped_folds(chosen.groups, y, cfg.folds, cfg.seed)
    novelty, _ = NoveltyModel.fit(data.features, y, folds, dims=fs.novelty_dims, files=data.rel_path,
                                  stats=novelty_stats(data, featurizer, fs))
    info: dict[str, Any] = {"rows": n, "params": params_of(fitted), "novelty_threshold": round(novelty.threshold, 6)}
    final_branch = None
    if shipped.branch is not None:
        # a training row's text as the split fit had it ('' where no cascade would read it),
        # a test row's where the cascade read it while the test was scored
        texts = [""] * n
        for i, t in zip(np.flatnonzero(~chosen.test), chosen.train_texts):
            texts[i] = t
        for i in test_read:
            texts[i] = data.texts[i] or ""
        titles = list(data.titles) if chosen.train_titles is not None else None
        final_branch = replace(shipped.branch, text=text_model(cfg, texts, titles, y, n_classes, chosen.text.C),
                               neighbours=neighbour_vote(cfg, reduced_np, y, n_classes))
        info["ocr_text_rows"] = sum(1 for t in texts if t)
    info["models"] = write_shipped(bundle, pipeline, novelty, shipped.calibrators, final_branch)
    info["seconds"] = round(time.monotonic() - started, 1)
    log.info("final fit: %s refitted on all %d rows in %.1f s", " and ".join(info["models"]), n, info["seconds"])
    return pipeline, info
