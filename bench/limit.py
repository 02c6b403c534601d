"""Scenario ``limit``: what one core can do with no Spark at all.

A plain loop runs the stream's own per-image computation
(:func:`memestream.classify.score_values` with :class:`memestream.scorer.Scorer`'s spec:
read, decode, embed, the model's stages in
numpy, and the text branch with its cascade), one image at a time, in the run's text
mode and image-only. Every Spark scenario is compared to this rate, measured in the
same run, so the ratios survive a noisy shared machine.
"""
from __future__ import annotations

import dataclasses

import logging
import time
from typing import Any

import numpy as np

from bench.common import Timer, percentiles, rate
from bench.context import BenchContext
from bench.model import load_scoring_model
from memestream.classify import classify, featurizer_of, score_values
from memestream.isolation import DEFAULT_TIME_CAP_S
from memestream.decode import decode
from memestream.features import featurize_batch, get_feature_set
from memestream.scorer import Scorer
from memestream.stacking import DEFAULT_TEXT_MODE

log = logging.getLogger(__name__)


def _text_mode(ctx: BenchContext) -> str:
    """The text mode the streams of this run use (``--stream-arg --text X``), default cascade."""
    args = list(ctx.config.stream_args)
    for i, a in enumerate(args):
        if a == "--text" and i + 1 < len(args):
            return args[i + 1]
        if a.startswith("--text="):
            return a.split("=", 1)[1]
    return DEFAULT_TEXT_MODE


def _loop(spec, files, mode_label: str) -> tuple[dict[str, Any], list[float], float, float, Any]:
    """One image at a time through the stream's own per-image computation."""
    lat: list[float] = []
    ocr = 0
    cpu0 = time.process_time()
    start = time.perf_counter()
    last = None
    for p in files:
        t0 = time.perf_counter()
        last = score_values(spec, [p.read_bytes()])
        lat.append(time.perf_counter() - t0)
        ocr += sum(1 for r in last.text.ocr_ran if r)
    e2e = time.perf_counter() - start
    return {"mode": mode_label, "ocr_share": round(ocr / max(1, len(files)), 4)}, lat, e2e, time.process_time() - cpu0, last


def _time_cap_cost(spec, payloads: list[bytes], rounds: int = 3) -> dict[str, Any]:
    """What the poison-pill time cap (memestream.isolation.time_cap: an interval timer armed
    around each decode and each call's model stages) costs on the normal path: the image-only
    loop with and without it, alternated in rounds so both see the same machine load."""
    capped = dataclasses.replace(spec, time_cap=DEFAULT_TIME_CAP_S)
    seconds = {"without": 0.0, "with": 0.0}
    for _ in range(rounds):
        for name, s in (("without", spec), ("with", capped)):
            start = time.process_time()
            for data in payloads:
                score_values(s, [data])
            seconds[name] += time.process_time() - start
    n = len(payloads) * rounds
    return {"images": n, "cpu_s_without": round(seconds["without"], 3), "cpu_s_with": round(seconds["with"], 3),
            "ratio": round(seconds["with"] / seconds["without"], 4) if seconds["without"] else None,
            "images_per_cpu_s_without": rate(n, seconds["without"]), "images_per_cpu_s_with": rate(n, seconds["with"])}


