"""``meme-train``: featurize a labelled folder once, choose a configuration by grouped
cross-validation, fit it and save it as a new model version.

The steps, each in the module named for it:

1. list the labelled files (Spark) and check the classes (:mod:`batch_training.listing`);
2. ingest: one Spark pass reads, hashes, decodes and embeds each image, reusing the
   store's cache (:mod:`batch_training.ingest`);
3. group near-duplicates, split off a grouped test set and run grouped k-fold CV on the
   training part: PCA k and regularisation of the image branch, then OCR (a second Spark
   pass, cached) of just the training images the cascade could ask for, and CV of the text
   classifier, the stacker and the cascade threshold (:mod:`batch_training.selection`);
4. fit the chosen image pipeline (StandardScaler -> PCA -> LogisticRegression, fitted on the
   driver as Spark ML models, :mod:`batch_training.driver_fit`) and the comparison models
   (random forest, MLP) on the training part (:mod:`batch_training.image_models`), then the
   calibration maps and the text branch of the shipped models (:mod:`batch_training.shipped`);
5. save them as a version (:class:`memestream.modelstore.ModelVersion`) with its manifest
   (:mod:`batch_training.manifest`), load each back and score the test split through it as
   the stream does (:mod:`batch_training.scoring`);
6. refit the shipped models on every labelled image (``--final-fit all``), write the report
   and mark the version ``CURRENT``.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from batch_training.config import TrainConfig, build_parser, config_from_args
from batch_training.report import summary_table
from memestream.abspath import is_uri
from memestream.cli import run_main

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a run produced: paths, metrics and the in-memory fitted pipelines."""

    version: str
    #: a local folder, or the version's URI when --model-dir is a Hadoop URI
    version_dir: Path | str
    best: str
    classes: list[str]
    results: dict[str, dict[str, Any]]
    manifest: dict[str, Any]
    pipelines: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def train(spark, cfg: TrainConfig) -> TrainResult:
    """Run one training; writes a new version under ``cfg.model_dir`` and marks it current."""
    # lazy, like every import of the steps below: see _train
    import scipy.linalg  # noqa: F401 - load the BLAS/OpenMP libraries now, so the limit below covers them
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    # The driver's numpy/scikit-learn work (CV, PCA, stacking) is small matrices. With
    # OpenBLAS's default thread per core, its spinning threads compete with the Spark
    # workers and anything else on a small machine: an 816x816 eigh took 14 s on a busy
    # 2-core box and 0.36 s on one thread.
    with threadpool_limits(limits=1):
        if is_uri(cfg.model_dir):
            return _train_to_uri(spark, cfg)
        return _train(spark, cfg)


def _train_to_uri(spark, cfg: TrainConfig) -> TrainResult:
    """``--model-dir`` is a Hadoop URI: train into a local staging store (a per-URI folder of
    the cache, so its feature cache ``_cache/`` serves the next run), then publish the version
    through Hadoop FS: the version folder first, ``CURRENT`` last (:meth:`ModelStore.publish`)."""
    import shutil
    from dataclasses import replace

    from memestream import uris
    from memestream.modelstore import ModelStore

    store = ModelStore(cfg.model_dir)
    staging = uris.cache_dir("train", cfg.model_dir)
    staging.mkdir(parents=True, exist_ok=True)
    result = _train(spark, replace(cfg, model_dir=str(staging)), version_name=store.new_version_name(), at_uri=True)
    target = store.publish(result.version_dir)
    shutil.rmtree(result.version_dir, ignore_errors=True)  # published; the staging store keeps only its _cache
    log.info("version %s published to %s", result.version, target)
    return replace(result, version_dir=target)


