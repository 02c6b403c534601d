"""Scenario ``features``: every feature set compared on grouped-CV accuracy and speed.

For each feature set, ``meme-train --text off --models logreg`` on the base data gives
the grouped 5-fold CV accuracy (mean +- std) and the grouped test accuracy; a plain loop
through the stream's scorer (:func:`memestream.classify.score_values`) gives images/s on
one core. The default configuration (``effnet_lite0`` with the OCR text branch in
cascade) is added as its own row, with its OCR share.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from bench.common import Timer, rate
from bench.context import BenchContext
from memestream.testing import run_meme_train
from memestream.classify import score_values
from memestream.features import DEFAULT_FEATURE_SET, FEATURE_SETS
from memestream.modelstore import load_model
from memestream.scorer import Scorer

log = logging.getLogger(__name__)


def _train(ctx: BenchContext, out: Path, feature_set: str, text: str) -> dict[str, Any]:
    extra = ["--feature-set", feature_set, "--text", text, "--models", "logreg", "--no-plots", "-q"]
    if not feature_set.startswith("effnet"):
        extra += ["--pca-ks", "32,50,100"]  # the hand-made sets have 400-1000 dims; their old default was 50
    with Timer() as t:
        run_meme_train(ctx.base().root, out, extra, timeout=None)
    current = (out / "CURRENT").read_text().strip()
    manifest = json.loads((out / current / "manifest.json").read_text())
    best = manifest["models"][manifest["best"]]
    return {"train_seconds": round(t.seconds, 1), "cv": best["cv"], "test_accuracy": round(best["test"]["accuracy"], 4),
            "test_ece": best["test"].get("ece"), "pca_k": manifest["pca_k"], "model": manifest["best"], "store": out}


def _speed(ctx: BenchContext, store: Path, text: str, n: int) -> dict[str, Any]:
    loaded = load_model(store)
    spec = Scorer(loaded, "python", text_mode=text if loaded.text_branch is not None else "off").spec(from_path=False)
    files = ctx.base().files[:n]
    score_values(spec, [files[0].read_bytes()])  # warm-up
    ocr = 0
    cpu0 = time.process_time()
    with Timer() as t:
        for p in files:
            out = score_values(spec, [p.read_bytes()])
            ocr += sum(1 for r in out.text.ocr_ran if r)
    return {"images": len(files), "images_per_s": rate(len(files), t.seconds), "images_per_cpu_s": rate(len(files), time.process_time() - cpu0),
            "ocr_share": round(ocr / len(files), 4)}


def run(ctx: BenchContext) -> dict[str, Any]:
    n = 100 if ctx.config.quick else 400
    rows = []
    configs = [(name, "off") for name in FEATURE_SETS] + [(DEFAULT_FEATURE_SET, "cascade")]
    for name, text in configs:
        log.info("features: %s, text %s", name, text)
        got = _train(ctx, ctx.tmp / f"features-{name}-{text}", name, text)
        speed = _speed(ctx, got.pop("store"), text, n)
        cv = got.pop("cv")
        rows.append({"case": f"{name}, text {text}", "cv_accuracy": cv["mean"], "cv_std": cv["std"], **got, **speed})
    return {"rows": rows, "speed_images": n}
