"""``meme-train``: featurize a labelled folder once, choose a configuration by grouped
cross-validation, fit it with Spark ML and save it as a new model version.

Steps (each a function below):
1. list the labelled files (Spark) and check the classes;
2. ingest: one Spark pass reads, hashes, decodes and embeds each image (reusing the
   store's cache, :mod:`batch_training.ingest`);
3. group near-duplicates and split off a grouped test set (:mod:`batch_training.selection`);
4. grouped k-fold CV on the training part: PCA k and regularisation of the image
   branch; then OCR (a second Spark pass, cached) of just the training images whose
   out-of-fold image confidence is below the largest candidate cascade, and CV of the
   text classifier, the stacker and the cascade threshold;
5. fit the chosen image pipeline (StandardScaler -> PCA -> LogisticRegression) and the
   comparison models (RandomForest, MLP) on the whole training part: scaler and PCA
   computed on the driver as Spark ML models (:func:`fit_prep`), the classifiers with
   Spark ML; the text branch and stacker on the same rows / out-of-fold predictions;
6. save ``[ImageFeaturizer, scaler, pca, classifier]`` per model (``stacked`` adds the
   text branch), load each back, check its featurizer, score the test split through
   the saved model exactly as the stream does (OCR-ing the test images its cascade
   asks for); manifest, report, ``CURRENT``.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import shutil
import sys
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from batch_training.selection import ALWAYS_OCR, DEFAULT_CASCADES, DEFAULT_OCR_BUDGET
from memestream.cli import add_common_flags, env_flag, positive_int, run_main
from memestream.errors import ConfigError, DataError, ModelError
from memestream.features import DEFAULT_FEATURE_SET, FEATURE_SETS
from memestream.neighbours import DEFAULT_NEIGHBOURS, DEFAULT_TEMPERATURE
from memestream.stacking import DEFAULT_TEXT_MODE, TEXT_MODES

log = logging.getLogger(__name__)

MODEL_NAMES = ("logreg", "random_forest", "mlp")
#: The card's pair; the MLP is selectable (it adds ~45 s to a run and was never the most accurate on embeddings)
DEFAULT_MODELS = "logreg,random_forest"
#: What the saved logreg/stacked models are fitted on at the end: every labelled row, or the training part only.
FINAL_FITS = ("all", "train")
#: The saved model that adds the OCR text branch to ``logreg``'s image branch.
STACKED = "stacked"


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in str(text).split(",") if v.strip())


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in str(text).split(",") if v.strip())


@dataclass(frozen=True)
class TrainConfig:
    """Everything one training run depends on (built from flags / env in :func:`main`)."""

    data: str
    model_dir: str
    feature_set: str = DEFAULT_FEATURE_SET
    #: PCA components: a fixed k, or None to choose from ``pca_ks`` by grouped CV.
    pca_k: int | None = None
    pca_ks: tuple[int, ...] = (256, 512)
    reg_params: tuple[float, ...] = (0.03, 0.1, 0.3)
    text: str = DEFAULT_TEXT_MODE
    #: cascade thresholds tried in CV (``--text cascade``); only images whose out-of-fold
    #: image confidence is below the largest are OCR'd for training.
    cascades: tuple[float, ...] = DEFAULT_CASCADES
    #: largest CV share of images the chosen cascade may OCR (the stream's cost)
    ocr_budget: float = DEFAULT_OCR_BUDGET
    #: neighbours in the stacked model's neighbour vote (memestream.neighbours); 0 = none
    neighbours: int = DEFAULT_NEIGHBOURS
    #: post titles as extra text-branch training documents: "auto" (DATA/posts.csv when it
    #: exists), "none", or a CSV path with ``file`` (relative to DATA) and ``title`` columns
    titles: str = "auto"
    folds: int = 5
    dup_distance: int = 6
    seed: int = 42
    test_fraction: float = 0.2
    models: tuple[str, ...] = ("logreg", "random_forest")
    #: "all": after the test split is scored, refit the shipped logreg/stacked model on every
    #: labelled row with the chosen settings; "train": keep the training-part fit
    final_fit: str = "all"
    num_trees: int = 150
    max_depth: int = 12
    mlp_hidden: int = 64
    cache: bool = True
    master: str | None = None
    progress: bool = True
    plots: bool = True

    def __post_init__(self) -> None:
        if self.feature_set not in FEATURE_SETS:
            raise ConfigError(f"--feature-set must be one of {sorted(FEATURE_SETS)}, found {self.feature_set!r}")
        unknown = [m for m in self.models if m not in MODEL_NAMES]
        if unknown or not self.models:
            raise ConfigError(f"--models must list some of {','.join(MODEL_NAMES)}, found {','.join(self.models) or 'nothing'}")
        if not (0 < self.test_fraction < 1):
            raise ConfigError(f"--test-fraction must be in (0, 1), found {self.test_fraction}")
        if self.text not in TEXT_MODES:
            raise ConfigError(f"--text must be one of {'|'.join(TEXT_MODES)}, found {self.text!r}")
        if self.text != "off" and "logreg" not in self.models:
            raise ConfigError("--text cascade|always stacks on the logreg image branch: add logreg to --models or pass --text off")
        if not self.cascades or any(not (0 < c <= ALWAYS_OCR) for c in self.cascades):
            raise ConfigError(f"--cascades must be thresholds in (0, {ALWAYS_OCR}], found {self.cascades}")
        if not (0 < self.ocr_budget <= 1):
            raise ConfigError(f"--ocr-budget must be a share in (0, 1], found {self.ocr_budget}")
        if self.final_fit not in FINAL_FITS:
            raise ConfigError(f"--final-fit must be one of {'|'.join(FINAL_FITS)}, found {self.final_fit!r}")
        if self.neighbours < 0:
            raise ConfigError(f"--neighbours must be 0 (off) or more, found {self.neighbours}")
        if self.folds < 2:
            raise ConfigError(f"--folds must be at least 2, found {self.folds}")
        if not self.reg_params or any(r <= 0 for r in self.reg_params):
            raise ConfigError(f"--reg-params must be positive numbers, found {self.reg_params}")
        if not (0 <= self.dup_distance <= 32):
            raise ConfigError(f"--dup-distance must be 0..32 bits, found {self.dup_distance}")

    @property
    def ks(self) -> tuple[int, ...]:
        return (self.pca_k,) if self.pca_k else self.pca_ks


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


def _classifier(name: str, cfg: TrainConfig, k: int, n_classes: int, reg_param: float):
    from pyspark.ml.classification import LogisticRegression, MultilayerPerceptronClassifier, RandomForestClassifier

    from batch_training.dataset import LABEL_INDEX
    from memestream.classify import PREDICTION, PROBABILITY, RAW_PREDICTION, REDUCED

    common = dict(featuresCol=REDUCED, labelCol=LABEL_INDEX, predictionCol=PREDICTION, probabilityCol=PROBABILITY, rawPredictionCol=RAW_PREDICTION)
    if name == "logreg":
        # L2 on the PCA coordinates as they are (no per-component re-standardisation, which
        # would inflate the small, noisy components): the objective the CV searched.
        return LogisticRegression(maxIter=150, tol=1e-6, regParam=reg_param, elasticNetParam=0.0, standardization=False, **common)
    if name == "random_forest":
        # cacheNodeIds: each level's job gets the rows' node ids from a cached RDD instead of
        # the whole forest so far in its task (5-9 MB a job at 150 trees); same trees, ~15% faster
        return RandomForestClassifier(numTrees=cfg.num_trees, maxDepth=cfg.max_depth, seed=cfg.seed, cacheNodeIds=True, **common)
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


def collect_scores(df) -> tuple[list[int], list[list[float]], list[int]]:
    """``(label index, probability vector, prediction)`` of Spark-scored rows (small sets):
    shared by training's and ``meme-evaluate``'s metrics."""
    from pyspark.ml.functions import vector_to_array
    from pyspark.sql import functions as F

    from batch_training.dataset import LABEL_INDEX
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
    import pyspark

    out = {"pyspark": pyspark.__version__, "opencv": cv2.__version__, "numpy": np.__version__, "python": platform.python_version()}
    for mod in ("onnxruntime", "sklearn"):
        try:
            out[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return out


def summarize_errors(feats, rel_col: str, error_col: str, examples: int = 5) -> dict[str, Any]:
    """Counts of undecodable files by error code plus a few example paths (one small job each)."""
    from pyspark.sql import functions as F

    from memestream.classify import error_code

    bad = feats.filter(F.col(error_col).isNotNull())
    counts = {r["code"]: int(r["count"]) for r in bad.groupBy(error_code(F.col(error_col)).alias("code")).count().collect()}
    sample = [{"path": r[rel_col], "error": r[error_col]} for r in bad.select(rel_col, error_col).orderBy(rel_col).limit(examples).collect()] if counts else []
    return {"count": sum(counts.values()), "by_code": counts, "examples": sample}


# ---------------------------------------------------------------------------------------
# The steps
# ---------------------------------------------------------------------------------------
@dataclass
class Inputs:
    root: str
    labelled: Any  # DataFrame: path, rel_path, label_name, length, modificationTime
    fingerprint: dict[str, Any]
    file_counts: dict[str, int]
    classes: list[str]


def list_inputs(spark, cfg: TrainConfig) -> Inputs:
    """Step 1: the labelled files and their classes (Spark lists; nothing is read yet)."""
    from pyspark.sql import functions as F

    from batch_training import dataset as ds

    root = ds.check_folder(cfg.data)
    listing = ds.list_labelled(spark, root)
    # one Spark job: the listing is small (a row per file), the checks below run on the driver
    cols = ("path", ds.REL_PATH, ds.LABEL, "length", "modificationTime")
    rows = [tuple(r) for r in listing.select(*cols[:-1], F.col("modificationTime").cast("long").alias("mtime"), F.col("modificationTime")).collect()]
    # the titles file (--titles auto) sits there by design: not worth a warning
    titles_file = ds.TITLES_FILE if cfg.titles == "auto" and cfg.text != "off" else None
    loose = sorted(r[1] for r in rows if r[2] is None and r[1] != titles_file)[:5]
    if loose:
        log.warning("skipping files directly under %s (not in a class folder), e.g. %s", root, ", ".join(str(r) for r in loose))
    rows = [r for r in rows if r[2] is not None]
    fp = ds.fingerprint_rows((r[1], r[3], r[4]) for r in rows)
    if fp["count"] == 0:
        raise DataError(f"data folder {root} holds no files in class sub-folders (expected {root}/<class>/<image files>)")
    labelled = spark.createDataFrame([(r[0], r[1], r[2], r[3], r[5]) for r in rows], listing.select(*cols).schema)
    file_counts: dict[str, int] = {}
    for r in rows:
        file_counts[r[2]] = file_counts.get(r[2], 0) + 1
    classes = sorted(file_counts)
    if len(classes) < 2:
        raise DataError(f"data folder {root} has only one class folder ({classes[0]!r}); training needs at least two classes")
    log.info("found %d files in %d classes under %s: %s", fp["count"], len(classes), root, ", ".join(f"{c}={file_counts[c]}" for c in classes))
    return Inputs(root, labelled, fp, file_counts, classes)


def check_decodable(inputs: Inputs, data) -> None:
    skipped = data.skipped
    if skipped["count"]:
        log.warning(
            "skipped %d files that are not decodable images (%s); e.g. %s",
            skipped["count"],
            ", ".join(f"{k}={v}" for k, v in sorted(skipped["by_code"].items())),
            "; ".join(f"{inputs.root}/{e['path']} ({e['error']})" for e in skipped["examples"]),
        )
    good = {c: 0 for c in inputs.classes}
    for label in data.label:
        good[label] += 1
    empty = [c for c in inputs.classes if good[c] == 0]
    if empty:
        raise DataError(
            f"class folder(s) {', '.join(f'{inputs.root}/{c}' for c in empty)} hold no decodable images "
            f"({', '.join(f'{c}: {inputs.file_counts[c]} files' for c in empty)}); expected JPEG/PNG/... images"
        )


@dataclass
class Selection:
    """Step 3-4 outcome: the split, the folds and the chosen configuration."""

    groups: np.ndarray
    test: np.ndarray  # bool per row
    folds: np.ndarray  # fold per training row
    image: Any  # selection.ImageCV
    text: Any = None  # selection.TextCV
    cascade: Any = None  # selection.CascadeCV
    #: OCR text per training row as the text branch was cross-validated and is fitted on:
    #: '' for rows no candidate cascade would OCR (their text is never read)
    train_texts: list[str] | None = None
    ocr_training_images: int = 0  # training rows whose text was read (OCR or cache)
    #: post titles of the training rows (extra text-branch documents), when given
    train_titles: list[str] | None = None
    #: out-of-fold image probabilities as the cascade and stacker see them (blended with
    #: the neighbour vote when it is on)
    image_view: np.ndarray | None = None

    @property
    def duplicate_groups(self) -> int:
        _, counts = np.unique(self.groups, return_counts=True)
        return int((counts > 1).sum())


def select(cfg: TrainConfig, data, y: np.ndarray, n_classes: int, read_texts: Callable[[np.ndarray], None] | None = None) -> Selection:
    """Steps 3-4: near-duplicate groups, grouped test split, grouped CV on the rest.

    The text branch needs the OCR text only of training rows whose out-of-fold image
    confidence is below the largest candidate cascade: ``read_texts(rows)`` makes
    ``data.texts[i]`` available for those (OCR or cache) before the text CV."""
    from batch_training import selection as sel
    from memestream.dedup import near_duplicate_groups

    groups = near_duplicate_groups(data.dhash, data.sha256, cfg.dup_distance)
    test = sel.grouped_split(groups, y, cfg.test_fraction, cfg.seed)
    tr = ~test
    if tr.sum() < 2 * n_classes:
        raise DataError(f"only {int(tr.sum())} training images after the split; add images or lower --test-fraction")
    folds = sel.grouped_folds(groups[tr], y[tr], cfg.folds, cfg.seed)
    ks = tuple(min(k, data.features.shape[1]) for k in cfg.ks)
    image = sel.image_cv(data.features[tr], y[tr], folds, n_classes, ks, cfg.reg_params, cfg.seed)
    out = Selection(groups, test, folds, image)
    if cfg.text != "off":
        from memestream.neighbours import blend

        cascades = (ALWAYS_OCR,) if cfg.text == "always" else tuple(sorted(set(cfg.cascades), reverse=True))
        rows = np.flatnonzero(tr)
        view = image.oof_probs
        if cfg.neighbours:
            votes = sel.neighbour_cv(data.features[tr], y[tr], folds, n_classes, image.pca_k, cfg.neighbours, DEFAULT_TEMPERATURE)
            view = blend(image.oof_probs, votes)
            log.info("neighbour vote (%d neighbours): CV accuracy %.4f alone, %.4f blended with the image branch",
                     cfg.neighbours, float((votes.argmax(axis=1) == y[tr]).mean()), float((view.argmax(axis=1) == y[tr]).mean()))
        out.image_view = view
        out.train_titles = [data.titles[i] for i in rows] if data.titles is not None else None
        reach = max(cascades)
        if out.train_titles is not None and cfg.text == "cascade":
            # With titles the text model has documents of every training meme, and the OCR
            # text of just the images the affordable cascades reach is as good as more of it
            # (five split seeds); without titles a text model trained on fewer OCR texts
            # loses ~0.006, so the largest candidate's reach is kept.
            shares = {c: float((view.max(axis=1) < c).mean()) for c in cascades}
            reach = max([c for c in cascades if shares[c] <= cfg.ocr_budget] or [min(cascades, key=shares.__getitem__)])
        asked = view.max(axis=1) < reach
        if read_texts is not None:
            read_texts(rows[asked])
        texts = [(data.texts[i] or "") if a else "" for i, a in zip(rows, asked)]
        probe = texts if out.train_titles is None else [f"{t}\n{ti}" for t, ti in zip(texts, out.train_titles)]
        if not asked.all() and not _text_in_every_fold(probe, y[tr], folds, n_classes):
            # the text model of each fold needs text of every class; the unsure images alone
            # lacked some (a small or very easy set): read the text of every training image
            log.info("text branch: the unsure training images lack text of some class in some fold; OCR-ing all %d", len(rows))
            if read_texts is not None:
                read_texts(rows[~asked])
            asked = np.ones(len(rows), dtype=bool)
            texts = [data.texts[i] or "" for i in rows]
        log.info("text branch: OCR text of %d of %d training images (image confidence below %g)%s", int(asked.sum()), len(rows), reach,
                 ", plus their post titles" if out.train_titles is not None else "")
        out.train_texts, out.ocr_training_images = texts, int(asked.sum())
        out.text = sel.text_cv(texts, y[tr], folds, n_classes, seed=cfg.seed, extra=out.train_titles)
        has = np.array([bool(t.strip()) for t in texts])
        cascades = tuple(c for c in cascades if c <= reach)  # the others would read text training never read
        out.cascade = sel.cascade_cv(view, out.text.oof_logp, has, y[tr], folds, cascades,
                                     ocr_budget=1.0 if cfg.text == "always" else cfg.ocr_budget)
    return out


def _text_in_every_fold(texts: list[str], y: np.ndarray, folds: np.ndarray, n_classes: int) -> bool:
    """Whether every fold's training part has text (as the text model counts it) of every class."""
    from memestream.text import has_text

    has = np.array([has_text(t) for t in texts], dtype=bool)
    return all(len(set(y[has & (folds != f)].tolist())) == n_classes for f in range(int(folds.max()) + 1))