def _train(spark, cfg: TrainConfig, version_name: str | None = None, at_uri: bool = False) -> TrainResult:
    # Imported here, deliberately: Spark ML, scikit-learn and OpenCV cost over a second of CPU
    # to import (1.6 s against 0.3 s for the flags), which `meme-train --help` and a flag
    # error should not wait for.
    from batch_training.dataset import read_titles, titles_path
    from batch_training.image_models import fit_image_models
    from batch_training.ingest import FeatureCache, ingest, ocr_rows
    from batch_training.listing import check_decodable, list_inputs
    from batch_training.manifest import build_manifest, split_sizes
    from batch_training.progress import phase
    from batch_training.report import write_report
    from batch_training.scoring import score_test_split
    from batch_training.selection import select
    from batch_training.shipped import final_fit, fit_shipped
    from memestream.classify import ERROR, FEATURES
    from memestream.features import get_feature_set
    from memestream.featurizer import ImageFeaturizer
    from memestream.modelstore import ModelVersion, atomic_write_text
    from memestream.ocr import OCR_VERSION

    started = time.monotonic()
    inputs = list_inputs(spark, cfg)
    stream = None
    if cfg.labels:
        from batch_training import stream_labels

        stream = stream_labels.read_stream_labels(cfg.labels)
        inputs = stream_labels.add_stream_images(spark, inputs, stream)
    fs = get_feature_set(cfg.feature_set)
    bundle = ModelVersion.create(cfg.model_dir, version_name)
    asset = None
    if fs.make_asset is not None:
        with phase(spark, f"building the {fs.name} graph", cfg.progress):
            asset = str(fs.make_asset(str(bundle.path / "assets" / fs.asset)))
    featurizer = ImageFeaturizer(featureSet=cfg.feature_set, inputCol="content", outputCol=FEATURES, errorCol=ERROR, assetPath=asset or "")
    limits = dict(max_bytes=featurizer.getMaxBytes(), max_pixels=featurizer.getMaxPixels())

    # step 2: ingest
    cache = FeatureCache(cfg.model_dir, fs, OCR_VERSION if cfg.text != "off" else None) if cfg.cache else None
    data = ingest(spark, inputs.labelled, fs, **limits, asset=asset, cache=cache, ocr=cfg.text != "off", progress=cfg.progress)
    merged = None
    if stream is not None:
        data, merged_classes, merged = stream_labels.merge(data, stream, inputs.classes, cfg.min_class_images)
        inputs = stream_labels.with_classes(inputs, merged_classes, data)
    classes, n_classes = inputs.classes, len(inputs.classes)
    check_decodable(inputs, data)
    titles_file = titles_path(cfg.data, cfg.titles) if cfg.text != "off" else None
    if titles_file is not None:
        data.titles = read_titles(titles_file, data.rel_path, required=cfg.titles != "auto")
    y = np.array([classes.index(c) for c in data.label], dtype=np.int64)

    def read_texts(rows: np.ndarray) -> None:
        """OCR (or take from the cache) the texts of these rows: only what the cascade reads."""
        ocr_rows(spark, data, rows, fs, **limits, cache=cache, progress=cfg.progress)

    # step 3: grouped split and grouped CV
    chosen = select(cfg, data, y, n_classes, read_texts)
    sizes = split_sizes(classes, y, chosen.test)
    log.info("grouped split (seed %d, %d near-duplicate groups): train=%d test=%d", cfg.seed, chosen.duplicate_groups,
             int((~chosen.test).sum()), int(chosen.test.sum()))

    # champion / challenger: is this version, on the same folds, not worse than the current one?
    from batch_training.champion import compare

    promotion = ({"promoted": True, "reason": "the model store is at a URI: not compared"} if at_uri
                 else compare(cfg, data, y, classes, chosen, merged.before if merged is not None else data.label))
    log.info("promotion: %s", promotion["reason"])

    # steps 4-5: the models, fitted on the training part and saved; the manifest lets them load
    models = fit_image_models(spark, cfg, featurizer, fs, data, y, chosen, n_classes, bundle)
    shipped = fit_shipped(cfg, y, chosen, n_classes, models, bundle)
    manifest = build_manifest(cfg, bundle.name, fs, inputs, data, chosen, sizes, models, shipped)
    if merged is not None:
        manifest["stream_labels"] = merged.manifest(stream.version, cfg.min_class_images)
    manifest["promotion"] = promotion
    bundle.write_manifest(manifest)
    curves, test_read = score_test_split(spark, cfg, bundle, featurizer, data, y, classes, chosen, models, read_texts)

    # step 6: the shipped model learns from the test memes too, now that they are scored
    if cfg.final_fit == "all" and chosen.test.any() and "logreg" in cfg.models:
        pipeline, final = final_fit(spark, cfg, bundle, featurizer, fs, data, y, chosen, n_classes, shipped, sorted(set(test_read)))
        for name in final["models"]:
            models.pipelines[name] = pipeline
            models.meta[name]["fit_rows"] = final["rows"]
        manifest["final_fit"] = final
        manifest["novelty"].update(threshold=final["novelty_threshold"], reference_rows=final["rows"])
    seconds = time.monotonic() - started
    manifest["train_seconds"] = round(seconds, 1)
    manifest["cache"].update(texts_reused=data.cached_texts, texts_ocr_run=data.ocr_run)  # the test split's OCR too
    bundle.write_manifest(manifest)
    best = manifest["best"]
    write_report(
        bundle.path / "report", models.results, classes, sizes, curves,
        extra={"version": bundle.name, "best": best, "feature_set": cfg.feature_set, "skipped": data.skipped,
               "input_files": inputs.file_counts, "cv": manifest["cv"], "final_fit": manifest.get("final_fit"),
               "stream_labels": manifest.get("stream_labels"), "promotion": promotion},
        plots=cfg.plots,
    )
    split = {"test": [r for r, t in zip(data.rel_path, chosen.test) if t], "train": [r for r, t in zip(data.rel_path, chosen.test) if not t]}
    atomic_write_text(bundle.path / "report" / "split.json", json.dumps(split) + "\n")
    if promotion["promoted"]:
        bundle.mark_current()
        log.info("version %s marked current in %s (best: %s)", bundle.name, cfg.model_dir, best)
    else:
        log.warning("version %s saved but not marked current: %s", bundle.name, promotion["reason"])
    log.debug("summary:\n%s", summary_table(models.results, best))
    return TrainResult(bundle.name, bundle.path, best, classes, models.results, manifest, models.pipelines, seconds)


