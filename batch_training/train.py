"""``meme-train``: featurize a labelled folder once, fit several classifiers, keep the best.

Flow (all heavy work in Spark): list files -> read + featurize each file in one UDF call
(:meth:`ImageFeaturizer.transform_paths`) -> cache the feature vectors -> seeded
stratified split -> StandardScaler + PCA fitted on the train split -> one classifier per
``--models`` entry -> pick the best by validation accuracy -> save each as
``[ImageFeaturizer, scaler, pca, classifier]`` -> load each back from disk, check its
featurizer stage computes the training features, and score the cached test features with
its saved stages -> manifest, report, ``CURRENT``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from memestream.cli import add_common_flags, env_flag, positive_int, run_main
from memestream.errors import ConfigError, DataError, ModelError
from memestream.features import DEFAULT_FEATURE_SET, FEATURE_SETS

log = logging.getLogger(__name__)

MODEL_NAMES = ("logreg", "random_forest", "mlp")
DEFAULT_MODELS = "logreg,random_forest,mlp"


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (built from flags / env in :func:`main`)."""

    data: str
    model_dir: str
    feature_set: str = DEFAULT_FEATURE_SET
    pca_k: int = 50
    seed: int = 42
    test_fraction: float = 0.2
    val_fraction: float = 0.2
    models: tuple[str, ...] = ("logreg", "random_forest", "mlp")
    num_trees: int = 150
    max_depth: int = 12
    reg_param: float = 0.01
    mlp_hidden: int = 64
    master: str | None = None
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"--feature-set must be one of {sorted(FEATURE_SETS)}, found {self.feature_set!r}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(f"--models must list some of {','.join(MODEL_NAMES)}, found {','.join(self.models) or 'nothing'}")
        if not (0 < self.test_fraction < 1) or not (0 <= self.val_fraction < 1):
            raise ConfigError(
                f"--test-fraction must be in (0, 1) and --val-fraction in [0, 1), found {self.test_fraction} and {self.val_fraction}"
            )


@dataclass
class TrainResult:
    """What a run produced: paths, metrics and the in-memory fitted pipelines."""

    version: str
    version_dir: Path
    best: str
    classes: list[str]
    results: dict[str, dict[str, Any]]
    manifest: dict[str, Any]
    pipelines: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def get_spark(master: str | None, app: str):
    """Reuse a running session (tests, notebooks) or build one; returns ``(spark, created)``."""
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession() or SparkSession._instantiatedSession
    if active is not None:
        return active, False
    from memestream.spark import build_spark

    return build_spark(app, master), True


def _classifier(name: str, cfg: TrainConfig, k: int, n_classes: int):
    from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier, RandomForestClassifier

    from batch_training.dataset import LABEL_INDEX
    from memestream.classify import PREDICTION, PROBABILITY, RAW_PREDICTION, REDUCED

    common = dict(featuresCol=REDUCED, labelCol=LABEL_INDEX, predictionCol=PREDICTION, probabilityCol=PROBABILITY, rawPredictionCol=RAW_PREDICTION)
    if name == "logreg":
        return LogisticRegression(family="multinomial", maxIter=200, regParam=cfg.reg_param, elasticNetParam=0.0, **common)
    if name == "random_forest":
        return RandomForestClassifier(numTrees=cfg.num_trees, maxDepth=cfg.max_depth, seed=cfg.seed, **common)
    if name == "mlp":
        return MultilayerPerceptronClassifier(layers=[k, cfg.mlp_hidden, n_classes], maxIter=300, blockSize=128, seed=cfg.seed, **common)
    raise ConfigError(f"unknown model {name!r}")


def _params(stage) -> dict[str, Any]:
    """Explicitly set params of a fitted stage, JSON-safe."""
    out: dict[str, Any] = {}
    for param, value in stage.extractParamMap().items():
        if stage.isSet(param):
            out[param.name] = value if isinstance(value, (int, float, str, bool, type(None))) else (list(value) if isinstance(value, (list, tuple)) else str(value))
    return out


def _collect_scores(df) -> tuple[list[int], list[list[float]], list[int]]:
    """Collect ``(label index, probability vector, prediction)`` for scored rows (small)."""
    from pyspark.ml.functions import vector_to_array

    from batch_training.dataset import LABEL_INDEX
    from pyspark.sql import functions as F

    from memestream.classify import PREDICTION, PROBABILITY

    rows = df.select(
        F.col(LABEL_INDEX).cast("int").alias("y"), vector_to_array(F.col(PROBABILITY)).alias("p"), F.col(PREDICTION).cast("int").alias("yhat")
    ).collect()
    return [r["y"] for r in rows], [list(r["p"]) for r in rows], [r["yhat"] for r in rows]