def _frame(spark, features: np.ndarray, y: np.ndarray, column: str | None = None):
    """Driver arrays -> a Spark DataFrame ``column`` (vector; default ``features``), ``label_index`` (double)."""
    import pyarrow as pa
    from pyspark.ml.functions import array_to_vector
    from pyspark.sql import functions as F

    from batch_training.dataset import LABEL_INDEX
    from memestream.classify import FEATURES

    n, dim = features.shape
    # float64 when the values are already doubles (PCA coordinates), float32 embeddings as they are
    dtype = np.float64 if features.dtype == np.float64 else np.float32
    offsets = pa.array(np.arange(0, (n + 1) * dim, dim, dtype=np.int32))
    table = pa.table({"f": pa.ListArray.from_arrays(offsets, pa.array(features.reshape(-1).astype(dtype))), LABEL_INDEX: y.astype(np.float64)})
    df = spark.createDataFrame(table)
    return df.select(array_to_vector(F.col("f")).alias(column or FEATURES), F.col(LABEL_INDEX))


def fit_prep(spark, features: np.ndarray, k: int):
    """StandardScaler (mean, sample std) and PCA(k) of ``features`` computed on the driver,
    returned as the Spark ML models ``StandardScalerModel`` / ``PCAModel`` (saved and applied
    like fitted ones) plus the PCA coordinates of the rows, ``(scaler, pca, reduced)``.

    Why not ``Pipeline([StandardScaler, PCA]).fit``: Spark's PCA takes the SVD of the d x d
    covariance in the JVM (1280 x 1280 for effnet_lite0; pure-Java LAPACK unless the machine
    has a native one): ~10 s a run, where the eigenvectors of the n x n Gram matrix give the
    same axes (up to sign) in a fraction of a second, the same arithmetic as the grouped CV."""
    from pyspark.ml.common import _py2java
    from pyspark.ml.feature import PCA, PCAModel, StandardScaler, StandardScalerModel
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    from batch_training import selection as sel
    from memestream.classify import FEATURES, REDUCED, SCALED

    x = features.astype(np.float64)
    mean, scale = sel._standardize_fit(x)
    std = x.std(axis=0, ddof=1)
    z = (x - mean) * scale
    basis, ratio = sel.pca_axes(z, k)
    sc = spark.sparkContext
    jvm = sc._jvm

    def java(value):
        return _py2java(sc, value)

    scaler = StandardScalerModel(jvm.org.apache.spark.ml.feature.StandardScalerModel(StandardScaler._randomUID(), java(DenseVector(std)), java(DenseVector(mean))))
    scaler._set(inputCol=FEATURES, outputCol=SCALED, withMean=True, withStd=True)
    scaler._transfer_params_to_java()
    d, kk = basis.shape
    pc = DenseMatrix(d, kk, np.asfortranarray(basis).reshape(-1, order="F"))
    pca = PCAModel(jvm.org.apache.spark.ml.feature.PCAModel(PCA._randomUID(), java(pc), java(DenseVector(ratio))))
    pca._set(inputCol=SCALED, outputCol=REDUCED, k=kk)
    pca._transfer_params_to_java()
    return scaler, pca, z @ basis