def run(ctx: BenchContext) -> dict[str, Any]:
    base = ctx.base()
    files = list(base.files)
    if ctx.config.limit_images:
        files = files[: ctx.config.limit_images]
    spark = ctx.get_spark()
    scorer = load_scoring_model(spark, ctx.model_dir(), _text_mode(ctx))  # the stream's own model, as numpy
    loaded, local, mode = scorer.model, scorer.local, scorer.text_mode
    feat = featurizer_of(loaded)
    fs = get_feature_set(feat.getFeatureSet())  # what the saved model computes
    asset = feat.getAssetPath()
    n = len(files)

    # warm-up (imports, OpenCV's and ONNX Runtime's first-call costs, the OCR engine) outside the timings
    spec = scorer.spec(from_path=False)
    spec_off = Scorer(loaded, "python", text_mode="off").spec(from_path=False)
    score_values(spec, [files[0].read_bytes()])
    score_values(Scorer(loaded, "python", text_mode="always").spec(from_path=False) if mode != "off" else spec, [files[0].read_bytes()])

    with Timer() as t_read:
        payloads = [p.read_bytes() for p in files]
    with Timer() as t_decode:
        images = [decode(b, color=fs.color, min_side=fs.min_side)[0] for b in payloads]
    with Timer() as t_extract:
        for i in range(0, len(images), 16):
            chunk = images[i : i + 16]
            fs.extract_images(chunk, asset)
    del images
    with Timer() as t_feat:
        matrix, errors = featurize_batch(payloads, fs, asset=asset)
    with Timer() as t_pred:
        pred = local.predict(matrix)[1]

    # end to end, one image at a time (the latency a single-image service would see), in
    # the run's text mode and image-only
    loops = {}
    info, lat, e2e, e2e_cpu, _ = _loop(spec, files, mode)
    loops[mode] = (info, lat, e2e, e2e_cpu)
    if mode != "off":
        loops["off"] = _loop(spec_off, files, "off")[:4]

    cap_cost = _time_cap_cost(spec_off, payloads[: min(n, 400)])

    truth = np.array([loaded.classes.index(lab) if lab in loaded.classes else -1 for lab in base.labels[:n]])
    ok = np.array([e is None for e in errors])
    accuracy = float((pred[ok] == truth[ok]).mean()) if ok.any() else None
    agreement = _agreement_with_spark(spark, loaded, files[: min(n, 200)], lambda m: local.predict(m)[1], fs, asset)

    per_image_ms = {k: round(v * 1000, 3) for k, v in percentiles(lat).items()}
    out = {
        "images": n,
        "feature_set": fs.name,
        "model_version": loaded.version,
        "model": loaded.name,
        "text_mode": mode,
        "ocr_share": info["ocr_share"],
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
        "by_text_mode": {
            m: {"images_per_s_per_core": rate(n, e), "ideal_machine_images_per_s": round(rate(n, e) * ctx.cpu_count(), 1),
                "images_per_cpu_s": rate(n, c), "ocr_share": i["ocr_share"],
                "latency_ms": {k: round(v * 1000, 3) for k, v in percentiles(la).items()}}
            for m, (i, la, e, c) in loops.items()
        },
        "share_of_time": {
            "read": round(t_read.seconds / e2e, 3),
            "decode": round(t_decode.seconds / e2e, 3),
            "extract": round(t_extract.seconds / e2e, 3),
            "predict": round(t_pred.seconds / e2e, 3),
        },
        "numpy_accuracy_on_train_images": None if accuracy is None else round(accuracy, 4),
        "numpy_vs_spark_agreement": agreement,
        "time_cap_cost": cap_cost,
    }
    out["rows"] = [
        {"case": "read bytes", "images": n, "images_per_s": out["read_images_per_s"], "images_per_cpu_s": rate(n, t_read.cpu)},
        {"case": f"decode only ({fs.name})", "images": n, "images_per_s": out["decode_images_per_s"], "images_per_cpu_s": rate(n, t_decode.cpu)},
        {"case": "extract only", "images": n, "images_per_s": out["extract_images_per_s"], "images_per_cpu_s": rate(n, t_extract.cpu)},
        {"case": "featurize_inputs (decode+extract)", "images": n, "images_per_s": out["featurize_images_per_s"], "images_per_cpu_s": rate(n, t_feat.cpu)},
        {"case": "numpy predict", "images": n, "images_per_s": out["predict_images_per_s"], "images_per_cpu_s": rate(n, t_pred.cpu)},
    ]
    for m, row in out["by_text_mode"].items():
        out["rows"].append({"case": f"end to end, 1 core, text {m} (OCR {row['ocr_share']:.0%}; latency ms)", "images": n,
                            "images_per_s": row["images_per_s_per_core"], "images_per_cpu_s": row["images_per_cpu_s"], **row["latency_ms"]})
    out["rows"].append({"case": f"time cap on the normal path (image only, CPU; with/without {DEFAULT_TIME_CAP_S:g}s cap)",
                        "images": cap_cost["images"], "images_per_cpu_s": cap_cost["images_per_cpu_s_with"],
                        "ratio": cap_cost["ratio"]})
    return out


def _agreement_with_spark(spark, loaded, files, predict, fs, asset) -> float | None:
    """Share of images where the numpy baseline predicts the same class as the Spark model."""
    if not files:
        return None
    rows = [(str(p), p.read_bytes()) for p in files]
    df = spark.createDataFrame(rows, "path string, content binary")
    got = {r["path"]: r["label"] for r in classify(df, loaded).select("path", "label").collect()}
    matrix, errors = featurize_batch([b for _, b in rows], fs, asset=asset)
    mine = predict(matrix)
    same = [got[p] == loaded.classes[k] for (p, _), k, e in zip(rows, mine, errors) if e is None and got.get(p) is not None]
    return round(sum(same) / len(same), 4) if same else None