def check_same_featurizer(saved, trained, where) -> None:
    """The saved featurizer stage must be configured exactly like the one that made the features."""
    params = ("featureSet", "maxBytes", "maxPixels", "inputCol", "outputCol", "errorCol")
    diff = {p: (saved.getOrDefault(p), trained.getOrDefault(p)) for p in params if saved.getOrDefault(p) != trained.getOrDefault(p)}
    if diff:
        detail = "; ".join(f"{p}: saved {a!r}, trained with {b!r}" for p, (a, b) in diff.items())
        raise ModelError(f"the featurizer saved in {where} differs from the one used for training ({detail})")


def library_versions() -> dict[str, str]:
    import cv2
    import numpy
    import pyspark

    return {"pyspark": pyspark.__version__, "opencv": cv2.__version__, "numpy": numpy.__version__, "python": platform.python_version()}


def summarize_errors(feats, rel_col: str, error_col: str, examples: int = 5) -> dict[str, Any]:
    """Counts of undecodable files by error code plus a few example paths (one small job each)."""
    from pyspark.sql import functions as F

    from memestream.classify import error_code

    bad = feats.filter(F.col(error_col).isNotNull())
    counts = {r["code"]: int(r["count"]) for r in bad.groupBy(error_code(F.col(error_col)).alias("code")).count().collect()}
    sample = [{"path": r[rel_col], "error": r[error_col]} for r in bad.select(rel_col, error_col).orderBy(rel_col).limit(examples).collect()] if counts else []
    return {"count": sum(counts.values()), "by_code": counts, "examples": sample}


