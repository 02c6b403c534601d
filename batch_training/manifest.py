"""A version's ``manifest.json``: what was trained on what, how it was chosen and how it scores.

The loaders need ``version``, ``classes``, ``best`` and ``models`` (each with its ``path``);
the rest documents the run: the split and the grouped CV, the calibration, the novelty
reference, the cache, the data's fingerprint, the configuration and the library versions.
"""
from __future__ import annotations

import platform
from dataclasses import asdict
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np
import pyspark

from batch_training import selection as sel
from batch_training.config import STACKED, TrainConfig
from batch_training.image_models import ImageModels
from batch_training.ingest import Ingested
from batch_training.listing import Inputs
from batch_training.selection import Selection
from batch_training.shipped import Shipped
from memestream.features import FeatureSet
from memestream.novelty import DEFAULT_QUANTILE

#: What the test figures and the model comparison mean, for a reader of the manifest.
SELECTION_NOTE = ("grouped k-fold CV on the training part (near-duplicates in one fold); random_forest and mlp "
                  "are compared on the grouped test split only; test figures are of models fitted on the training part")


def library_versions() -> dict[str, str]:
    out = {"pyspark": pyspark.__version__, "opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnxruntime", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def best_model(cfg: TrainConfig, models: ImageModels) -> str:
    """The model streams use by default: stacked when trained, else logreg, else the first."""
    return STACKED if STACKED in models.meta else ("logreg" if "logreg" in cfg.models else cfg.models[0])


def split_sizes(classes: list[str], y: np.ndarray, test: np.ndarray) -> dict[str, dict[str, int]]:
    """Images per class on each side of the grouped split."""
    return {split: {c: int(((y == classes.index(c)) & mask).sum()) for c in classes} for split, mask in (("train", ~test), ("test", test))}


def _cv(chosen: Selection) -> dict[str, Any]:
    out: dict[str, Any] = {"image": {"grid": {key: sel.fold_summary(v) for key, v in chosen.image.scores.items()},
                                     "pca_k": chosen.image.pca_k, "reg_param": chosen.image.reg_param}}
    if chosen.cascade is not None:
        out["text"] = {"grid": {key: sel.fold_summary(v) for key, v in chosen.text.scores.items()}, "C": chosen.text.C}
        out["cascade"] = [{kk: vv for kk, vv in r.items() if kk != "fold_accuracy"} | {"fold": sel.fold_summary(r["fold_accuracy"])}
                          for r in chosen.cascade.table]
        out["chosen_cascade"] = chosen.cascade.cascade
    return out


def build_manifest(cfg: TrainConfig, version: str, fs: FeatureSet, inputs: Inputs, data: Ingested, chosen: Selection, sizes: dict[str, Any],
                   models: ImageModels, shipped: Shipped) -> dict[str, Any]:
    """The manifest as written once the models are saved (the test figures and the final fit
    are added to it later)."""
    novelty = models.novelty
    return {
        "version": version,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "feature_set": cfg.feature_set,
        "feature_dim": fs.dim,
        "pca_k": chosen.image.pca_k,
        "reg_param": chosen.image.reg_param,
        "pca_explained_variance": round(sum(models.explained), 6),
        "classes": inputs.classes,
        "best": best_model(cfg, models),
        "selection": SELECTION_NOTE,
        "text": cfg.text,
        "models": models.meta,
        "split": {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "folds": int(chosen.folds.max()) + 1,
                  "dup_distance": cfg.dup_distance, "duplicate_groups": chosen.duplicate_groups, "sizes": sizes},
        "cv": _cv(chosen),
        "calibration_cv_log_loss": shipped.calibration,
        "cv_calibration": shipped.cv_calibration,
        "novelty": {"k": novelty.k, "threshold": round(novelty.threshold, 6), "quantile": DEFAULT_QUANTILE, "reference_rows": int(len(novelty.labels))},
        "cache": {"features_reused": data.cached_features, "texts_reused": data.cached_texts, "texts_ocr_run": data.ocr_run},
        "data": {"root": inputs.root, "fingerprint": inputs.fingerprint, "files": inputs.fingerprint["count"], "skipped": data.skipped},
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "library_versions": library_versions(),
    }