def _text_model(cfg: TrainConfig, texts: Sequence[str], titles: Sequence[str] | None, labels: np.ndarray, n_classes: int, C: float):
    """The text branch's classifier: one document per row's OCR text, plus one per post title when given."""
    from memestream import text as textmod

    docs, doc_labels = list(texts), labels
    if titles is not None:
        docs, doc_labels = docs + list(titles), np.concatenate([labels, labels])
    return textmod.TextModel.fit(docs, doc_labels, n_classes, C=C, seed=cfg.seed)


def _neighbour_vote(cfg: TrainConfig, reduced: np.ndarray, labels: np.ndarray, n_classes: int):
    if not cfg.neighbours:
        return None
    from memestream.neighbours import NeighbourVote

    return NeighbourVote.fit(reduced, labels, n_classes, cfg.neighbours, DEFAULT_TEMPERATURE)


def _fit_text_branch(cfg: TrainConfig, data, y: np.ndarray, chosen: Selection, n_classes: int, reduced: np.ndarray):
    """Text model (OCR texts, plus post titles when given), stacker on out-of-fold
    predictions and, when on, the neighbour vote over the training rows' PCA coordinates
    (``reduced``: as the saved scaler/PCA stages give them)."""
    from memestream import text as textmod
    from memestream.stacking import TextBranch

    tr = ~chosen.test
    model = _text_model(cfg, chosen.train_texts, chosen.train_titles, y[tr], n_classes, chosen.text.C)
    view = chosen.image_view  # set by select() whenever the text branch is on
    image_logp = np.log(np.clip(view, 1e-12, 1.0))
    has = np.array([bool(t.strip()) for t in chosen.train_texts]) & (view.max(axis=1) < chosen.cascade.cascade)
    stacker = textmod.Stacker.fit(image_logp, chosen.text.oof_logp, has.astype(np.float64), y[tr], C=chosen.cascade.stacker_c)
    return TextBranch(model, stacker, float(chosen.cascade.cascade), textmod.OCR_VERSION, _neighbour_vote(cfg, reduced, y[tr], n_classes))