def train(spark, cfg: TrainConfig) -> TrainResult:
    """Run one training; writes a new version under ``cfg.model_dir`` and marks it current."""
    from pyspark.ml import Pipeline, PipelineModel
    from pyspark.ml.feature import PCA, StandardScaler
    from pyspark.sql import functions as F

    from batch_training import dataset as ds
    from batch_training.metrics import classification_metrics, roc_curves
    from batch_training.progress import SparkProgress
    from batch_training.report import summary_table, write_report
    from memestream.classify import ERROR, FEATURES, REDUCED, SCALED, featurizer_of
    from memestream.featurizer import ImageFeaturizer
    from memestream.modelstore import MANIFEST, ModelStore, atomic_write_text, load_model

    started = time.monotonic()
    root = ds.check_folder(cfg.data)
    listing = ds.list_labelled(spark, root)
    loose = listing.filter(F.col(ds.LABEL).isNull()).select(ds.REL_PATH).limit(5).collect()
    if loose:
        log.warning("skipping files directly under %s (not in a class folder), e.g. %s", root, ", ".join(str(r[0]) for r in loose))
    labelled = listing.filter(F.col(ds.LABEL).isNotNull())
    fp = ds.fingerprint(labelled)
    if fp["count"] == 0:
        raise DataError(f"data folder {root} holds no files in class sub-folders (expected {root}/<class>/<image files>)")
    file_counts = {r[ds.LABEL]: int(r["count"]) for r in labelled.groupBy(ds.LABEL).count().collect()}
    classes = sorted(file_counts)
    if len(classes) < 2:
        raise DataError(f"data folder {root} has only one class folder ({classes[0]!r}); training needs at least two classes")
    log.info("found %d files in %d classes under %s: %s", fp["count"], len(classes), root, ", ".join(f"{c}={file_counts[c]}" for c in classes))

    featurizer = ImageFeaturizer(featureSet=cfg.feature_set, inputCol="content", outputCol=FEATURES, errorCol=ERROR)
    # one Python pass per image: read + decode + featurize (the bytes never go to the JVM)
    feats = featurizer.transform_paths(labelled.select("path", ds.REL_PATH, ds.LABEL), "path").cache()
    with SparkProgress(spark, f"featurizing {fp['count']} images ({cfg.feature_set})", cfg.progress):
        good_counts = {r[ds.LABEL]: int(r["count"]) for r in feats.filter(F.col(ERROR).isNull()).groupBy(ds.LABEL).count().collect()}
    skipped = summarize_errors(feats, ds.REL_PATH, ERROR)
    if skipped["count"]:
        log.warning(
            "skipped %d files that are not decodable images (%s); e.g. %s",
            skipped["count"],
            ", ".join(f"{k}={v}" for k, v in sorted(skipped["by_code"].items())),
            "; ".join(f"{root}/{e['path']} ({e['error']})" for e in skipped["examples"]),
        )
    empty = [c for c in classes if good_counts.get(c, 0) == 0]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(f'{root}/{c}' for c in empty)} hold no decodable images "
            f"({', '.join(f'{c}: {file_counts[c]} files' for c in empty)}); expected JPEG/PNG/... images"
        )

    split = ds.stratified_split(ds.with_label_index(feats.filter(F.col(ERROR).isNull()), classes), cfg.test_fraction, cfg.val_fraction, cfg.seed).cache()
    sizes: dict[str, dict[str, int]] = {ds.TRAIN: {}, ds.VALIDATION: {}, ds.TEST: {}}
    for r in split.groupBy(ds.SPLIT, ds.LABEL).count().collect():
        sizes[r[ds.SPLIT]][r[ds.LABEL]] = int(r["count"])
    feats.unpersist()
    n_train = sum(sizes[ds.TRAIN].values())
    if n_train == 0:
        raise DataError(f"no training rows left after the split of {root}; lower --test-fraction/--val-fraction or add images")
    log.info("split (seed %d): %s", cfg.seed, "; ".join(f"{s}={sum(c.values())}" for s, c in sizes.items()))

    dim = featurizer.dim()
    k = min(cfg.pca_k, dim, n_train)
    if k != cfg.pca_k:
        log.info("PCA k clamped from %d to %d (feature dim %d, %d training rows)", cfg.pca_k, k, dim, n_train)
    train_df = split.filter(F.col(ds.SPLIT) == ds.TRAIN)
    with SparkProgress(spark, f"fitting scaler + PCA(k={k}) on {n_train} rows", cfg.progress):
        prep = Pipeline(stages=[StandardScaler(withMean=True, withStd=True, inputCol=FEATURES, outputCol=SCALED), PCA(k=k, inputCol=SCALED, outputCol=REDUCED)]).fit(train_df)
        reduced = prep.transform(split).select("path", ds.REL_PATH, ds.LABEL, ds.LABEL_INDEX, ds.SPLIT, FEATURES, REDUCED).cache()
        reduced.count()
    split.unpersist()
    scaler_model, pca_model = prep.stages
    explained = [float(v) for v in pca_model.explainedVariance.toArray()]

    store = ModelStore(cfg.model_dir)
    version = store.new_version_name()
    vdir = Path(cfg.model_dir) / version
    (vdir / "models").mkdir(parents=True, exist_ok=False)
    results: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, Any] = {}
    models_meta: dict[str, dict[str, Any]] = {}
    val_rows = reduced.filter(F.col(ds.SPLIT) == ds.VALIDATION)
    for name in cfg.models:
        clf = _classifier(name, cfg, k, len(classes))
        fit_started = time.monotonic()
        with SparkProgress(spark, f"fitting {name}", cfg.progress):
            fitted = clf.fit(reduced.filter(F.col(ds.SPLIT) == ds.TRAIN))
        fit_seconds = round(time.monotonic() - fit_started, 1)
        val_metrics = None
        if sizes[ds.VALIDATION]:
            y, p, yhat = _collect_scores(fitted.transform(val_rows))
            val_metrics = classification_metrics(y, p, classes, yhat)
            log.info("%s: validation accuracy %.4f, weighted F1 %.4f", name, val_metrics["accuracy"], val_metrics["f1_weighted"])
        pipeline = PipelineModel(stages=[featurizer, scaler_model, pca_model, fitted])
        path = vdir / "models" / name
        pipeline.write().overwrite().save(str(path))
        log.info("saved %s to %s", name, path)
        pipelines[name] = pipeline
        results[name] = {"validation": val_metrics}
        models_meta[name] = {"path": f"models/{name}", "params": _params(fitted), "fit_seconds": fit_seconds, "validation": val_metrics}

    def rank(name: str) -> tuple[float, float]:
        m = results[name]["validation"] or {}
        return (m.get("accuracy") or 0.0, m.get("f1_weighted") or 0.0)

    best = max(cfg.models, key=rank)  # max keeps the first of equals: --models order breaks full ties
    manifest: dict[str, Any] = {
        "version": version,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "feature_set": cfg.feature_set,
        "feature_dim": dim,
        "pca_k": k,
        "pca_explained_variance": round(sum(explained), 6),
        "classes": classes,
        "best": best,
        "selection": "highest validation accuracy, ties by weighted F1",
        "models": models_meta,
        "split": {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "val_fraction": cfg.val_fraction, "sizes": sizes},
        "data": {"root": root, "fingerprint": fp, "files": fp["count"], "skipped": skipped},
        "config": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in asdict(cfg).items()},
        "library_versions": library_versions(),
    }
    atomic_write_text(vdir / MANIFEST, json.dumps(manifest, indent=2) + "\n")  # lets load_model find the models

    # Test metrics through the models as saved: each is loaded back from disk, its featurizer
    # stage must compute exactly the cached features, and its saved scaler/PCA/classifier
    # score them (re-decoding the test images once per model cost ~2.5 s each).
    curves: dict[str, Any] = {}
    if sizes[ds.TEST]:
        test_feats = reduced.filter(F.col(ds.SPLIT) == ds.TEST).select(ds.LABEL_INDEX, FEATURES)
        for name in cfg.models:
            loaded = load_model(vdir, which=name)
            check_same_featurizer(featurizer_of(loaded), featurizer, loaded.path)
            with SparkProgress(spark, f"scoring {name} (loaded from {loaded.path}) on {sum(sizes[ds.TEST].values())} test images", cfg.progress):
                y, p, yhat = _collect_scores(PipelineModel(stages=loaded.pipeline.stages[1:]).transform(test_feats))
            results[name]["test"] = classification_metrics(y, p, classes, yhat)
            models_meta[name]["test"] = results[name]["test"]
            curves[name] = roc_curves(y, p, classes)
    reduced.unpersist()
    seconds = time.monotonic() - started
    manifest["train_seconds"] = round(seconds, 1)
    atomic_write_text(vdir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    write_report(
        vdir / "report",
        results,
        classes,
        sizes,
        curves,
        extra={"version": version, "best": best, "feature_set": cfg.feature_set, "skipped": skipped, "input_files": file_counts},
        plots=cfg.plots,
    )
    store.mark_current(version)
    log.info("version %s marked current in %s (best: %s)", version, cfg.model_dir, best)
    log.debug("summary:\n%s", summary_table(results, best))
    return TrainResult(version, vdir, best, classes, results, manifest, pipelines, seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-train",
        description="Train meme image classifiers on a labelled folder (one sub-folder per class) with Spark and "
        "save them as a new version of a model directory.",
        epilog="examples:\n  meme-sample --out data/sample && meme-train --data data/sample --model-dir models\n"
        "  meme-train --data /data/memes --model-dir models --feature-set gray32 --models logreg --pca-k 30",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--data", envvar="MEMESTREAM_TRAIN_DATA", required=True, help="labelled folder: DATA/<class>/.../<image>")
    env_flag(parser, "--model-dir", envvar="MEMESTREAM_MODEL_DIR", required=True, help="model store root (a new version is added)")
    env_flag(parser, "--feature-set", envvar="MEMESTREAM_FEATURE_SET", default=DEFAULT_FEATURE_SET, choices=sorted(FEATURE_SETS), help="image features")
    env_flag(parser, "--pca-k", envvar="MEMESTREAM_PCA_K", type=positive_int, default=50, help="PCA components (clamped to feature dim / rows)")
    env_flag(parser, "--seed", envvar="MEMESTREAM_SEED", type=int, default=42, help="seed for the split and the models")
    env_flag(parser, "--test-fraction", envvar="MEMESTREAM_TEST_FRACTION", type=float, default=0.2, help="share of each class held out for test")
    env_flag(parser, "--val-fraction", envvar="MEMESTREAM_VAL_FRACTION", type=float, default=0.2, help="share of the rest used for validation")
    env_flag(parser, "--models", envvar="MEMESTREAM_MODELS", default=DEFAULT_MODELS, help=f"comma-separated, from {','.join(MODEL_NAMES)}")
    env_flag(parser, "--num-trees", envvar="MEMESTREAM_NUM_TREES", type=positive_int, default=150, help="random forest trees")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master (default local[*])")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots in the report")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    return TrainConfig(
        data=args.data,
        model_dir=args.model_dir,
        feature_set=args.feature_set,
        pca_k=int(args.pca_k),
        seed=int(args.seed),
        test_fraction=float(args.test_fraction),
        val_fraction=float(args.val_fraction),
        models=tuple(m.strip() for m in str(args.models).split(",") if m.strip()),
        num_trees=int(args.num_trees),
        master=args.master,
        progress=not args.quiet and sys.stderr.isatty(),
        plots=not args.no_plots,
    )


def _run(args: argparse.Namespace) -> int:
    from batch_training.report import summary_table

    cfg = config_from_args(args)
    from batch_training.dataset import precheck_classes

    precheck_classes(cfg.data)  # fail before the ~10 s Spark start-up
    spark, created = get_spark(cfg.master, "meme-train")
    try:
        result = train(spark, cfg)
    finally:
        if created:
            spark.stop()
    print(summary_table(result.results, result.best))
    print(f"best: {result.best}   version: {result.version_dir}   ({result.seconds:.1f} s)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
