"""Scenario ``limit``: what one core can do with no Spark at all.

A plain loop reads each file, runs the exact shared feature code
(:func:`memestream.features.featurize_batch`) and predicts with the saved model's
coefficients in numpy. Every Spark scenario is compared to this rate, measured in the
same run, so the ratios survive a noisy shared machine.
"""
from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from bench.common import Timer, percentiles, rate
from bench.context import BenchContext
from memestream.decode import decode
from memestream.features import featurize_batch, get_feature_set

log = logging.getLogger(__name__)


def run(ctx: BenchContext) -> dict[str, Any]:
    from bench.model import load_scoring_model

    base = ctx.base()
    files = list(base.files)
    if ctx.config.limit_images:
        files = files[: ctx.config.limit_images]
    spark = ctx.get_spark()
    loaded, local = load_scoring_model(spark, ctx.model_dir())  # the stream's own model, as numpy
    from memestream.classify import featurizer_of

    fs = get_feature_set(featurizer_of(loaded).getFeatureSet())  # what the saved model computes
    predict = lambda m: local.predict(m)[1]  # noqa: E731
    n = len(files)

    # warm-up (imports, OpenCV's first-call costs) outside the timings
    featurize_batch([files[0].read_bytes()], fs)

    with Timer() as t_read:
        payloads = [p.read_bytes() for p in files]
    with Timer() as t_decode:
        images = [decode(b, color=fs.color, min_side=fs.min_side)[0] for b in payloads]
    with Timer() as t_extract:
        for img in images:
            fs.extract(img)
    del images
    with Timer() as t_feat:
        matrix, errors = featurize_batch(payloads, fs)
    with Timer() as t_pred:
        pred = predict(matrix)

    # end to end, one image at a time (the latency a single-image service would see)
    lat: list[float] = []
    cpu0 = time.process_time()
    start = time.perf_counter()
    for p in files:
        t0 = time.perf_counter()
        m, _ = featurize_batch([p.read_bytes()], fs)
        predict(m)
        lat.append(time.perf_counter() - t0)
    e2e = time.perf_counter() - start
    e2e_cpu = time.process_time() - cpu0

    truth = np.array([loaded.classes.index(lab) if lab in loaded.classes else -1 for lab in base.labels[:n]])
    ok = np.array([e is None for e in errors])
    accuracy = float((pred[ok] == truth[ok]).mean()) if ok.any() else None
    agreement = _agreement_with_spark(spark, loaded, files[: min(n, 200)], predict, fs)

    per_image_ms = {k: round(v * 1000, 3) for k, v in percentiles(lat).items()}
    out = {
        "images": n,
        "feature_set": fs.name,
        "model_version": loaded.version,
        "model": loaded.name,
        "bad_images": int((~ok).sum()),
        "read_images_per_s": rate(n, t_read.seconds),
        "decode_images_per_s": rate(n, t_decode.seconds),
        "extract_images_per_s": rate(n, t_extract.seconds),
        "featurize_images_per_s": rate(n, t_feat.seconds),
        "predict_images_per_s": rate(n, t_pred.seconds),
        # CPU-time rates of each pass: steadier than wall time on a loaded machine
        "per_cpu_s": {
            "read": rate(n, t_read.cpu), "decode": rate(n, t_decode.cpu), "extract": rate(n, t_extract.cpu),
            "featurize": rate(n, t_feat.cpu), "predict": rate(n, t_pred.cpu),
        },
        "images_per_s_per_core": rate(n, e2e),
        "images_per_cpu_s": rate(n, e2e_cpu),
        "ideal_machine_images_per_s": round(rate(n, e2e) * (ctx.cpu_count()), 1),
        "latency_ms": per_image_ms,
        "share_of_time": {
            "read": round(t_read.seconds / e2e, 3),
            "decode": round(t_decode.seconds / e2e, 3),
            "extract": round(t_extract.seconds / e2e, 3),
            "predict": round(t_pred.seconds / e2e, 3),
        },
        "numpy_accuracy_on_train_images": None if accuracy is None else round(accuracy, 4),
        "numpy_vs_spark_agreement": agreement,
    }
    out["rows"] = [
        {"case": "read bytes", "images": n, "images_per_s": out["read_images_per_s"], "images_per_cpu_s": rate(n, t_read.cpu)},
        {"case": f"decode only ({fs.name})", "images": n, "images_per_s": out["decode_images_per_s"], "images_per_cpu_s": rate(n, t_decode.cpu)},
        {"case": "extract only", "images": n, "images_per_s": out["extract_images_per_s"], "images_per_cpu_s": rate(n, t_extract.cpu)},
        {"case": "featurize_batch (decode+extract)", "images": n, "images_per_s": out["featurize_images_per_s"], "images_per_cpu_s": rate(n, t_feat.cpu)},
        {"case": "numpy predict", "images": n, "images_per_s": out["predict_images_per_s"], "images_per_cpu_s": rate(n, t_pred.cpu)},
        {"case": "end to end, 1 core (latency ms)", "images": n, "images_per_s": out["images_per_s_per_core"],
         "images_per_cpu_s": out["images_per_cpu_s"], "seconds": round(e2e, 2), **per_image_ms},
    ]
    return out


def _agreement_with_spark(spark, loaded, files, predict, fs) -> float | None:
    """Share of images where the numpy baseline predicts the same class as the Spark model."""
    from memestream.classify import classify

    if not files:
        return None
    rows = [(str(p), p.read_bytes()) for p in files]
    df = spark.createDataFrame(rows, "path string, content binary")
    got = {r["path"]: r["label"] for r in classify(df, loaded).select("path", "label").collect()}
    matrix, errors = featurize_batch([b for _, b in rows], fs)
    mine = predict(matrix)
    same = [got[p] == loaded.classes[k] for (p, _), k, e in zip(rows, mine, errors) if e is None and got.get(p) is not None]
    return round(sum(same) / len(same), 4) if same else None
