"""``meme-evaluate``: score a saved model on any labelled folder (all images, no split).

Goes through :func:`memestream.modelstore.load_model` and :class:`memestream.scorer.Scorer`,
exactly as the stream does. A class folder the model does not know is an error (the
metrics would be meaningless for it); classes of the model missing from the folder are
fine (their per-class recall/AUC are reported as undefined).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Any, Sequence

from batch_training.metrics import classification_metrics
from batch_training.report import metrics_table
from memestream.cli import add_common_flags, env_flag, run_main
from memestream.errors import DataError
from memestream.inference import ENGINES
from memestream.abspath import is_uri
from memestream.modelstore import load_model, resolve_version_dir
from memestream.spark import session_for, stop_spark
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES

TEXT_RAN = "ocr_ran"

log = logging.getLogger(__name__)


def evaluate(
    spark,
    model_path: str,
    data: str,
    version: str | None = None,
    which: str | None = None,
    text_mode: str = DEFAULT_TEXT_MODE,
    engine: str = "auto",
) -> dict[str, Any]:
    """Metrics dict of one saved model on a labelled folder (plus model/version/skipped info).

    Scores through :class:`memestream.scorer.Scorer`, the stream's own scorer (same engine
    choice, text branch and cascade), so the probabilities are the stream's.
    """
    # lazy: Spark and the scorer load only once the flags are checked (`--help` stays quick)
    from pyspark.sql import functions as F

    from batch_training import dataset as ds
    from batch_training.listing import summarize_errors
    from memestream.scorer import Scorer

    root = ds.check_folder(data)
    loaded = load_model(model_path, version=version, which=which)
    listing = ds.list_labelled(spark, root).filter(F.col(ds.LABEL).isNotNull()).select("path", ds.REL_PATH, ds.LABEL)
    counts = {r[ds.LABEL]: int(r["count"]) for r in listing.groupBy(ds.LABEL).count().collect()}
    if not counts:
        raise DataError(f"data folder {root} holds no files in class sub-folders (expected {root}/<class>/<image files>)")
    unknown = sorted(set(counts) - set(loaded.classes))
    if unknown:
        raise DataError(
            f"data folder {root} has class folder(s) {', '.join(unknown)} that model {loaded.version}/{loaded.name} "
            f"does not know; it knows: {', '.join(loaded.classes)}"
        )
    log.info("scoring %d files under %s with %s/%s", sum(counts.values()), root, loaded.version, loaded.name)
    scored = Scorer(loaded, engine, text_mode, input="path").score(ds.with_label_index(listing, loaded.classes)).cache()
    try:
        skipped = summarize_errors(scored, ds.REL_PATH, "error")
        good = scored.filter(F.col("error").isNull())
        rows = good.select(F.col(ds.LABEL_INDEX).cast("int").alias("y"), "probability_vector", F.col(TEXT_RAN).alias("ocr")).collect()
    finally:
        scored.unpersist()
    y = [r["y"] for r in rows]
    p = [list(r["probability_vector"]) for r in rows]
    ocr = [bool(r["ocr"]) for r in rows]
    if skipped["count"]:
        log.warning("skipped %d undecodable files (%s); e.g. %s", skipped["count"], skipped["by_code"], [e["path"] for e in skipped["examples"]])
    if not y:
        raise DataError(f"data folder {root} holds no decodable images ({skipped['by_code']})")
    metrics = classification_metrics(y, p, loaded.classes)
    extra = {"text": text_mode if loaded.text_branch is not None else "none", "ocr_share": round(sum(ocr) / len(ocr), 4)}
    return {"model_version": loaded.version, "model": loaded.name, "data": root, "skipped": skipped, **extra, **metrics}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-evaluate",
        description="Score a saved model on a labelled folder (one sub-folder per class) and print its metrics.",
        epilog="examples:\n  meme-evaluate --model models --data data/holdout\n  meme-evaluate --model models/v0002-20261127T130501Z --data data/holdout --which random_forest --json",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--model", envvar="MEMESTREAM_MODEL_DIR", required=True, help="model store root (uses CURRENT) or one version folder")
    env_flag(parser, "--data", envvar="MEMESTREAM_EVAL_DATA", required=True, help="labelled folder: DATA/<class>/.../<image>")
    parser.add_argument("--model-version", default=None, help="version name inside the store (default: CURRENT)")
    parser.add_argument("--which", default=None, help="model name inside the version (default: the best one)")
    env_flag(parser, "--text", envvar="MEMESTREAM_TEXT", default=DEFAULT_TEXT_MODE, choices=TEXT_MODES,
             help="use the model's OCR text branch: off, cascade (as trained) or always")
    parser.add_argument("--scoring", default="auto", choices=ENGINES, help="scoring engine, as meme-stream's")
    parser.add_argument("--json", action="store_true", help="print one JSON object on stdout (logs go to stderr)")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master (default local[*])")
    add_common_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    # lazy, as in evaluate()
    from batch_training.dataset import precheck_classes

    precheck_classes(args.data, min_classes=1)
    if not is_uri(args.model):  # a Hadoop URI is read through Spark: checked when the model loads
        resolve_version_dir(args.model, args.model_version)  # fail before the Spark start-up
    spark, created = session_for("meme-evaluate", args.master)
    try:
        result = evaluate(spark, args.model, args.data, args.model_version, args.which, args.text, args.scoring)
    finally:
        if created:
            stop_spark(spark)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        print(f"model {result['model_version']}/{result['model']} on {result['data']}")
        print(metrics_table(result))
        if result["skipped"]["count"]:
            print(f"skipped {result['skipped']['count']} undecodable files: {result['skipped']['by_code']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