def _fit_logreg(spark, cfg: TrainConfig, reduced: np.ndarray, y: np.ndarray, k: int, n_classes: int, reg: float):
    """The image branch's logistic regression on the rows' PCA coordinates, as Spark ML's
    ``LogisticRegressionModel`` (saved and applied like a fitted one); never a constant model.

    Fitted on the driver by the solver and objective the grouped CV scored (mean log loss +
    regParam/2 |w|^2, no re-standardisation; ``selection._logreg``), so the saved model is
    the one the CV chose. Why not ``LogisticRegression.fit``: Spark's L-BFGS runs a Spark job
    per iteration, ~5 s for 1020 x 256 on 2 cores, where this takes a fraction of a second
    for the same optimum (coefficients equal to 1e-7 on a test problem)."""
    from pyspark.ml.classification import LogisticRegression, LogisticRegressionModel
    from pyspark.ml.common import _py2java
    from pyspark.ml.linalg import DenseMatrix, DenseVector

    from batch_training import selection as sel

    found = sorted(set(np.asarray(y).tolist()))
    if found != list(range(n_classes)):
        raise DataError(f"logistic regression needs rows of all {n_classes} classes, found classes {found}")
    model = sel._logreg(reduced, y, reg, cfg.seed)
    coef, intercept = np.asarray(model.coef_, dtype=np.float64), np.asarray(model.intercept_, dtype=np.float64)
    if not np.any(coef):
        # the optimizer gave up at its starting point: a constant model must never be saved as current
        raise ModelError(f"logistic regression did not converge on {len(y)} rows x {k} PCA components "
                         "(all coefficients 0); try another --pca-k or --reg-params")
    sc = spark.sparkContext
    rows, dims = coef.shape  # (1, k) for two classes (binomial), (classes, k) otherwise
    java = sc._jvm.org.apache.spark.ml.classification.LogisticRegressionModel(
        LogisticRegression._randomUID(), _py2java(sc, DenseMatrix(rows, dims, coef.reshape(-1), isTransposed=True)),
        _py2java(sc, DenseVector(intercept)), n_classes, n_classes > 2)
    fitted = LogisticRegressionModel(java)
    template = _classifier("logreg", cfg, k, n_classes, reg)
    fitted._set(**{p.name: template.getOrDefault(p) for p in template.params if template.isSet(p) and fitted.hasParam(p.name)})
    fitted._transfer_params_to_java()
    return fitted