def _run(args: argparse.Namespace) -> int:
    cfg = config_from_args(args)
    # lazy for the same reason as in _train (this module loads Spark through it)
    from batch_training.dataset import precheck_classes
    from memestream.spark import session_for, stop_spark

    precheck_classes(cfg.data)  # fail before the ~10 s Spark start-up
    spark, created = session_for("meme-train", cfg.master)
    try:
        result = train(spark, cfg)
    finally:
        if created:
            stop_spark(spark)
    print(summary_table(result.results, result.best))
    print(f"best: {result.best}   version: {result.version_dir}   ({result.seconds:.1f} s)")
    merged = result.manifest.get("stream_labels")
    if merged:
        waiting = ", ".join(f"{c} has {n} (needs {merged['min_class_images']})" for c, n in merged["waiting_classes"].items())
        print(f"stream labels: {merged['new_images']} new image(s), {merged['overrides']} folder label(s) overridden, "
              f"new classes: {', '.join(merged['new_classes']) or 'none'}" + (f"; waiting: {waiting}" if waiting else ""))
    promotion = result.manifest.get("promotion") or {}
    print(("promoted: " if promotion.get("promoted", True) else "not promoted: ") + promotion.get("reason", ""))
    final = result.manifest.get("final_fit")
    if final:
        print(f"saved {' and '.join(final['models'])} refitted on all {final['rows']} images (the figures above are of the "
              "training-part fit; --final-fit train keeps that fit)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
