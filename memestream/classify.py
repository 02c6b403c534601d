"""Apply a saved model to image bytes and shape the labelled output.

Shared by streaming (every micro-batch) and evaluation, so both label rows the same
way: class name instead of an index, a probability per class, and a null label with an
error for inputs that could not be decoded.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Sequence

import numpy as np
import pyarrow as pa
from pyspark.ml.functions import vector_to_array
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from memestream.decode import DEFAULT_MAX_BYTES
from memestream.featurizer import ImageFeaturizer
from memestream.inference import LocalModel, NotCompilable, compile_stages
from memestream.modelstore import LoadedModel

log = logging.getLogger(__name__)

# Column names used inside saved pipelines.
FEATURES = "features"
SCALED = "scaled_features"
REDUCED = "pca_features"
PREDICTION = "prediction"
PROBABILITY = "probability"
RAW_PREDICTION = "raw_prediction"
ERROR = "error"

_INTERNAL = (FEATURES, SCALED, REDUCED, PREDICTION, PROBABILITY, RAW_PREDICTION)


def featurizer_of(model: LoadedModel) -> ImageFeaturizer:
    stage = model.pipeline.stages[0]
    if not isinstance(stage, ImageFeaturizer):
        raise TypeError(f"first stage of {model.path} is {type(stage).__name__}, expected ImageFeaturizer")
    return stage


def error_code(col: Column) -> Column:
    """``"truncated: ..."`` -> ``"truncated"``."""
    return F.when(col.isNotNull(), F.split(col, ":", 2).getItem(0))


def label_exprs(
    classes: Sequence[str], error_col: str = ERROR, prediction: Column | None = None, probabilities: Column | None = None
) -> dict[str, Column]:
    """Expressions turning a class index and a probability array into ``label``,
    ``probabilities`` (class -> probability), ``confidence`` and ``error_code``.

    Defaults read the pipeline's ``prediction``/``probability`` (vector) columns; the
    in-worker path passes its own, so both paths label rows with the same expressions.
    """
    names = F.array(*[F.lit(c) for c in classes])
    probs = probabilities if probabilities is not None else vector_to_array(F.col(PROBABILITY), "float64")
    index = prediction if prediction is not None else F.col(PREDICTION)
    ok = F.col(error_col).isNull()
    return {
        "label": F.when(ok, F.element_at(names, index.cast("int") + 1)),
        "probabilities": F.when(ok, F.map_from_arrays(names, probs)),
        "confidence": F.when(ok, F.array_max(probs)),
        "error_code": error_code(F.col(error_col)),
    }


def label_columns(df: DataFrame, classes: Sequence[str], error_col: str = ERROR) -> DataFrame:
    """Turn ``prediction``/``probability`` into ``label``, ``probabilities``, ``confidence``."""
    return df.withColumns(label_exprs(classes, error_col))


def classify(df: DataFrame, model: LoadedModel, keep_prediction_index: bool = False) -> DataFrame:
    """Featurize, predict and label ``df`` (which must hold the featurizer's input column).

    Built as one projection over the pipeline's output: a micro-batch pays a plan analysis
    per DataFrame step, so fewer steps is lower latency.
    """
    scored = model.pipeline.transform(df)
    new = label_exprs(model.classes, featurizer_of(model).getErrorCol())
    new["model_version"] = F.lit(model.version)
    drop = {c for c in _INTERNAL if not (keep_prediction_index and c in (PREDICTION, PROBABILITY))}
    keep = [F.col(c) for c in scored.columns if c not in drop and c not in new]
    return scored.select(*keep, *[expr.alias(name) for name, expr in new.items()])


# ---------------------------------------------------------------------------------------
# In-worker scoring: read, decode, featurize and classify in one Arrow UDF call
# ---------------------------------------------------------------------------------------
_LOCAL_CACHE_ATTR = "_memestream_local_model"
_SCORE_SCHEMA = "prediction int, probabilities array<double>, error string, image_id string, size_bytes long, payload binary"


def local_model(model: LoadedModel) -> LocalModel | None:
    """The model's stages after the featurizer as numpy arrays, or None when some stage
    (a RandomForest, say) only runs in Spark. Compiled once per loaded model."""
    if hasattr(model, _LOCAL_CACHE_ATTR):
        return getattr(model, _LOCAL_CACHE_ATTR)
    feat = featurizer_of(model)
    try:
        local: LocalModel | None = compile_stages(model.pipeline.stages[1:], feat.getOutputCol(), len(model.classes))
    except NotCompilable as exc:
        log.info("model %s/%s is scored by Spark ML in the JVM: %s", model.version, model.name, exc)
        local = None
    setattr(model, _LOCAL_CACHE_ATTR, local)
    return local


def _score_arrow(feature_set: str, read_max: int, max_bytes: int, max_pixels: int, local: LocalModel, from_path: bool):
    """Build the UDF body (module-level so cloudpickle ships arrays and a function reference)."""

    def run(inputs: pa.Array) -> pa.Array:
        from memestream.features import featurize_batch, get_feature_set
        from memestream.load import local_path, read_capped

        fs = get_feature_set(feature_set)
        values = inputs.to_pylist()
        if from_path:
            read = [read_capped(local_path(v), read_max) if v is not None else (None, "read_error: no path") for v in values]
            payloads = [d for d, _ in read]
            read_errors = [e for _, e in read]
        else:
            payloads, read_errors = values, [None] * len(values)
        matrix, feat_errors = featurize_batch(payloads, fs, max_bytes, max_pixels)
        probs, index = local.predict(matrix)
        errors = [r or f for r, f in zip(read_errors, feat_errors)]
        k = probs.shape[1]
        offsets = pa.array(np.arange(0, (len(values) + 1) * k, k, dtype=np.int32))
        return pa.StructArray.from_arrays(
            [
                pa.array(index, type=pa.int32()),
                pa.ListArray.from_arrays(offsets, pa.array(probs.reshape(-1), type=pa.float64())),
                pa.array(errors, type=pa.string()),
                pa.array([hashlib.sha256(d).hexdigest() if d is not None else None for d in payloads], type=pa.string()),
                pa.array([len(d) if d is not None else None for d in payloads], type=pa.int64()),
                pa.array([d if e is not None else None for d, e in zip(payloads, errors)], type=pa.binary()),
            ],
            names=["prediction", "probabilities", "error", "image_id", "size_bytes", "payload"],
        )

    return run


SCORED = "__memestream_scored"


def local_columns(
    model: LoadedModel, local: LocalModel, input_col: str, from_path: bool, max_bytes: int = DEFAULT_MAX_BYTES
) -> tuple[Column, dict[str, Column]]:
    """``(UDF call, {output name: expression over its result})`` for :func:`classify_local`.

    Built once per model and input kind and cached on the model: building a Column costs
    a Py4J round trip each (about 700 per projection, ~0.13 s), and a UDF object keeps its
    pickled body and JVM counterpart. Unresolved Columns are reusable across DataFrames.
    """
    cache = model.__dict__.setdefault("_memestream_local_columns", {})
    key = (id(local), input_col, from_path, max_bytes)
    if key not in cache:
        feat = featurizer_of(model)
        udf = F.arrow_udf(
            _score_arrow(feat.getFeatureSet(), max_bytes, feat.getMaxBytes(), feat.getMaxPixels(), local, from_path),
            _SCORE_SCHEMA,
        ).asNondeterministic()  # never duplicated into each field read below (one decode per image)
        new = label_exprs(model.classes, f"{SCORED}.error", F.col(f"{SCORED}.prediction"), F.col(f"{SCORED}.probabilities"))
        new["error"] = F.col(f"{SCORED}.error")
        new["model_version"] = F.lit(model.version)
        for name in ("image_id", "size_bytes", "payload"):
            new[name] = F.col(f"{SCORED}.{name}")
        cache[key] = (udf(F.col(input_col)), {name: expr.alias(name) for name, expr in new.items()})
    return cache[key]


def classify_local(
    df: DataFrame, model: LoadedModel, local: LocalModel, input_col: str, from_path: bool, max_bytes: int = DEFAULT_MAX_BYTES
) -> DataFrame:
    """Label ``df`` in one pass through a Python worker: ``input_col`` holds file paths
    (``from_path``) or image bytes. Adds ``label``, ``probabilities``, ``confidence``,
    ``error``, ``error_code``, ``model_version``, ``image_id``, ``size_bytes``, ``payload``
    (the bytes of inputs that failed, for the quarantine table).

    The image bytes never travel back to the JVM, and the vectors never leave Python.
    """
    call, new = local_columns(model, local, input_col, from_path, max_bytes)
    keep = [F.col(c) for c in df.columns if c not in new]
    return df.withColumn(SCORED, call).select(*keep, *new.values())