def _write_shipped(models: Path, pipeline, novelty, calibrators: dict[str, tuple[dict[str, Any], dict[str, Any]]], branch) -> list[str]:
    """(Re)write ``models/logreg`` and, with a text branch, ``models/stacked`` (the same image
    pipeline plus ``text_branch/``): pipeline, novelty reference and calibration maps
    (``calibrators``: model -> :func:`save_calibrators` arguments). One writer for the
    training-part fit and the final fit, so both leave the same files. Returns the names."""
    from memestream.calibration import save_calibrators

    pipeline.write().overwrite().save(str(models / "logreg"))
    novelty.save(models / "logreg")
    if "logreg" in calibrators:
        save_calibrators(models / "logreg", *calibrators["logreg"])
    if branch is None:
        return ["logreg"]
    shutil.rmtree(models / STACKED, ignore_errors=True)
    shutil.copytree(models / "logreg", models / STACKED)
    branch.save(models / STACKED / "text_branch")
    save_calibrators(models / STACKED, *calibrators[STACKED])
    return ["logreg", STACKED]


def _final_fit(spark, cfg: TrainConfig, vdir: Path, featurizer, fs, data, y: np.ndarray, chosen: Selection, n_classes: int,
               branch, calibrators: dict[str, tuple[dict[str, Any], dict[str, Any]]], test_read: Sequence[int]):
    """Step 7: refit the shipped image branch (scaler, PCA, logistic regression), the text
    model, the neighbour vote and the novelty reference on every labelled row, with the
    settings the grouped CV chose, and rewrite ``models/logreg`` (and ``models/stacked``).

    Why: the grouped test split has done its job once it is scored; a model that has also
    learned from those memes labels new ones better (on a held-back fifth of doom-crossing,
    0.924 -> 0.932 over five split seeds, lower on none; docs/benchmarks.md). The stacker and the
    calibration maps stay those fitted on the training part's out-of-fold predictions: they
    map a few scores, and refitting them from a second CV over all rows changed nothing.
    ``test_read``: the test rows whose OCR text the cascade read while the test was scored."""
    from dataclasses import replace

    from pyspark.ml import PipelineModel

    from batch_training import selection as sel
    from batch_training.progress import phase
    from memestream.novelty import NoveltyModel

    started = time.monotonic()
    n, k, reg = len(y), chosen.image.pca_k, chosen.image.reg_param
    with phase(spark, f"final fit on all {n} rows: scaler + PCA(k={k}) + logistic regression", cfg.progress):
        scaler_model, pca_model, reduced_np = fit_prep(spark, data.features, k)
        fitted = _fit_logreg(spark, cfg, reduced_np, y, k, n_classes, reg)
    pipeline = PipelineModel(stages=[featurizer, scaler_model, pca_model, fitted])
    folds = sel.grouped_folds(chosen.groups, y, cfg.folds, cfg.seed)
    novelty, _ = NoveltyModel.fit(data.features, y, folds, dims=fs.novelty_dims)
    info: dict[str, Any] = {"rows": n, "params": _params(fitted), "novelty_threshold": round(novelty.threshold, 6)}
    final_branch = None
    if branch is not None:
        # a training row's text as the split fit had it ('' where no cascade would read it),
        # a test row's where the cascade read it while the test was scored
        texts = [""] * n
        for i, t in zip(np.flatnonzero(~chosen.test), chosen.train_texts):
            texts[i] = t
        for i in test_read:
            texts[i] = data.texts[i] or ""
        titles = list(data.titles) if chosen.train_titles is not None else None
        final_branch = replace(branch, text=_text_model(cfg, texts, titles, y, n_classes, chosen.text.C),
                               neighbours=_neighbour_vote(cfg, reduced_np, y, n_classes))
        info["ocr_text_rows"] = sum(1 for t in texts if t)
    info["models"] = _write_shipped(vdir / "models", pipeline, novelty, calibrators, final_branch)
    info["seconds"] = round(time.monotonic() - started, 1)
    log.info("final fit: %s refitted on all %d rows in %.1f s", " and ".join(info["models"]), n, info["seconds"])
    return pipeline, info


def _summary(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m[k] for k in ("ece", "brier", "log_loss", "coverage")}


def _score_saved(loaded, features: np.ndarray, texts_for: Callable[[np.ndarray], list[str]] | None, text_mode: str) -> tuple[np.ndarray, dict[str, Any]]:
    """Probabilities of the test rows through the saved model as the stream applies it
    (numpy stages, then the text branch with its cascade); JVM for a random forest.
    ``texts_for(rows)`` gives the OCR text of the rows the cascade asks for (read then)."""
    from memestream.classify import calibrator_for, local_model
    from memestream.stacking import apply_text_branch

    local = local_model(loaded)
    if local is None:
        return np.empty((0, 0)), {}
    reduced = local.transform(features)
    probs = local.head(reduced)
    info: dict[str, Any] = {}
    branch = loaded.text_branch
    mode = text_mode if branch is not None and texts_for is not None else "off"
    if branch is not None:  # also with mode "off": the stacked model's image view
        ok = np.ones(len(features), dtype=bool)
        found: dict[int, str] = {}
        if mode != "off":  # read (OCR) the texts the cascade asks for in one pass, before scoring
            asked = np.flatnonzero(branch.needs_ocr(branch.image_view(probs, reduced), ok, mode))
            found = dict(zip(asked.tolist(), texts_for(asked)))
        text = apply_text_branch(branch, mode, probs, [None] * len(features), ok, read=found.__getitem__, reduced=reduced)
        probs = text.probs
        if mode != "off":
            info = {"ocr_share": round(float(np.mean([bool(r) for r in text.ocr_ran])), 4),
                    "with_text": round(float(np.mean([bool(t and t.strip()) for t in text.ocr_text])), 4)}
    if loaded.novelty is not None:
        scores, _ = loaded.novelty.score(features)
        info["ood_flagged_share"] = round(float((scores > loaded.novelty.threshold).mean()), 4)
    calibrator = calibrator_for(loaded, mode)
    if calibrator is not None:
        probs = calibrator.apply(probs)
        info["calibration"] = calibrator.method
    return probs, info


def train(spark, cfg: TrainConfig) -> TrainResult:
    """Run one training; writes a new version under ``cfg.model_dir`` and marks it current."""
    import scipy.linalg  # noqa: F401 - load the BLAS/OpenMP libraries now, so the limit below covers them
    import sklearn.linear_model  # noqa: F401
    from threadpoolctl import threadpool_limits

    # The driver's numpy/scikit-learn work (CV, PCA, stacking) is small matrices. With
    # OpenBLAS's default thread per core, its spinning threads compete with the Spark
    # workers and anything else on a small machine: an 816x816 eigh took 14 s on a busy
    # 2-core box and 0.36 s on one thread.
    with threadpool_limits(limits=1):
        return _train(spark, cfg)


def _train(spark, cfg: TrainConfig) -> TrainResult:
    from pyspark.ml import PipelineModel

    from batch_training import selection as sel
    from batch_training.ingest import FeatureCache, ingest, ocr_rows
    from batch_training.dataset import read_titles, titles_path
    from batch_training.metrics import calibration_metrics, classification_metrics, roc_curves
    from batch_training.progress import SparkProgress, phase
    from batch_training.report import summary_table, write_report
    from memestream.calibration import fit_calibration
    from memestream.novelty import NoveltyModel
    from memestream.classify import ERROR, FEATURES, REDUCED, featurizer_of
    from memestream.features import get_feature_set
    from memestream.featurizer import ImageFeaturizer
    from memestream.modelstore import MANIFEST, ModelStore, atomic_write_text, load_model

    started = time.monotonic()
    inputs = list_inputs(spark, cfg)
    classes = inputs.classes
    fs = get_feature_set(cfg.feature_set)
    store = ModelStore(cfg.model_dir)
    version = store.new_version_name()
    vdir = Path(cfg.model_dir) / version
    (vdir / "models").mkdir(parents=True, exist_ok=False)
    asset = None
    if fs.make_asset is not None:
        with phase(spark, f"building the {fs.name} graph", cfg.progress):
            asset = str(fs.make_asset(str(vdir / "assets" / fs.asset)))
    featurizer = ImageFeaturizer(featureSet=cfg.feature_set, inputCol="content", outputCol=FEATURES, errorCol=ERROR, assetPath=asset or "")

    # step 2: ingest
    ocr_version = None
    if cfg.text != "off":
        from memestream import text as textmod

        ocr_version = textmod.OCR_VERSION
    cache = FeatureCache(cfg.model_dir, fs, ocr_version) if cfg.cache else None
    data = ingest(
        spark, inputs.labelled, fs, max_bytes=featurizer.getMaxBytes(), max_pixels=featurizer.getMaxPixels(), asset=asset,
        cache=cache, ocr=cfg.text != "off", progress=cfg.progress,
    )
    check_decodable(inputs, data)
    titles_file = titles_path(cfg.data, cfg.titles) if cfg.text != "off" else None
    if titles_file is not None:
        data.titles = read_titles(titles_file, data.rel_path, required=cfg.titles != "auto")
    y = np.array([classes.index(c) for c in data.label], dtype=np.int64)

    def read_texts(rows: np.ndarray) -> None:
        """OCR (or take from the cache) the texts of these rows: only what the cascade reads."""
        ocr_rows(spark, data, rows, fs, max_bytes=featurizer.getMaxBytes(), max_pixels=featurizer.getMaxPixels(), cache=cache, progress=cfg.progress)

    # steps 3-4: grouped split and grouped CV
    chosen = select(cfg, data, y, len(classes), read_texts)
    test, tr = chosen.test, ~chosen.test
    sizes = {"train": {}, "test": {}}
    for split, mask in (("train", tr), ("test", test)):
        for c in classes:
            sizes[split][c] = int(((y == classes.index(c)) & mask).sum())
    log.info("grouped split (seed %d, %d near-duplicate groups): train=%d test=%d", cfg.seed, chosen.duplicate_groups, int(tr.sum()), int(test.sum()))
    k, reg = chosen.image.pca_k, chosen.image.reg_param

    # step 5: the models, fitted on the whole training part
    with phase(spark, f"scaler + PCA(k={k}) on {int(tr.sum())} rows", cfg.progress):
        scaler_model, pca_model, reduced_np = fit_prep(spark, data.features[tr], k)
    explained = [float(v) for v in pca_model.explainedVariance.toArray()]
    reduced = None  # the rows as a Spark frame, for the models Spark fits (forest, MLP)

    results: dict[str, dict[str, Any]] = {}
    pipelines: dict[str, Any] = {}
    models_meta: dict[str, dict[str, Any]] = {}
    for name in cfg.models:
        fit_started = time.monotonic()
        with SparkProgress(spark, f"fitting {name}", cfg.progress):
            if name == "logreg":
                fitted = _fit_logreg(spark, cfg, reduced_np, y[tr], k, len(classes), reg)
            else:
                if reduced is None:
                    # One partition, lineage cut: every iteration is a Spark job, and a frame made
                    # from driver arrays would ship all its rows inside each job's task (5 MB a time).
                    reduced = _frame(spark, reduced_np, y[tr], column=REDUCED).coalesce(1).localCheckpoint()
                # a forest's per-level jobs are real work: split the rows over the cores
                parallel = spark.sparkContext.defaultParallelism
                rows = reduced.repartition(parallel) if name == "random_forest" and parallel > 1 else reduced
                fitted = _classifier(name, cfg, k, len(classes), reg).fit(rows)
        pipeline = PipelineModel(stages=[featurizer, scaler_model, pca_model, fitted])
        if name != "logreg":  # logreg (and stacked on it) are written below, with their calibration and text branch
            pipeline.write().overwrite().save(str(vdir / "models" / name))
        pipelines[name] = pipeline
        cv = sel.fold_summary(chosen.image.fold_accuracy) if name == "logreg" else None
        results[name] = {"cv": cv}
        models_meta[name] = {"path": f"models/{name}", "params": _params(fitted), "fit_seconds": round(time.monotonic() - fit_started, 1), "cv": cv,
                             "fit_rows": int(tr.sum())}
    novelty, _ = NoveltyModel.fit(data.features[tr], y[tr], chosen.folds, dims=fs.novelty_dims)
    for name in cfg.models:  # the same reference set for every model of the version
        if name != "logreg":
            novelty.save(vdir / "models" / name)
    calibration: dict[str, Any] = {}
    cv_calibration: dict[str, Any] = {}
    saved_calibrators: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}  # model -> save_calibrators' arguments
    branch = None
    if "logreg" in cfg.models:
        image_cal, calibration["image"] = fit_calibration(chosen.image.oof_probs, y[tr], chosen.folds)
        cv_calibration["logreg"] = _summary(calibration_metrics(y[tr], image_cal.apply(chosen.image.oof_probs)))
        saved_calibrators["logreg"] = ({"image": image_cal}, {"image": calibration["image"]})
        models_meta["logreg"]["calibration"] = image_cal.method
    if chosen.cascade is not None:
        branch = _fit_text_branch(cfg, data, y, chosen, len(classes), reduced_np)
        stacked_cal, calibration["stacked"] = fit_calibration(chosen.cascade.oof_probs, y[tr], chosen.folds)
        cv_calibration[STACKED] = _summary(calibration_metrics(y[tr], stacked_cal.apply(chosen.cascade.oof_probs)))
        # the stacked model's output without OCR (--text off) is its image view: LR blended with the vote
        view_cal, view_scores = image_cal, calibration["image"]
        if branch.neighbours is not None:
            view_cal, view_scores = fit_calibration(chosen.image_view, y[tr], chosen.folds)
        saved_calibrators[STACKED] = ({"image": view_cal, "stacked": stacked_cal}, {"image": view_scores, "stacked": calibration["stacked"]})
        pipelines[STACKED] = pipelines["logreg"]
        cv = sel.fold_summary(next(r for r in chosen.cascade.table if r["cascade"] == chosen.cascade.cascade)["fold_accuracy"])
        results[STACKED] = {"cv": cv}
        models_meta[STACKED] = {
            "path": f"models/{STACKED}", "image_branch": "logreg", "text_branch": f"models/{STACKED}/text_branch",
            "cascade": branch.cascade, "text_C": chosen.text.C, "cv": cv, "calibration": stacked_cal.method,
            "ocr_training_images": chosen.ocr_training_images,
            "neighbours": cfg.neighbours,
            "title_documents": sum(1 for t in chosen.train_titles if t) if chosen.train_titles is not None else 0,
            "fit_rows": int(tr.sum()),
        }
    if "logreg" in cfg.models:
        _write_shipped(vdir / "models", pipelines["logreg"], novelty, saved_calibrators, branch)
    best = STACKED if STACKED in models_meta else ("logreg" if "logreg" in cfg.models else cfg.models[0])
    manifest: dict[str, Any] = {
        "version": version,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "feature_set": cfg.feature_set,
        "feature_dim": fs.dim,
        "pca_k": k,
        "reg_param": reg,
        "pca_explained_variance": round(sum(explained), 6),
        "classes": classes,
        "best": best,
        "selection": "grouped k-fold CV on the training part (near-duplicates in one fold); random_forest and mlp "
        "are compared on the grouped test split only; test figures are of models fitted on the training part",
        "text": cfg.text,
        "models": models_meta,
        "split": {"seed": cfg.seed, "test_fraction": cfg.test_fraction, "folds": int(chosen.folds.max()) + 1,
                  "dup_distance": cfg.dup_distance, "duplicate_groups": chosen.duplicate_groups, "sizes": sizes},
        "cv": {
            "image": {"grid": {key: sel.fold_summary(v) for key, v in chosen.image.scores.items()}, "pca_k": k, "reg_param": reg},
            **({"text": {"grid": {key: sel.fold_summary(v) for key, v in chosen.text.scores.items()}, "C": chosen.text.C},
                "cascade": [{kk: vv for kk, vv in r.items() if kk != "fold_accuracy"} | {"fold": sel.fold_summary(r["fold_accuracy"])} for r in chosen.cascade.table],
                "chosen_cascade": chosen.cascade.cascade} if chosen.cascade is not None else {}),
        },
        "calibration_cv_log_loss": calibration,
        "cv_calibration": cv_calibration,
        "novelty": {"k": novelty.k, "threshold": round(novelty.threshold, 6), "quantile": 0.99, "reference_rows": int(len(novelty.labels))},
        "cache": {"features_reused": data.cached_features, "texts_reused": data.cached_texts, "texts_ocr_run": data.ocr_run},
        "data": {"root": inputs.root, "fingerprint": inputs.fingerprint, "files": inputs.fingerprint["count"], "skipped": data.skipped},
        "config": {k2: (list(v) if isinstance(v, tuple) else v) for k2, v in asdict(cfg).items()},
        "library_versions": library_versions(),
    }
    atomic_write_text(vdir / MANIFEST, json.dumps(manifest, indent=2) + "\n")  # lets load_model find the models

    # step 6: the grouped test split through the models as saved
    curves: dict[str, Any] = {}
    test_read: list[int] = []  # test rows whose OCR text the cascade read
    if test.any():
        xt, yt = data.features[test], y[test]
        test_rows = np.flatnonzero(test)

        def texts_for(rows: np.ndarray) -> list[str]:
            read_texts(test_rows[rows])
            test_read.extend(int(i) for i in test_rows[rows])
            return [data.texts[i] or "" for i in test_rows[rows]]
        test_df = None
        for name in models_meta:
            loaded = load_model(vdir, which=name)
            check_same_featurizer(featurizer_of(loaded), featurizer, loaded.path)
            probs, info = _score_saved(loaded, xt, texts_for if data.texts is not None else None, cfg.text)
            if probs.size == 0:  # a stage that runs only in the JVM (random forest)
                if test_df is None:
                    test_df = _frame(spark, xt, yt).cache()
                with SparkProgress(spark, f"scoring {name} on {len(yt)} test images", cfg.progress):
                    yy, pp, yhat = collect_scores(PipelineModel(stages=loaded.pipeline.stages[1:]).transform(test_df))
                metrics = classification_metrics(yy, pp, classes, yhat)
                curves[name] = roc_curves(yy, pp, classes)
            else:
                metrics = classification_metrics(yt, probs, classes)
                curves[name] = roc_curves(yt, probs, classes)
            metrics.update(info)
            results[name]["test"] = metrics
            models_meta[name]["test"] = metrics
        if test_df is not None:
            test_df.unpersist()
    # step 7: the shipped model learns from the test memes too, now that they are scored
    if cfg.final_fit == "all" and test.any() and "logreg" in cfg.models:
        pipeline, final = _final_fit(spark, cfg, vdir, featurizer, fs, data, y, chosen, len(classes), branch, saved_calibrators, sorted(set(test_read)))
        for name in final["models"]:
            pipelines[name] = pipeline
            models_meta[name]["fit_rows"] = final["rows"]
        manifest["final_fit"] = final
        manifest["novelty"].update(threshold=final["novelty_threshold"], reference_rows=final["rows"])
    seconds = time.monotonic() - started
    manifest["train_seconds"] = round(seconds, 1)
    manifest["cache"].update(texts_reused=data.cached_texts, texts_ocr_run=data.ocr_run)  # the test split's OCR too
    atomic_write_text(vdir / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    write_report(
        vdir / "report",
        results,
        classes,
        sizes,
        curves,
        extra={"version": version, "best": best, "feature_set": cfg.feature_set, "skipped": data.skipped,
               "input_files": inputs.file_counts, "cv": manifest["cv"], "final_fit": manifest.get("final_fit")},
        plots=cfg.plots,
    )
    split_doc = {"test": [r for r, t in zip(data.rel_path, test) if t], "train": [r for r, t in zip(data.rel_path, test) if not t]}
    atomic_write_text(vdir / "report" / "split.json", json.dumps(split_doc) + "\n")
    store.mark_current(version)
    log.info("version %s marked current in %s (best: %s)", version, cfg.model_dir, best)
    log.debug("summary:\n%s", summary_table(results, best))
    return TrainResult(version, vdir, best, classes, results, manifest, pipelines, seconds)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="meme-train",
        description="Train meme image classifiers on a labelled folder (one sub-folder per class) with Spark and "
        "save them as a new version of a model directory. Hyper-parameters are chosen by grouped k-fold "
        "cross-validation (near-duplicate images never straddle a split).",
        epilog="examples:\n  meme-sample --out data/sample && meme-train --data data/sample --model-dir models\n"
        "  meme-train --data /data/memes --model-dir models --text off --models logreg\n"
        "  meme-train --data /data/memes --model-dir models --feature-set colorcooc --pca-k 50",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env_flag(parser, "--data", envvar="MEMESTREAM_TRAIN_DATA", required=True, help="labelled folder: DATA/<class>/.../<image>")
    env_flag(parser, "--model-dir", envvar="MEMESTREAM_MODEL_DIR", required=True, help="model store root (a new version is added)")
    env_flag(parser, "--feature-set", envvar="MEMESTREAM_FEATURE_SET", default=DEFAULT_FEATURE_SET, choices=sorted(FEATURE_SETS), help="image features")
    env_flag(parser, "--text", envvar="MEMESTREAM_TEXT", default=DEFAULT_TEXT_MODE, choices=TEXT_MODES,
             help="OCR text branch stacked on the logreg image branch: off, cascade (OCR only when the image branch is unsure) or always")
    env_flag(parser, "--cascades", envvar="MEMESTREAM_CASCADES", default=",".join(f"{c:g}" for c in DEFAULT_CASCADES),
             help="cascade thresholds (image branch top probability) to try in CV; training OCRs only the images whose "
             "out-of-fold confidence is below the largest (higher: more OCR, a slower first run)")
    env_flag(parser, "--ocr-budget", envvar="MEMESTREAM_OCR_BUDGET", type=float, default=DEFAULT_OCR_BUDGET,
             help="largest share of images the chosen cascade may OCR in CV (the stream's speed: ~0.3 CPU-s per OCR'd image); "
             "the most accurate threshold within it wins")
    env_flag(parser, "--neighbours", envvar="MEMESTREAM_NEIGHBOURS", type=int, default=DEFAULT_NEIGHBOURS,
             help="nearest training memes whose labels vote in the stacked model, blended with the image branch (0: off)")
    env_flag(parser, "--titles", envvar="MEMESTREAM_TITLES", default="auto",
             help="post titles as extra training text for the text branch: a CSV with 'file' (relative to --data) and 'title' "
             "columns, 'none', or 'auto' (DATA/posts.csv when it exists). Training only: predictions read the image alone")
    env_flag(parser, "--pca-k", envvar="MEMESTREAM_PCA_K", type=positive_int, default=None, help="fixed PCA components (default: chosen by CV from --pca-ks)")
    env_flag(parser, "--pca-ks", envvar="MEMESTREAM_PCA_KS", default="256,512", help="PCA components to try in CV (clamped to the feature dim)")
    env_flag(parser, "--reg-params", envvar="MEMESTREAM_REG_PARAMS", default="0.03,0.1,0.3", help="logistic regression L2 strengths to try in CV")
    env_flag(parser, "--folds", envvar="MEMESTREAM_FOLDS", type=positive_int, default=5, help="grouped cross-validation folds")
    env_flag(parser, "--dup-distance", envvar="MEMESTREAM_DUP_DISTANCE", type=int, default=6,
             help="dHash bits (of 64) up to which two images count as near-duplicates and stay on one side of every split")
    env_flag(parser, "--seed", envvar="MEMESTREAM_SEED", type=int, default=42, help="seed for the split, the folds and the models")
    env_flag(parser, "--test-fraction", envvar="MEMESTREAM_TEST_FRACTION", type=float, default=0.2, help="share of each class held out for test (whole groups)")
    env_flag(parser, "--models", envvar="MEMESTREAM_MODELS", default=DEFAULT_MODELS, help=f"comma-separated, from {','.join(MODEL_NAMES)}")
    env_flag(parser, "--final-fit", envvar="MEMESTREAM_FINAL_FIT", default="all", choices=FINAL_FITS,
             help="all: once the test split is scored, refit the saved logreg/stacked model on every labelled image with the "
             "chosen settings (more to learn from; the report's test figures are of the training-part fit); train: keep that fit")
    env_flag(parser, "--num-trees", envvar="MEMESTREAM_NUM_TREES", type=positive_int, default=150, help="random forest trees")
    env_flag(parser, "--master", envvar="SPARK_MASTER", default=None, help="Spark master (default local[*])")
    parser.add_argument("--no-cache", action="store_true", help="recompute embeddings and OCR text (default: reuse MODEL_DIR/_cache)")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots in the report")
    add_common_flags(parser)
    return parser


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    try:
        ks, regs, cascades = _ints(args.pca_ks), _floats(args.reg_params), _floats(args.cascades)
    except ValueError:
        raise ConfigError(
            f"--pca-ks, --reg-params and --cascades take comma-separated numbers, found {args.pca_ks!r}, {args.reg_params!r} and {args.cascades!r}"
        ) from None
    return TrainConfig(
        data=args.data,
        model_dir=args.model_dir,
        feature_set=args.feature_set,
        pca_k=int(args.pca_k) if args.pca_k else None,
        pca_ks=ks,
        reg_params=regs,
        text=args.text,
        cascades=cascades,
        ocr_budget=float(args.ocr_budget),
        neighbours=int(args.neighbours),
        titles=str(args.titles),
        folds=int(args.folds),
        dup_distance=int(args.dup_distance),
        seed=int(args.seed),
        test_fraction=float(args.test_fraction),
        models=tuple(m.strip() for m in str(args.models).split(",") if m.strip()),
        num_trees=int(args.num_trees),
        final_fit=str(args.final_fit),
        master=args.master,
        cache=not args.no_cache,
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
    final = result.manifest.get("final_fit")
    if final:
        print(f"saved {' and '.join(final['models'])} refitted on all {final['rows']} images (the figures above are of the "
              "training-part fit; --final-fit train keeps that fit)")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_main(_run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
